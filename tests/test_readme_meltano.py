"""Every Meltano command of the README's setup and of the operations page (state, resets) runs as written, with
Meltano 4, against the fake APIs, and does what the docs say it does.

(tests/test_docs_run.py runs every block of the docs as a whole; this test checks each command's claim.)
The commands are read from the ```bash blocks of README.md and docs/operations.md (every line that starts
with `meltano`, blocks marked norun left out), put in the
order of a new user's first day (install, config, run, state), and run by bash in a copy of this project (its own `.meltano/`: plugins, system database and state), with
the README's placeholders filled in: the fake Talonic's key for `tlnc_live_...`, a password for `...`, and a
temporary directory for `/tmp/`. The fake Talonic's URL comes from `TAP_JOBRESULTS_TALONIC_BASE_URL` and the
loader writes into a schema of its own in the test database (dropped at the end), as a user's environment
variables would direct them.

Between the commands the test checks what each one claims: the key lands in `.env` and not in meltano.yml,
`meltano config test` passes on an account with no jobs and fails with a wrong key, `meltano run` lands the
jobs, the state commands read, edit and clear the state.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT
from tests.test_docs import shell_blocks

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.slow
MELTANO = shutil.which("meltano") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
PG_URL = os.environ.get("TAP_JOBRESULTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
STATE_ID = "dev:tap-jobresults-to-target-postgres"
PLACEHOLDER_KEY = "tlnc_live_..."
# What the project copy leaves out: virtualenvs, Meltano's own directory, outputs, caches, secrets.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".venv-*", ".meltano", ".env", "output", "plugins", "__pycache__", ".*_cache", ".hypothesis"
)


PHASES = ("meltano install", "meltano config set", "meltano config", "meltano run", "meltano state")


def _phase(command: str) -> int:
    return next((i for i, prefix in enumerate(PHASES) if command.startswith(prefix)), len(PHASES))


def readme_meltano_commands() -> list[str]:
    """The `meltano ...` lines of the README's and operations page's bash blocks, continuation lines joined,
    comments removed, sorted by phase (install, config set, config list/test, run, state), keeping the docs'
    order within each phase.
    """
    commands = []
    for page in (ROOT / "README.md", ROOT / "docs" / "operations.md"):
        for block in shell_blocks(page):
            if "norun" in block.attrs:
                continue
            commands += _meltano_lines(block.code, commands)
    return sorted(commands, key=_phase)


def _meltano_lines(block: str, seen: list[str]) -> list[str]:
    commands: list[str] = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line.startswith("meltano ") and line not in commands and line not in seen:
            commands.append(line)
    return commands


def test_the_readme_has_the_meltano_commands_a_user_needs():
    commands = readme_meltano_commands()
    for needed in (
        "install",
        "config set tap-jobresults",
        "config test",
        "run",
        "state get",
        "state set",
        "state clear",
    ):
        assert any(c.startswith(f"meltano {needed}") for c in commands), (
            f"no `meltano {needed}` in the README or docs/operations.md"
        )
    assert not any(re.match(r"meltano (config|state) tap-", c) for c in commands), (
        "Meltano 3 syntax (`meltano config <plugin> set`): Meltano 4 wants `meltano config set <plugin> ...`"
    )


@pytest.fixture
def project(tmp_path):
    if not Path(MELTANO).exists():
        pytest.fail(f"meltano not found at {MELTANO}: run `make test` (it installs Meltano into .venv-meltano)")
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
    (copy / "output").mkdir()  # the docs' recipes write their files there (git-ignored)
    return copy


@pytest.fixture
def schema():
    name = f"jr_readme_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'drop schema if exists "{name}" cascade')
        con.execute(f'drop schema if exists "{name}_dbt" cascade')


class Shell:
    """Runs README lines with bash in the project copy, as a user at a terminal would (answering `y`)."""

    def __init__(self, project: Path, env: dict[str, str]):
        self.project, self.env = project, env

    def __call__(self, command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=self.project,
            env={**self.env, **(env or {})},
            input="y\n",
            capture_output=True,
            text=True,
            timeout=600,
        )


def _environment(apis, schema: str, tmp_path: Path) -> dict[str, str]:
    pg = urlsplit(PG_URL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_JOBRESULTS_", "TARGET_", "MELTANO_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        {
            "PATH": f"{Path(MELTANO).parent}:{env['PATH']}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "TMPDIR": str(tmp_path),
            # Where the user's own environment would point: the fake API and a schema of the test database.
            "TAP_JOBRESULTS_TALONIC_BASE_URL": apis.talonic.base_url,
            "TARGET_POSTGRES_HOST": pg.hostname or "127.0.0.1",
            "TARGET_POSTGRES_PORT": str(pg.port or 5432),
            "TARGET_POSTGRES_USER": pg.username or "postgres",
            "TARGET_POSTGRES_DATABASE": pg.path.lstrip("/") or "test",
            "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
            # The dbt utility's profile (transform/profiles.yml) reads libpq's variables.
            "PGHOST": pg.hostname or "127.0.0.1",
            "PGPORT": str(pg.port or 5432),
            "PGUSER": pg.username or "postgres",
            "PGPASSWORD": pg.password or "unused-with-trust-auth",
            "PGDATABASE": pg.path.lstrip("/") or "test",
            "DBT_SOURCE_SCHEMA": schema,
            "DBT_SCHEMA": f"{schema}_dbt",
        }
    )
    return env


def _all_sources(apis) -> dict[str, str]:
    return {
        "TAP_JOBRESULTS_CLAVATA_BASE_URL": apis.clavata.base_url,
        "TAP_JOBRESULTS_CLAVATA_API_KEY": apis.config(sources=("clavata",))["clavata"]["api_key"],
        "TAP_JOBRESULTS_COGNITE_BASE_URL": apis.cognite.base_url,
        "TAP_JOBRESULTS_COGNITE_PROJECT": apis.config(sources=("cognite",))["cognite"]["project"],
        "TAP_JOBRESULTS_COGNITE_TOKEN": apis.config(sources=("cognite",), cognite_auth="token")["cognite"]["token"],
    }


def _fill_in(command: str, apis, tmp_path: Path) -> str:
    command = command.replace(PLACEHOLDER_KEY, apis.talonic.api_key)
    command = re.sub(r"(config set target-postgres password) \.\.\.", r"\1 unused-with-trust-auth", command)
    command = command.replace("/tmp/", f"{tmp_path}/")  # noqa: S108 (the README's path, replaced)
    assert "..." not in command, f"a README placeholder this test does not know how to fill in: {command}"
    return command


def _count(schema: str, table: str) -> int:
    with psycopg.connect(PG_URL) as con:
        return con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]


def _state(shell: Shell) -> dict:
    proc = shell(f"meltano state get {STATE_ID}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_every_readme_meltano_command_runs_as_written(apis, project, schema, tmp_path):
    shell = Shell(project, _environment(apis, schema, tmp_path))
    # Checks after `config test` go on when one fails, so that one run reports every broken command.
    failures: list[str] = []
    ran: list[str] = []
    jobs: list[str] = []
    for written in readme_meltano_commands():
        command = _fill_in(written, apis, tmp_path)
        if command.startswith("meltano run"):
            # Work for the run: two finished jobs and one still processing.
            jobs += [apis.talonic.add_job(rows=3), apis.talonic.add_job(rows=2), apis.talonic.add_job("processing")]
        # dbt's sources are the tables of all three vendors: the run that feeds it has them all
        # (the other two against the fakes' empty accounts).
        proc = shell(command, env=_all_sources(apis) if "dbt-postgres" in command else None)
        ran.append(written)
        result = f"`{written}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        if command.startswith("meltano config test"):
            assert not apis.talonic.jobs, "config test runs against an account with no jobs"
            if proc.returncode != 0:
                failures.append(f"valid key, account with no jobs: {result}")
            wrong = shell(command, env={"TAP_JOBRESULTS_TALONIC_API_KEY": "tlnc_wrong_0123456789"})
            if wrong.returncode == 0:
                failures.append(f"`{written}` passed with a wrong key:\n{wrong.stderr[-2000:]}")
            elif "authentication" not in (wrong.stdout + wrong.stderr).lower():
                failures.append(f"a wrong key does not say authentication:\n{wrong.stderr[-2000:]}")
            continue
        assert proc.returncode == 0, result
        if command.startswith("meltano config set tap-jobresults talonic.api_key"):
            assert apis.talonic.api_key in (project / ".env").read_text()
            assert apis.talonic.api_key not in (project / "meltano.yml").read_text()
        elif command.startswith("meltano run"):
            assert _count(schema, "extraction_jobs") == len(jobs)
            assert _count(schema, "extraction_rows") >= 5
            assert "extraction_jobs" in _state(shell)["singer_state"]["bookmarks"]
        elif command.startswith("meltano state list"):
            assert STATE_ID in proc.stdout + proc.stderr
        elif command.startswith(f"meltano state get {STATE_ID}") and "|" not in command:
            assert json.loads(proc.stdout)["singer_state"]["bookmarks"]
        elif command.startswith("meltano state set"):
            assert "extraction_jobs" not in _state(shell)["singer_state"].get("bookmarks", {}), (
                "the README's reset recipe should have dropped the Talonic bookmark"
            )
        elif command.startswith("meltano state clear"):
            assert not _state(shell).get("singer_state", {}).get("bookmarks"), "state clear left bookmarks"
    assert any(c.startswith("meltano run") for c in ran) and any(c.startswith("meltano state clear") for c in ran)
    assert not failures, "\n\n".join(failures)
