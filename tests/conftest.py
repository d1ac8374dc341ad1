"""Shared test plumbing: the fake APIs in-process, the real tap binary as a subprocess."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fakeapi import FakeAPIs

ROOT = Path(__file__).resolve().parent.parent

# Property tests are reproducible everywhere: each runs from a fixed seed of its own (its node ID,
# set in pytest_collection_modifyitems below unless the test sets one with @seed), whatever else is
# collected, and first replays the failing examples kept in the repository (tests/hypothesis-examples:
# a failure found anywhere is saved there; commit it with its fix, and it is replayed forever).
# derandomize is not used: it switches the example database off.


class KeptExamples(DirectoryBasedExampleDatabase):
    """An example database in the repository that a run adds to but never prunes: Hypothesis deletes
    an example that no longer fails, which would change the tree a passing run must leave as it was
    (see pytest_sessionfinish below). A failure is still saved, to be committed with its fix."""

    def delete(self, key: bytes, value: bytes) -> None:
        pass

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.save(dest, value)


EXAMPLES = KeptExamples(str(ROOT / "tests" / "hypothesis-examples"))
settings.register_profile("repo", database=EXAMPLES, print_blob=True)
settings.load_profile("repo")
TAP = shutil.which("tap-jobresults", path=str(Path(sys.executable).parent)) or "tap-jobresults"

CONTRACT_KEYS = {
    "entity_matching_jobs": ["job_id"],
    "match_results": ["job_id", "item_index"],
    "pipeline_runs": ["pipeline_id", "run_id"],
    "pipeline_matches": ["pipeline_id", "run_id", "match_index"],
    "suggested_rules": ["pipeline_id", "run_id", "rule_index"],
    "generated_rules": ["pipeline_id", "run_id", "rule_index"],
    "clavata_jobs": ["job_uuid"],
    "clavata_reports": ["job_uuid", "result_index"],
    "extraction_jobs": ["job_id"],
    "extraction_rows": ["id"],
    "sync_runs": ["run_id", "job_stream"],
}
# The data streams (the sync_runs heartbeat differs from run to run by design).
DATA_STREAMS = tuple(s for s in CONTRACT_KEYS if s != "sync_runs")
RESULT_STREAMS = (
    "match_results",
    "pipeline_matches",
    "suggested_rules",
    "generated_rules",
    "clavata_reports",
    "extraction_rows",
)

# Meltano's directory for the tests that run Meltano in this project (its plugins' virtualenvs, run files):
# outside the project, so that the tests write nothing into the user's .meltano/ (MELTANO_SYS_DIR_ROOT).
# Kept between sessions so that plugins are installed once; JOBRESULTS_TEST_CACHE moves it.
TEST_CACHE = Path(os.environ.get("JOBRESULTS_TEST_CACHE") or Path.home() / ".cache" / "tap-jobresults-tests")
MELTANO_SYS_DIR = TEST_CACHE / f"meltano-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"
os.environ["MELTANO_SYS_DIR_ROOT"] = str(MELTANO_SYS_DIR)
# The PostgreSQL of the loader tests (docs/development.md).
PG_URL = os.environ.get("TAP_JOBRESULTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@dataclasses.dataclass
class TapRun:
    returncode: int
    messages: list[dict]
    stdout: str
    stderr: str

    def records(self, stream: str) -> list[dict]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream]

    def counts(self) -> dict[str, int]:
        """Records per data stream (the sync_runs heartbeat, one per job stream per run, aside)."""
        return dict(
            collections.Counter(
                m["stream"] for m in self.messages if m["type"] == "RECORD" and m["stream"] != "sync_runs"
            )
        )

    def schemas(self) -> dict[str, dict]:
        return {m["stream"]: m for m in self.messages if m["type"] == "SCHEMA"}

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def state(self) -> dict | None:
        return self.states[-1] if self.states else None

    def keys(self, stream: str) -> list[tuple]:
        return [tuple(r[k] for k in CONTRACT_KEYS[stream]) for r in self.records(stream)]


JOB_COLLECTIONS = ("pending", "seen", "finished")


def unordered_state(state: t.Any) -> t.Any:
    """A state with its job collections (format 3: lists of [job_id, value] pairs, in the order the jobs
    were written, which is fetch-completion order) sorted, so two runs over the same data compare equal
    whatever finished first. Duplicates are kept, so a job written twice still shows."""
    if isinstance(state, dict):
        return {
            key: sorted(value, key=json.dumps)
            if key in JOB_COLLECTIONS and isinstance(value, list)
            else unordered_state(value)
            for key, value in state.items()
        }
    if isinstance(state, list):
        return [unordered_state(item) for item in state]
    return state


def parse_messages(stdout: str) -> list[dict]:
    """Every stdout line must be a Singer message; a torn last line (after SIGKILL) is dropped."""
    messages = []
    lines = stdout.split("\n")
    for number, line in enumerate(lines):
        if not line:
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break  # the process died mid-write
            raise AssertionError(f"stdout line {number} is not JSON: {line[:200]!r}") from None
        assert message.get("type") in {"SCHEMA", "RECORD", "STATE", "ACTIVATE_VERSION", "BATCH"}, line[:200]
        messages.append(message)
    return messages


def run_tap(
    config: dict,
    state: dict | None = None,
    catalog: dict | None = None,
    *,
    args: t.Sequence[str] = (),
    timeout: float = 300,
    check: bool = False,
    env: dict[str, str] | None = None,
    max_output: int | None = None,
) -> TapRun:
    """The tap binary on these inputs. `max_output`: stop it, failing the test, as soon as its stdout
    passes this many bytes (a runaway output fails in seconds, not at the timeout)."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [TAP, "--config", _write(tmp, "config.json", config), *args]
        if state is not None:
            argv += ["--state", _write(tmp, "state.json", state)]
        if catalog is not None:
            argv += ["--catalog", _write(tmp, "catalog.json", catalog)]
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env={**tap_env(), **(env or {})}
            )
            deadline = time.monotonic() + timeout
            try:
                if max_output is None:
                    proc.wait(timeout=timeout)
                while proc.poll() is None:
                    if out_path.stat().st_size > t.cast(int, max_output):
                        raise AssertionError(f"the tap wrote more than {max_output} bytes to stdout")
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(argv, timeout)
                    time.sleep(0.05)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        stdout = out_path.read_bytes().decode()  # strict: the tap writes UTF-8 or the test fails
        stderr = err_path.read_bytes().decode()
    run = TapRun(
        proc.returncode,
        parse_messages(stdout) if "--about" not in args and "--discover" not in args else [],
        stdout,
        stderr,
    )
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def tap_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_JOBRESULTS_")}
    env["PYTHONUNBUFFERED"] = "0"
    return env


