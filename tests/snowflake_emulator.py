"""A local Snowflake for the target-snowflake load test: fakesnow's server, with a small adapter.

Run with the Python of the target's virtualenv (.venv-target-snowflake, where fakesnow is pinned):

    .venv-target-snowflake/bin/python tests/snowflake_emulator.py serve [--port N] [--port-file FILE]
    .venv-target-snowflake/bin/python tests/snowflake_emulator.py query --port N --database DB < statements.json

It prints `port <n>` once the server listens (and writes the port to --port-file) and serves until its stdin closes
(or SIGTERM/SIGINT). It logs warnings and errors only (uvicorn's access log is off).

fakesnow 0.12.1 (https://github.com/tekumara/fakesnow) speaks Snowflake's wire protocol on top of DuckDB. It takes
meltanolabs-target-snowflake 0.19.2's connection, schema, tables and file formats as they are, but not the target's
statements that work on the user stage `@~` or on files in a stage. The adapter below rewrites those five, and only
those, before fakesnow sees them, and lets Snowflake's unenforced PRIMARY KEY stay unenforced:

- `CREATE TABLE ... PRIMARY KEY (...)`: the key clause is dropped. Snowflake records it but enforces only NOT NULL
  (kept); DuckDB would reject a second row with the same key, which `append-only` loads on purpose.
- `PUT 'file://...' '@~/<path>'`: `@~` becomes a named internal stage (`<database>._USER_STAGE.TILDE`), which
  fakesnow supports: the connector uploads the file to the emulator over HTTP, as it would to Snowflake.
- `REMOVE '@~/<path>/'`: deletes the staged files under that path.
- `DROP FILE FORMAT [IF EXISTS] <name>`: deletes the format from fakesnow's catalogue of file formats.
- `MERGE INTO t USING (SELECT $1:key::TYPE AS col ... FROM '@~/<path>'(file_format => <name>) QUALIFY ...)`: the
  staged JSON lines are read into a scratch table with one VARIANT column; the target's own source SELECT runs over
  it (`$1` is that column, `SEQ8()` the row's position in the files) into a second scratch table, since fakesnow's
  MERGE takes a table, not such a subquery, as its source; then the target's own MERGE (keys, update, insert)
  runs from it.
- `COPY INTO t (cols) FROM (SELECT $1:key::TYPE AS col ... FROM '@~/<path>') FILE_FORMAT = (FORMAT_NAME='<name>')`:
  the same scratch table, and an INSERT of the same SELECT; the result has COPY's columns (file, status,
  rows_parsed, rows_loaded, ...), one row per staged file.

The named file format must exist (created by the target) and be of type JSON, or the statement fails as it would in
Snowflake. A DuckDB error is returned as a SQL error (fakesnow's server would answer HTTP 500, which the connector
retries for minutes). So the test checks the target's DDL, type mapping, batching, staging round trip and merge
keys; it does not check that Snowflake accepts the exact SQL of these statements (fakesnow parses and runs the
rest). `query` reads results through the Snowflake connector, for the test's checks.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import duckdb
import fakesnow.server
import uvicorn
from fakesnow.cursor import FakeSnowflakeCursor
from fakesnow.expr import normalise_ident
from fakesnow.transforms import stage
from fakesnow.transforms.file_format import lookup_file_format

USER_STAGE_SCHEMA = "_USER_STAGE"
USER_STAGE = "TILDE"

_execute = FakeSnowflakeCursor.execute
_ready: set[str] = set()
_lock = threading.Lock()
# fakesnow runs a MERGE through a helper table of one fixed name (MERGE_CANDIDATES) in a catalog all sessions
# share: two at once (target-snowflake drains its sinks in parallel) collide with "Duplicate key". Snowflake has
# no such limit, so the emulator runs one MERGE at a time.
_merge_lock = threading.Lock()
ANY_MERGE = re.compile(r"^\s*merge\s", re.I)

CREATE_TABLE = re.compile(r"^\s*create\s+(?:or\s+replace\s+)?(?:temporary\s+)?table\s", re.I)
PRIMARY_KEY = re.compile(r",\s*primary\s+key\s*\([^)]*\)", re.I)
PUT = re.compile(r"^\s*put\s+(?P<src>'[^']*')\s+'@~/(?P<path>[^']*)'(?P<rest>.*)$", re.I | re.S)
REMOVE = re.compile(r"^\s*remove\s+'@~/(?P<path>[^']*)'\s*;?\s*$", re.I | re.S)
DROP_FORMAT = re.compile(r"^\s*drop\s+file\s+format\s+(?:if\s+exists\s+)?(?P<name>.+?)\s*;?\s*$", re.I | re.S)
# A staged-file reference in a SELECT: '@~/<path>' and an optional (file_format => <name>).
STAGED = re.compile(r"'@~/(?P<path>[^']*)'\s*(?:\(\s*file_format\s*=>\s*(?P<format>[^)]+?)\s*\))?", re.I)
COPY = re.compile(
    r"^\s*copy\s+into\s+(?P<table>.+?)\s*(?P<columns>\([^()]*\))\s*from\s*\((?P<select>select\s.+)\)\s*"
    r"file_format\s*=\s*\(\s*format_name\s*=\s*'(?P<format>[^']+)'\s*\)\s*;?\s*$",
    re.I | re.S,
)
MERGE = re.compile(
    r"^(?P<head>\s*merge\s+into\s+.+?\s+using\s+)\((?P<select>select\s.+)\)\s+(?P<alias>\w+)\s+(?P<tail>on\s.+)$",
    re.I | re.S,
)


def _user_stage(cursor: FakeSnowflakeCursor) -> str:
    """The named stage standing in for the user stage `@~` of the session's database (created on first use)."""
    database = cursor._conn.database
    if not database:
        raise _error(cursor, "the emulated user stage needs a current database")
    name = f"{database}.{USER_STAGE_SCHEMA}.{USER_STAGE}"
    with _lock:
        if name not in _ready:
            # A connection of its own, so that CREATE SCHEMA does not change the session's current schema.
            setup = fakesnow.server.shared_fs.connect(database, USER_STAGE_SCHEMA)
            setup.cursor().execute(f"create stage if not exists {name}")
            _ready.add(name)
    return name


