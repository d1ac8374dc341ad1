"""Every shell block of the README and docs/ runs as written: the docs cannot drift from what works.

The blocks (```bash and ```cron, except those whose fence says `norun="why"`) run in the order of the site
(README, then mkdocs.yml's nav), one after the other in ONE bash session (`set -eo pipefail`), as a newcomer
reading the pages from the top would type them, in a copy of the project in a temporary directory (its own
`.meltano/`, `output/`), with the project's virtualenvs linked in (`.venv`, `.venv-meltano`, `.venv-dbt`,
`.venv-dagster`, `.venv-target-postgres`) and Meltano's `meltano` on PATH (where `pip install meltano` puts it).

- ```bash run="background" blocks (`make fake-api`) start in the background, the next block waits for the
  settings they write (output/fake-api/config.json); a second one replaces the first, as Ctrl-C and a restart
  would. FAKE_API_PORT picks free ports.
- ```cron blocks: each `NAME=value` line is cron's environment, each schedule line's command runs as cron runs it
  (`/bin/sh -c`, an empty environment but those and HOME).

JOBRESULTS_DOCS_PAGES=docs/operations.md,docs/scale.md runs the README and those pages only (while editing them).

What a user fills in for their own setup, the test fills in too, and only that:
- the placeholder key `tlnc_live_...` -> the fake Talonic's key, and Talonic's URL in the environment
  (TAP_JOBRESULTS_TALONIC_BASE_URL), as for a user whose account is that fake;
- `password ...` of target-postgres -> any value (trust auth);
- the user's database: the loader writes into a schema of its own in the test database (TARGET_POSTGRES_*,
  PG*, DBT_SOURCE_SCHEMA in the environment; in the recipes' files and commands `"database": "postgres"`,
  `"default_target_schema": "tap_jobresults"`, `PGDATABASE=postgres`, `DBT_SCHEMA=tap_jobresults_dbt`,
  `"source_schema": "tap_jobresults"`), dropped at the end;
- the shards' system database `postgresql+psycopg://meltano@db.internal:5432/meltano` -> a new database of the
  test server, dropped at the end;
- the cron recipe's directories `/opt/tap-jobresults` (the clone) and `/srv/jobresults` (the run's files) -> the
  project copy and a directory in it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT
from tests.test_docs import Block, _free_port_block, pages, shell_blocks

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.slow
PG_URL = os.environ.get("TAP_JOBRESULTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MELTANO = shutil.which("meltano") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
TIMEOUT = 1200  # alone on a quiet 2-core machine: about 200 s
VENVS = (".venv", ".venv-meltano", ".venv-dbt", ".venv-dagster", ".venv-target-postgres", ".venv-target-duckdb")
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".venv-*", ".meltano", ".env", "output", "plugins", "__pycache__", ".*_cache", ".hypothesis"
)
FAKE_TALONIC_KEY = "tlnc_test_0123456789abcdef"  # tests/fakeapi/talonic.py
FAKE_API_WAIT = """
for _ in $(seq 300); do test -s output/fake-api/config.json && break; sleep 0.1; done
test -s output/fake-api/config.json || { cat output/background.log >&2; echo "the background block wrote no settings" >&2; exit 1; }
"""


def substitutions(copy: Path, schema: str, database: str, system_db: str) -> list[tuple[str, str]]:
    return [
        ("tlnc_live_...", FAKE_TALONIC_KEY),
        ("config set target-postgres password ...", "config set target-postgres password unused-with-trust-auth"),
        ('"database": "postgres"', f'"database": "{database}"'),
        ('"default_target_schema": "tap_jobresults"', f'"default_target_schema": "{schema}"'),
        ("PGDATABASE=postgres", f"PGDATABASE={database}"),
        ("DBT_SCHEMA=tap_jobresults_dbt", f"DBT_SCHEMA={schema}_dbt"),
        ('"source_schema": "tap_jobresults"', f'"source_schema": "{schema}"'),
        ("postgresql+psycopg://meltano@db.internal:5432/meltano", system_db),
        ("/opt/tap-jobresults", str(copy)),
        ("/srv/jobresults", str(copy / "output" / "srv")),
    ]


def fill_in(code: str, subs: list[tuple[str, str]]) -> str:
    for old, new in subs:
        code = code.replace(old, new)
    return code


def cron_commands(code: str) -> str:
    """A crontab as bash: its variables, then each schedule line's command under cron's conditions."""
    env, lines = ['HOME="$HOME"'], []
    for line in code.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assignment = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if assignment:
            env.append(f"{assignment[1]}={shlex.quote(assignment[2])}")
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a crontab line: {line}"
        lines.append(f"env -i {' '.join(env)} /bin/sh -c {shlex.quote(fields[5])}")
    return "\n".join(lines)


def script(all_blocks: list[Block], subs: list[tuple[str, str]]) -> str:
    parts = [
        "set -eo pipefail",
        "set -m  # background blocks in process groups of their own, stopped as a whole",
        'stop_background() { if [ -n "${BG_PID:-}" ]; then kill -- -"$BG_PID" 2>/dev/null || true; '
        'for _ in $(seq 50); do kill -0 -- -"$BG_PID" 2>/dev/null || break; sleep 0.1; done; '
        'kill -KILL -- -"$BG_PID" 2>/dev/null || true; wait "$BG_PID" 2>/dev/null || true; BG_PID=; fi; }',
        "trap stop_background EXIT",
        "mkdir -p output",
    ]
    for block in all_blocks:
        if "norun" in block.attrs:
            continue
        code = fill_in(block.code, subs)
        parts.append(f'echo {shlex.quote("::: " + block.where)} "($SECONDS s)" >&2')
        if block.attrs.get("run") == "background":
            parts += [
                "stop_background; rm -f output/fake-api/config.json",
                f"( {code.strip()}\n) > output/background.log 2>&1 &",
                "BG_PID=$!",
                FAKE_API_WAIT,
            ]
        elif block.language == "cron":
            parts.append(cron_commands(code))
        else:
            parts.append(code)
    parts.append("echo '::: done' \"($SECONDS s)\" >&2")
    return "\n".join(parts) + "\n"


def _stop_session(sid: int) -> list[str]:
    """Kill every process of session `sid` (background blocks run in process groups of their own, in
    the same session); their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # field 6 of stat: the session
                pid = int(stat.parent.name)
                found[pid] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return [f"{pid} {cmd[:200]}" for pid, cmd in found.items()]