def _write(tmp: str, name: str, data: dict) -> str:
    path = Path(tmp) / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def apis(request: pytest.FixtureRequest) -> t.Iterator[FakeAPIs]:
    """The fake APIs; a module runs its tests in both modes with `pytestmark = BOTH_MODES`."""
    with FakeAPIs(realistic=getattr(request, "param", False)) as fake:
        yield fake


# Run a module's tests against the tidy fake (the APIs as documented) and the realistic one (as the vendors behave).
BOTH_MODES = pytest.mark.parametrize("apis", [False, True], ids=["tidy", "realistic"], indirect=True)


def populate(apis: FakeAPIs, *, unfinished: bool = True) -> dict:
    """A small world with every stream represented; returns what was created."""
    cdf, clav, tal = apis.cognite, apis.clavata, apis.talonic
    made: dict[str, list] = collections.defaultdict(list)
    made["predict"].append(cdf.add_predict_job(items=4, matches_per_item=2))
    made["predict"].append(cdf.add_predict_job(items=3, matches_per_item=1, job_token="job-token-secret-1"))
    made["predict"].append(cdf.add_predict_job(items=0, status="Failed", error_message="model not found"))
    pid = cdf.add_pipeline()
    made["pipelines"].append(pid)
    made["runs"].append((pid, cdf.add_run(pid, matches=5, suggested_rules=2, generated_rules=1)))
    made["runs"].append(
        (pid, cdf.add_run(pid, status="Failed", matches=0, suggested_rules=0, generated_rules=0, error_message="boom"))
    )
    made["clavata"].append(clav.add_job(results=3))
    made["clavata"].append(clav.add_job(results=2, deprecated_result_only=True))
    made["clavata"].append(clav.add_job(status="JOB_STATUS_FAILED", results=0))
    made["talonic"].append(tal.add_job(rows=3))
    made["talonic"].append(tal.add_job(status="complete", rows=2, flags_as_objects=True))
    made["talonic"].append(tal.add_job(status="failed", rows=0))
    if unfinished:
        made["predict"].append(cdf.add_predict_job(items=2, status="Running"))
        made["runs"].append((pid, cdf.add_run(pid, status="Queued")))
        made["clavata"].append(clav.add_job(status="JOB_STATUS_RUNNING", results=2))
        made["talonic"].append(tal.add_job(status="processing", rows=2))
    return made