def _error(cursor: FakeSnowflakeCursor, message: str) -> Exception:
    import snowflake.connector.errors

    return snowflake.connector.errors.ProgrammingError(msg=f"emulator adapter: {message}", errno=1003, sqlstate="42000")


def _stage_files(cursor: FakeSnowflakeCursor, path: str) -> list[str]:
    directory = Path(stage.internal_dir(_user_stage(cursor), path))
    return sorted(str(p) for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else []


def _json_format(cursor: FakeSnowflakeCursor, name: str) -> None:
    """The file format must exist and be JSON (the only type the adapter reads)."""
    options = lookup_file_format(cursor._duck_conn, name, cursor._conn.database, cursor._conn.schema)
    kind = str(options.get("TYPE", "CSV")).upper()
    if kind != "JSON":
        raise _error(cursor, f"file format {name} is {kind}; the adapter reads JSON only")


def _load_staged(cursor: FakeSnowflakeCursor, path: str) -> tuple[str, list[str]]:
    """The staged JSON lines under `path` in a scratch table (seq, file, v VARIANT); its name and the files."""
    files = _stage_files(cursor, path)
    if not files:
        raise _error(cursor, f"no files staged at @~/{path}")
    table = f'{cursor._conn.database}.{USER_STAGE_SCHEMA}."_staged_{uuid.uuid4().hex}"'
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    cursor._duck_conn.execute(
        f"create table {table} as select row_number() over () as seq, filename as file, json as v "
        f"from read_json_objects([{listed}], filename = true)"
    )
    return table, files


def _from_staged(cursor: FakeSnowflakeCursor, select: str) -> tuple[str, str, list[str]]:
    """A SELECT over '@~/...' rewritten to read the scratch table: ($1 -> v, SEQ8() -> seq)."""
    found = list(STAGED.finditer(select))
    if len(found) != 1:
        raise _error(cursor, f"expected one staged-file reference, found {len(found)}")
    match = found[0]
    if match["format"]:
        _json_format(cursor, match["format"])
    table, files = _load_staged(cursor, match["path"])
    rewritten = select[: match.start()] + table + " " + select[match.end() :]
    rewritten = re.sub(r"\$1:", "v:", rewritten)
    rewritten = re.sub(r"\bseq8\(\)", "seq", rewritten, flags=re.I)
    if "$1" in rewritten:
        raise _error(cursor, "a $1 reference the adapter does not rewrite")
    return rewritten, table, files


def _quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def execute(self: FakeSnowflakeCursor, command: str, params=None, *args, **kwargs):
    try:
        if isinstance(command, str) and ANY_MERGE.match(command):
            with _merge_lock:
                return _adapted(self, command, params, *args, **kwargs)
        return _adapted(self, command, params, *args, **kwargs)
    except duckdb.Error as e:
        # A DuckDB error surfaces as HTTP 500, which the connector retries for minutes: report it as a SQL error.
        import snowflake.connector.errors

        raise snowflake.connector.errors.ProgrammingError(msg=f"{type(e).__name__}: {e}", errno=100000) from e


def _adapted(self: FakeSnowflakeCursor, command: str, params=None, *args, **kwargs):
    if not isinstance(command, str):
        return _execute(self, command, params, *args, **kwargs)

    if CREATE_TABLE.match(command):
        # Snowflake records PRIMARY KEY but does not enforce it (only NOT NULL is enforced); DuckDB would.
        command = PRIMARY_KEY.sub("", command)
        return _execute(self, command, params, *args, **kwargs)

    if match := PUT.match(command):
        command = f"put {match['src']} @{_user_stage(self)}/{match['path']}{match['rest']}"
        return _execute(self, command, params, *args, **kwargs)

    if match := REMOVE.match(command):
        files = _stage_files(self, match["path"])
        directory = stage.internal_dir(_user_stage(self), match["path"])
        shutil.rmtree(directory, ignore_errors=True)
        rows = " union all ".join(f"select {_quote(os.path.basename(f))} as name, 'removed' as result" for f in files)
        return _execute(self, rows or "select 'none' as name, 'removed' as result where 1 = 0", None, *args, **kwargs)

    if match := DROP_FORMAT.match(command):
        parts = [normalise_ident(p) for p in re.findall(r'"[^"]*"|[^.]+', match["name"])]
        database, schema = self._conn.database, self._conn.schema
        if len(parts) == 3:
            database, schema, name = parts
        elif len(parts) == 2:
            schema, name = parts
        else:
            name = parts[0]
        self._duck_conn.execute(
            "delete from _fs_global._fs_information_schema._fs_file_formats "
            "where database_name = ? and schema_name = ? and name = ?",
            [database, schema, name],
        )
        return _execute(self, "select 'Drop statement executed successfully.' as status", None, *args, **kwargs)

    if match := COPY.match(command):
        _json_format(self, match["format"])
        select, table, files = _from_staged(self, match["select"])
        try:
            _execute(self, f"insert into {match['table']} {match['columns']} {select}", params, *args, **kwargs)
            counts = dict(self._duck_conn.execute(f"select file, count(*) from {table} group by file").fetchall())
        finally:
            self._duck_conn.execute(f"drop table if exists {table}")
        result = " union all ".join(
            f"select {_quote(os.path.basename(f))} as file, 'LOADED' as status, {counts.get(f, 0)} as rows_parsed, "
            f"{counts.get(f, 0)} as rows_loaded, 1 as error_limit, 0 as errors_seen, null as first_error, "
            "null as first_error_line, null as first_error_character, null as first_error_column_name"
            for f in files
        )
        return _execute(self, result, None, *args, **kwargs)

    if (match := MERGE.match(command)) and STAGED.search(match["select"]):
        select, table, _ = _from_staged(self, match["select"])
        # fakesnow's MERGE takes a table as its source, not a subquery that reads a VARIANT column: the target's
        # own SELECT (casts, QUALIFY dedup) runs first into a scratch table, then the target's own MERGE from it.
        source = f'{self._conn.database}.{USER_STAGE_SCHEMA}."_source_{uuid.uuid4().hex}"'
        try:
            _execute(self, f"create table {source} as {select}", params, *args, **kwargs)
            return _execute(self, f"{match['head']}{source} {match['alias']} {match['tail']}", None, *args, **kwargs)
        finally:
            self._duck_conn.execute(f"drop table if exists {table}")
            self._duck_conn.execute(f"drop table if exists {source}")

    if "@~" in command:
        raise _error(self, f"a statement on the user stage the adapter does not handle: {command[:200]}")
    return _execute(self, command, params, *args, **kwargs)


def serve(port: int, port_file: Path | None) -> None:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: every thread's stack on stderr
    FakeSnowflakeCursor.execute = execute  # type: ignore[method-assign]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    listener = socket.create_server(("127.0.0.1", port))
    # fakesnow's own Starlette app; warnings only (an access log line per request would be most of the time).
    server = uvicorn.Server(uvicorn.Config(fakesnow.server.app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    if not server.started:
        raise SystemExit("the emulator did not start")
    bound = listener.getsockname()[1]
    if port_file:
        port_file.with_suffix(".tmp").write_text(str(bound))
        port_file.with_suffix(".tmp").replace(port_file)
    print(f"port {bound}", flush=True)
    stop.wait()
    server.should_exit = True
    thread.join(timeout=10)


def query(port: int, database: str) -> None:
    """Runs the SQL statements of a JSON list on stdin through the Snowflake connector; prints their rows as JSON."""
    import snowflake.connector

    statements = json.load(sys.stdin)
    con = snowflake.connector.connect(
        account="fakesnow", user="u", password="p", host="127.0.0.1", port=port, protocol="http", database=database
    )
    results = []
    with con:
        cur = con.cursor()
        for sql in statements:
            cur.execute(sql)
            results.append({"columns": [d[0] for d in cur.description], "rows": cur.fetchall()})
    json.dump(results, sys.stdout, default=str)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="serve until stdin closes")
    serving.add_argument("--port", type=int, default=0, help="default: a free port")
    serving.add_argument("--port-file", type=Path, help="where to write the port once serving")
    querying = commands.add_parser("query", help="run a JSON list of SQL statements read from stdin")
    querying.add_argument("--port", type=int, required=True)
    querying.add_argument("--database", required=True)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.port_file)
    else:
        query(args.port, args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