@pytest.fixture
def database():
    """A schema of the test database for the loader, a database for the shards' Meltano system tables."""
    tag = uuid.uuid4().hex[:10]
    schema, system = f"jr_docs_{tag}", f"jr_docs_meltano_{tag}"
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'create database "{system}"')
    pg = urlsplit(PG_URL)
    auth = pg.username or "postgres"
    if pg.password:
        auth += f":{pg.password}"
    system_url = f"postgresql+psycopg://{auth}@{pg.hostname or '127.0.0.1'}:{pg.port or 5432}/{system}"
    yield schema, system_url
    with psycopg.connect(PG_URL, autocommit=True) as con:
        for name in (schema, f"{schema}_dbt"):
            con.execute(f'drop schema if exists "{name}" cascade')
        con.execute(f'drop database if exists "{system}" with (force)')


def test_every_shell_block_of_the_docs_runs_as_written(tmp_path, database):
    for venv in VENVS:
        if not (ROOT / venv).exists():
            pytest.fail(f"{venv} is missing: `make test` installs it (the docs' recipes use it)")
    if not Path(MELTANO).exists():
        pytest.fail(f"meltano not found at {MELTANO}: `make test` installs it into .venv-meltano")
    schema, system_db = database
    pg = urlsplit(PG_URL)
    test_db = pg.path.lstrip("/") or "test"
    copy = tmp_path / "tap-jobresults"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
    for venv in VENVS:
        (copy / venv).symlink_to(ROOT / venv)
    port = _free_port_block()
    chosen = os.environ.get("JOBRESULTS_DOCS_PAGES")
    run_pages = [p for p in pages() if not chosen or p.name == "README.md" or str(p.relative_to(ROOT)) in chosen]
    all_blocks = [block for page in run_pages for block in shell_blocks(page)]
    text = script(all_blocks, substitutions(copy, schema, test_db, system_db))
    assert "..." not in "\n".join(line.split("#")[0] for line in text.splitlines()), (
        "a placeholder this test does not know how to fill in"
    )
    (tmp_path / "docs.sh").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_JOBRESULTS_", "TARGET_", "MELTANO_", "PG"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            "PATH": f"{Path(MELTANO).parent}:{env['PATH']}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "FAKE_API_PORT": str(port),
            "TMPDIR": str(tmp_path),
            # The user's account and database, as their environment would name them.
            "TAP_JOBRESULTS_TALONIC_BASE_URL": f"http://127.0.0.1:{port + 3}",
            "TARGET_POSTGRES_HOST": pg.hostname or "127.0.0.1",
            "TARGET_POSTGRES_PORT": str(pg.port or 5432),
            "TARGET_POSTGRES_USER": pg.username or "postgres",
            "TARGET_POSTGRES_DATABASE": test_db,
            "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
            "PGHOST": pg.hostname or "127.0.0.1",
            "PGPORT": str(pg.port or 5432),
            "PGUSER": pg.username or "postgres",
            "PGDATABASE": test_db,
            "DBT_SOURCE_SCHEMA": schema,
        }
    )
    if pg.password:
        env["TARGET_POSTGRES_PASSWORD"] = env["PGPASSWORD"] = pg.password
    # In a session of its own, its output in files: the test waits for bash itself, not for the end of its
    # output, which a process a recipe left behind could hold open. Whatever is still running in that session
    # when bash has exited (or was stopped at the timeout) is named in the output and killed.
    out_path, err_path = tmp_path / "docs.out", tmp_path / "docs.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            ["bash", str(tmp_path / "docs.sh")],
            cwd=copy,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    left = _stop_session(proc.pid)
    if left:
        print("still running when the docs' script ended (killed):", *left, sep="\n  ")
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    ran = re.findall(r"^::: (.+?) \((\d+) s\)$", stderr, re.M)
    where, started = ran[-1] if ran else ("(before the first block)", "0")
    assert proc.returncode == 0 and where == "done", (
        f"the block at {where} (started at {started} s) failed or ran past {TIMEOUT} s (exit {proc.returncode}):\n"
        f"{stderr[-6000:]}\n--- stdout:\n{stdout[-3000:]}"
    )
    print("seconds at the start of each block:", ", ".join(f"{w} {s}" for w, s in ran))
    ran = [w for w, _ in ran]
    runnable = [b.where for b in all_blocks if "norun" not in b.attrs]
    assert ran[:-1] == runnable
    # What the recipes claim: the loader has every stream, dbt built its models.
    with psycopg.connect(PG_URL) as con:
        tables = {
            r[0]
            for r in con.execute("select table_name from information_schema.tables where table_schema = %s", (schema,))
        }
        models = {
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = %s", (f"{schema}_dbt",)
            )
        }
    assert {"extraction_jobs", "extraction_rows", "clavata_jobs", "match_results", "sync_runs"} <= tables
    assert "review_running_jobs" in models