# `.ci/run` runs the whole suite on one Python and these on every other supported one (`pytest -m smoke`):
# unit and property tests, the plugin definition and release metadata, the singer-sdk hooks, and one full sync
# against the fake APIs (test_streams).
SMOKE_FILES = {
    "test_units.py",
    "test_properties.py",
    "test_streams.py",
    "test_plugin_definition.py",
    "test_release.py",
    "test_sdk_hooks.py",
}


# The longest files, measured (make test --durations): started first, so that xdist's workers do not wait on
# one of them at the end (with --dist loadfile a file runs on one worker, in collection order).
LONGEST_FIRST = (
    "test_docs_run.py",  # about 5 min
    "test_shards_meltano.py",  # 3.5 min
    "test_dbt.py",  # 4 min in all
    "test_demo.py",
    "test_snowflake_load.py",
    "test_readme_meltano.py",
    "test_fuzz.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    for item in items:
        if item.path.name in SMOKE_FILES:
            item.add_marker(pytest.mark.smoke)
        test = getattr(item, "obj", None)
        if getattr(test, "is_hypothesis_test", False) and getattr(test, "_hypothesis_internal_use_seed", None) is None:
            # A fixed seed per test (its node ID without parameters): the same examples in CI and locally.
            digest = hashlib.sha256(item.nodeid.split("[")[0].encode()).digest()
            test._hypothesis_internal_use_seed = int.from_bytes(digest[:8], "big")


@contextlib.contextmanager
def project_lock() -> t.Iterator[None]:
    """Meltano runs of one plugin in one project share `.meltano/run/<plugin>/` (Meltano issue 8763), and
    `meltano install` replaces what is there: whatever runs Meltano in this repository (its sys dir in the test
    cache) holds this lock, so that two xdist workers never do so at once."""
    import fcntl

    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"tap-jobresults-meltano-{digest}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def meltano_project_lock() -> t.Iterator[None]:
    """project_lock() for a whole test."""
    with project_lock():
        yield


# -- PostgreSQL: a test that needs it and cannot reach it fails at once, saying what is missing -------------------


@cache
def postgres_problem() -> str | None:
    """None when the test database answers; else what is missing and how to provide it."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed in the test virtualenv (`make install` installs the test extra)"
    try:
        with psycopg.connect(PG_URL, connect_timeout=5):
            return None
    except Exception as exc:  # any failure to connect is the same missing prerequisite
        shown = PG_URL.replace(f":{urlsplit(PG_URL).password}@", ":***@") if urlsplit(PG_URL).password else PG_URL
        return (
            f"PostgreSQL is not reachable at {shown} ({str(exc).strip().splitlines()[0]}). The loader, dbt, Meltano "
            "and docs tests need a PostgreSQL server on 127.0.0.1:5432 accepting the user postgres without a "
            "password (trust auth) with a database `test`, or TAP_JOBRESULTS_TEST_PG set to the URL of one "
            "(postgresql://user:password@host:5432/dbname). `make check` runs the tests that need none."
        )


@pytest.fixture(autouse=True)
def _postgres_when_needed(request: pytest.FixtureRequest) -> None:
    """Tests of modules that talk to the test database (they define PG_URL) fail with a clear message without it."""
    if getattr(request.module, "PG_URL", None) is not None and request.module.__name__ != __name__:
        problem = postgres_problem()
        if problem:
            pytest.fail(problem, pytrace=False)


# -- The suite leaves the project as it found it ----------------------------------------------------------------

# What the tests (and `make install`) may create inside the project: git-ignored build folders.
BUILD_FOLDERS = re.compile(
    r"^(\.venv[^/]*/?|.*__pycache__/|\.pytest_cache/|\.hypothesis/|\.ruff_cache/|\.mypy_cache/|"
    r".*\.egg-info/|transform/target/|transform/logs/)$"
)


def _git_status() -> set[str] | None:
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=normal"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(proc.stdout.splitlines()) if proc.returncode == 0 else None


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the xdist controller, or a plain run
        session.config._jobresults_git_status = _git_status()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = getattr(session.config, "_jobresults_git_status", None)
    if before is None or hasattr(session.config, "workerinput"):
        return
    after = _git_status() or set()
    written = sorted(line for line in after - before if not BUILD_FOLDERS.match(line[3:]))
    if written:
        session.config._jobresults_written = written  # type: ignore[attr-defined]
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: t.Any, exitstatus: int, config: pytest.Config) -> None:
    written = getattr(config, "_jobresults_written", None)
    if written:
        terminalreporter.section("the tests changed the project", red=True)
        terminalreporter.write_line("git status --porcelain --ignored shows what the suite wrote or changed:")
        for line in written:
            terminalreporter.write_line(f"  {line}")
