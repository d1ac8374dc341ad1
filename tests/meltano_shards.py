"""Plumbing shared by the tests that run the shards through Meltano (and Dagster): a PostgreSQL
system database of their own, `meltano` with the right environment, one installer at a time."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import uuid

import pytest

from tests.conftest import MELTANO_SYS_DIR, ROOT
from tests.test_meltano_postgres import MELTANO, PG, PG_URL

psycopg = pytest.importorskip("psycopg")
SHARDS = 4
LOADER = "target-postgres"


def meltano_env(extra: dict) -> dict:
    env = {**os.environ, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false", **extra}
    env.pop("VIRTUAL_ENV", None)
    return env


def meltano(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [MELTANO, *args],
        cwd=ROOT,
        env=meltano_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"meltano {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc


@contextlib.contextmanager
def install_lock():
    """`meltano install` upgrades a plugin's virtualenv in place: one installer at a time across pytest workers."""
    MELTANO_SYS_DIR.mkdir(parents=True, exist_ok=True)
    with open(MELTANO_SYS_DIR / ".tests-install.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def system_db() -> str:
    """A PostgreSQL database of its own for Meltano's system tables (state, runs); dropped afterwards."""
    name = f"jr_meltano_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'create database "{name}"')
    user = PG.username or "postgres"
    auth = f"{user}:{PG.password}" if PG.password else user
    yield f"postgresql+psycopg://{auth}@{PG.hostname or '127.0.0.1'}:{PG.port or 5432}/{name}"
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def schemas() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    names = {"shards": f"jr_shards_{tag}", "single": f"jr_single_{tag}"}
    yield names
    with psycopg.connect(PG_URL, autocommit=True) as con:
        for name in names.values():
            con.execute(f'drop schema if exists "{name}" cascade')


def states(system_db: str) -> dict[str, dict]:
    env = {"MELTANO_DATABASE_URI": system_db}
    ids = [line.strip() for line in meltano("state", "list", env=env).stdout.splitlines() if line.strip()]
    return {sid: json.loads(meltano("state", "get", sid, env=env).stdout) for sid in ids}


def install(system_db: str) -> None:
    """The tap and the loader into Meltano's virtualenvs; the first command against a new system
    database also creates its tables, so one process does it before the N shards start."""
    if not os.path.exists(MELTANO):
        pytest.fail(f"meltano not found at {MELTANO}: `make .venv-meltano/bin/meltano` installs it")
    with install_lock():
        meltano("install", "--plugin-type", "extractor", "tap-jobresults", env={"MELTANO_DATABASE_URI": system_db})
        meltano("install", "--plugin-type", "loader", LOADER, env={"MELTANO_DATABASE_URI": system_db})


def shard_state_ids() -> set[str]:
    return {f"dev:tap-jobresults--shard-{i}-to-{LOADER}" for i in range(SHARDS)}
