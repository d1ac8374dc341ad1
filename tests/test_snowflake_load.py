"""Loads through the real target-snowflake (0.19.2, pinned) into a local Snowflake emulator.

The tap runs twice against the fake APIs (the second run after the running jobs finished and new ones arrived);
its output goes through `target-snowflake` from .venv-target-snowflake, as Meltano would run it, into fakesnow's
server (tests/snowflake_emulator.py, in the same virtualenv). The emulator runs the target's DDL, type mapping,
batches and MERGE as fakesnow does; five statements on the user stage `@~` are adapted in the emulator process (see
its docstring). So this checks the target's tables, column types, row counts, merge keys and load methods against
what the tap emitted, not Snowflake's acceptance of those five statements' exact SQL.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CONTRACT_KEYS, ROOT, TapRun, run_tap
from tests.fakeapi import FakeAPIs

pytestmark = pytest.mark.slow
LOADER = ROOT / ".venv-target-snowflake" / "bin"
EMULATOR = Path(__file__).parent / "snowflake_emulator.py"
DATABASE = "JOBRESULTS"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """The emulator's port; it stops when its stdin closes. Its log: emulator.log in a temp dir of its own."""
    python = LOADER / "python"
    if not (LOADER / "target-snowflake").exists():
        pytest.fail("run `make test`: it installs target-snowflake and the emulator into .venv-target-snowflake")
    check = subprocess.run([str(python), "-c", "import fakesnow"], capture_output=True, text=True)
    if check.returncode:
        pytest.fail("fakesnow is missing from .venv-target-snowflake (built before the emulator): run `make test`")
    workdir = tmp_path_factory.mktemp("snowflake")
    port_file = workdir / "port"
    log = (workdir / "emulator.log").open("w")
    proc = subprocess.Popen(
        [str(python), str(EMULATOR), "serve", "--port-file", str(port_file)],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not port_file.exists():
            time.sleep(0.2)
        assert port_file.exists(), f"the emulator did not start (exit {proc.poll()}); see {workdir / 'emulator.log'}"
        yield int(port_file.read_text())
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def runs() -> tuple[TapRun, TapRun]:
    """Two consecutive tap runs: the first with running jobs, the second after they finished and new ones came."""
    with FakeAPIs() as apis:
        from tests.conftest import populate

        populate(apis)
        first = run_tap(apis.config(), check=True)
        apis.cognite.finish_all()
        apis.clavata.finish_all()
        apis.talonic.finish_all()
        apis.cognite.add_predict_job(items=2, matches_per_item=3)
        apis.clavata.add_job(results=2)
        apis.talonic.add_job(rows=2)
        second = run_tap(apis.config(), first.state, check=True)
    return first, second


def _load(port: int, stdin: str, schema: str, load_method: str, tmp_path: Path, **settings) -> None:
    workdir = tmp_path / f"target-{schema}-{load_method}-{time.monotonic_ns()}"
    workdir.mkdir()
    config = workdir / "config.json"
    config.write_text(
        json.dumps(
            {
                # The target has no host/port setting: the account carries them into snowflake-sqlalchemy's URL
                # (with SNOWFLAKE_SQLALCHEMY_LEGACY_URL_PARAMS=1), and PUBLIC is the session's schema, as
                # Snowflake gives a session that names only a database.
                "account": f"127.0.0.1:{port}/{DATABASE}/PUBLIC?account=fakesnow&protocol=http&x=",
                "user": "loader",
                "password": "unused-by-the-emulator",
                "database": DATABASE,
                "default_target_schema": schema,
                "load_method": load_method,
                "validate_records": False,
                **settings,
            }
        )
    )
    env = {**os.environ, "SNOWFLAKE_SQLALCHEMY_LEGACY_URL_PARAMS": "1"}
    # The target writes its batch files into the working directory (batch_config root "file://").
    loaded = subprocess.run(
        [str(LOADER / "target-snowflake"), "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=240,
    )
    assert loaded.returncode == 0, loaded.stderr[-4000:]


def _query(port: int, *statements: str) -> list[dict]:
    done = subprocess.run(
        [str(LOADER / "python"), str(EMULATOR), "query", "--port", str(port), "--database", DATABASE],
        input=json.dumps(statements),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _snowflake_type(prop: dict) -> str:
    """The column type target-snowflake should create for a property, as information_schema names it."""
    types = set(prop["type"]) - {"null"} if isinstance(prop["type"], list) else {prop["type"]}
    if types & {"object", "array"}:
        return "VARIANT"
    if prop.get("format") == "date-time":
        return "TIMESTAMP_NTZ"
    if types == {"integer"}:
        return "NUMBER"
    if types == {"number"}:
        return "FLOAT"
    if types == {"boolean"}:
        return "BOOLEAN"
    assert types == {"string"}, prop
    return "TEXT"


def _same(loaded, sent, prop: dict) -> bool:
    """A loaded cell (as the connector returns it, through JSON) equals the value the tap sent."""
    kind = _snowflake_type(prop)
    if sent is None:
        return loaded is None or (kind == "VARIANT" and loaded == "null")
    if loaded is None:
        return False
    if kind == "VARIANT":
        return json.loads(loaded) == sent
    if kind == "TIMESTAMP_NTZ":
        sent_at = datetime.datetime.fromisoformat(sent.replace("Z", "+00:00"))
        if sent_at.tzinfo:
            sent_at = sent_at.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return datetime.datetime.fromisoformat(loaded) == sent_at
    if kind == "NUMBER":
        return int(loaded) == sent
    if kind == "FLOAT":
        return math.isclose(float(loaded), float(sent), rel_tol=1e-12)
    return loaded == sent


def _latest(*tap_runs: TapRun) -> dict[str, dict[tuple, dict]]:
    """The last record per primary key of each stream, over the runs in order: what an upsert leaves."""
    latest: dict[str, dict[tuple, dict]] = {stream: {} for stream in CONTRACT_KEYS}
    for run in tap_runs:
        for message in run.messages:
            if message["type"] == "RECORD":
                record = message["record"]
                latest[message["stream"]][tuple(record[k] for k in CONTRACT_KEYS[message["stream"]])] = record
    return latest


def _check_tables(port: int, schema: str, tap_runs: tuple[TapRun, ...], expected: dict[str, dict[tuple, dict]]):
    """11 tables, the expected column types and NOT NULL keys, and exactly the expected rows, cell by cell."""
    schemas = {s: m["schema"]["properties"] for s, m in tap_runs[0].schemas().items()}
    assert set(schemas) == set(CONTRACT_KEYS)
    tables, columns = _query(
        port,
        f"select table_name from information_schema.tables where table_schema = '{schema}' order by 1",
        "select table_name, column_name, data_type, is_nullable from information_schema.columns "
        f"where table_schema = '{schema}'",
    )
    assert [r[0] for r in tables["rows"]] == sorted(s.upper() for s in CONTRACT_KEYS)
    found = {(t, c): (d, n) for t, c, d, n in columns["rows"]}
    for stream, properties in schemas.items():
        for name, prop in properties.items():
            data_type, nullable = found[(stream.upper(), name.upper())]
            assert data_type == _snowflake_type(prop), (stream, name, data_type, prop)
            assert (nullable == "NO") == (name in CONTRACT_KEYS[stream]), (stream, name, nullable)

    results = _query(port, *(_select(schema, stream, schemas[stream]) for stream in CONTRACT_KEYS))
    for stream, result in zip(CONTRACT_KEYS, results, strict=True):
        rows = [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]
        keys = CONTRACT_KEYS[stream]
        by_key = {}
        for row in rows:
            key = tuple(_key_value(row[k.upper()], schemas[stream][k]) for k in keys)
            assert key not in by_key, f"{stream}: two rows for {key}"
            by_key[key] = row
        assert set(by_key) == set(expected[stream]), stream
        for key, record in expected[stream].items():
            for name, prop in schemas[stream].items():
                loaded = by_key[key][name.upper()]
                assert _same(loaded, record.get(name), prop), (stream, key, name, loaded, record.get(name))


def _select(schema: str, stream: str, properties: dict) -> str:
    """Every column of the tap's schema; timestamps as text, since fakesnow's server sends a NULL TIMESTAMP_NTZ
    to the connector as 1970-01-01 (the stored value is NULL: `completed is null` holds)."""
    columns = ", ".join(
        f'cast("{name.upper()}" as varchar) as "{name.upper()}"'
        if _snowflake_type(prop) == "TIMESTAMP_NTZ"
        else f'"{name.upper()}"'
        for name, prop in properties.items()
    )
    return f'select {columns} from {schema}."{stream.upper()}"'


def _key_value(loaded, prop: dict):
    return int(loaded) if _snowflake_type(prop) == "NUMBER" else loaded


def _counts(port: int, schema: str) -> dict[str, int]:
    results = _query(port, *(f'select count(*) from {schema}."{stream.upper()}"' for stream in CONTRACT_KEYS))
    return {stream: result["rows"][0][0] for stream, result in zip(CONTRACT_KEYS, results, strict=True)}


def _records(*tap_runs: TapRun) -> dict[str, int]:
    return {s: sum(len(run.records(s)) for run in tap_runs) for s in CONTRACT_KEYS}


def test_upsert_loads_every_stream_with_its_types_and_merges_by_key(emulator, runs, tmp_path):
    first, second = runs
    schema = "UPSERT_LOAD"
    _load(emulator, first.stdout, schema, "upsert", tmp_path)
    _check_tables(emulator, schema, (first,), _latest(first))
    assert _counts(emulator, schema) == _records(first)  # the tap emitted each key once

    # Rerun: the first run's output again, then the second run's, in batches of 10 rows (two PUT + MERGE for the
    # larger streams; a key can come twice in one batch). Nothing is duplicated, the finished jobs replace their
    # rows.
    _load(emulator, first.stdout + second.stdout, schema, "upsert", tmp_path, batch_size_rows=10)
    expected = _latest(first, second)
    _check_tables(emulator, schema, (first, second), expected)
    counts = _counts(emulator, schema)
    assert counts == {s: len(expected[s]) for s in CONTRACT_KEYS}
    assert counts["sync_runs"] == 8 and counts["extraction_jobs"] == 5, counts
    unfinished = _query(emulator, f"select count(*) from {schema}.EXTRACTION_JOBS where not finished")[0]["rows"]
    assert unfinished == [[0]]


def test_append_only_keeps_every_version_and_overwrite_replaces_them(emulator, runs, tmp_path):
    first, second = runs
    schema = "APPEND_LOAD"
    _load(emulator, first.stdout + second.stdout, schema, "append-only", tmp_path)
    assert _counts(emulator, schema) == _records(first, second)

    _load(emulator, second.stdout, schema, "overwrite", tmp_path)
    _check_tables(emulator, schema, (second,), _latest(second))
    assert _counts(emulator, schema) == _records(second)
