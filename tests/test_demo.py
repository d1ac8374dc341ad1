"""The README's demo commands: fake APIs -> tap -> target-duckdb / target-postgres, one line per stream, then
dbt over what landed and the first rows of the review models.

The demo runs with its files in a temporary directory and, for PostgreSQL, into a schema of its own in
the test database, so that `make test` leaves the user's `output/demo.duckdb` and demo schema alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

import pytest

from tests.conftest import CONTRACT_KEYS, ROOT, run_tap
from tests.fakeapi import FakeAPIs
from tests.fakeapi.__main__ import demo

pytestmark = pytest.mark.slow
LOADER_VENVS = {"duckdb": ".venv-target-duckdb", "postgres": ".venv-target-postgres"}
REVIEW_MODELS = {
    "review_low_score_matches",
    "review_ambiguous_matches",
    "review_policy_outcomes",
    "review_flagged_extraction_fields",
    "review_running_jobs",
    "review_failed_jobs",
}
PG_URL = os.environ.get("TAP_JOBRESULTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _snapshot(directory) -> dict[str, tuple[int, int]]:
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


@pytest.fixture
def pg_schema():
    """A schema of its own in the test database, with the PG* variables the demo reads; dropped after."""
    psycopg = pytest.importorskip("psycopg")
    url, name = urlsplit(PG_URL), f"jr_demo_{uuid.uuid4().hex[:10]}"
    env = {
        "PGHOST": url.hostname or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "postgres",
        "PGPASSWORD": url.password or "unused-with-trust-auth",
        "PGDATABASE": url.path.lstrip("/") or "test",
    }
    yield name, env
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'drop schema if exists "{name}" cascade')
        con.execute(f'drop schema if exists "{name}_dbt" cascade')


@pytest.mark.parametrize("loader", sorted(LOADER_VENVS))
def test_demo_lands_every_record_of_all_ten_streams(loader, tmp_path, request):
    bin_dir = ROOT / LOADER_VENVS[loader] / "bin"
    if not (bin_dir / f"target-{loader}").exists():
        pytest.fail(f"run `make test`: it installs target-{loader} into {LOADER_VENVS[loader]}")
    with FakeAPIs() as apis:  # what the tap emits for the demo scenario
        run = run_tap(demo(apis), check=True)
        emitted = {**run.counts(), "sync_runs": len(run.records("sync_runs"))}
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{bin_dir}:{os.environ['PATH']}"}
    argv = [sys.executable, "scripts/demo.py", "--loader", loader, "--output", str(tmp_path)]
    if loader == "postgres":
        schema, pg_env = request.getfixturevalue("pg_schema")
        env.update(pg_env)
        argv += ["--schema", schema]
    users_output = _snapshot(ROOT / "output")
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    landed = {stream: int(n) for stream, n in re.findall(r"^(\w+)\s+(\d+) rows$", proc.stdout, re.M)}
    assert set(landed) == set(CONTRACT_KEYS)
    assert landed == emitted
    assert _snapshot(ROOT / "output") == users_output, "the demo test touched the user's output/"
    if loader == "duckdb":
        assert (tmp_path / "demo.duckdb").exists()
    # It ends with dbt's build over what landed and the first rows of each review model.
    assert re.search(r"^Done\. PASS=\d+ WARN=0 ERROR=0 ", proc.stdout, re.M), proc.stdout[-3000:]
    shown = dict(re.findall(r"^== (review_\w+): (\d+) in all", proc.stdout, re.M))
    assert set(shown) == REVIEW_MODELS, proc.stdout[-3000:]
    # The demo has a failed and a running job of each of the four kinds.
    assert int(shown["review_failed_jobs"]) >= 4 and int(shown["review_running_jobs"]) >= 4
    # It shows, not scrolls: no log lines before or between the results (they are in demo.log, with the
    # warnings listed at the end), ages a reader can read, and rows of same-named schemas told apart.
    output = proc.stdout + proc.stderr
    assert not re.search(r"\| (INFO|DEBUG) +\||\bINFO\b.*METRIC", output), output[:3000]
    assert proc.stdout.splitlines()[0].startswith("tap-jobresults demo:"), proc.stdout[:500]
    assert "Sync complete" in (tmp_path / "demo.log").read_text()
    running = proc.stdout.split("== review_running_jobs", 1)[1].split("\n\n", 1)[0]
    assert "age_seconds" not in running and re.search(r"  \d+ d \d+ h  ", running), running
    flagged = proc.stdout.split("== review_flagged_extraction_fields", 1)[1].split("\n\n", 1)[0]
    header, *rows = flagged.splitlines()[1:]
    assert "schema_id" in header.split()
    keys = [tuple(row.split()[:3]) for row in rows]  # schema_name, schema_id, field
    assert len(keys) == len(set(keys)), f"rows that look the same: {flagged}"


def test_the_demo_logs_only_when_asked(tmp_path):
    """--verbose (make demo V=1) shows the tap's log as it happens; without it the same run shows none."""
    bin_dir = ROOT / LOADER_VENVS["duckdb"] / "bin"
    if not (bin_dir / "target-duckdb").exists():
        pytest.fail("run `make test`: it installs target-duckdb into .venv-target-duckdb")
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{bin_dir}:{os.environ['PATH']}"}
    argv = [sys.executable, "scripts/demo.py", "--output", str(tmp_path), "--verbose"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Sync complete" in proc.stderr and not (tmp_path / "demo.log").exists()
