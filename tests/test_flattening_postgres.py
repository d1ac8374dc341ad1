"""Flattening: with `flattening_enabled: true` and `flattening_max_depth: 2`, the documented sub-fields of nested
objects (grid stats, errors, token usage, the exception report's review) land as typed columns through the real
target-postgres (its own virtualenv, as Meltano installs it), and nothing of them is dropped: an undeclared
sub-field lands in extra_fields (one JSON column), never in a column the loader does not have."""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT, run_tap

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.slow
TARGET = ROOT / ".venv-target-postgres" / "bin" / "target-postgres"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG = urlsplit(PG_URL)
FLAT = {"flattening_enabled": True, "flattening_max_depth": 2}


@pytest.fixture
def schema():
    name = f"jr_flat_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f'drop schema if exists "{name}" cascade')


def _load(messages: str, schema: str) -> None:
    config = {
        "host": PG.hostname,
        "port": PG.port,
        "user": PG.username,
        "password": "unused-with-trust-auth",
        "database": PG.path.lstrip("/"),
        "default_target_schema": schema,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "target.json"
        path.write_text(json.dumps(config))
        proc = subprocess.run(
            [str(TARGET), "--config", str(path)], input=messages, capture_output=True, text=True, timeout=300
        )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _columns(schema: str, table: str) -> dict[str, str]:
    with psycopg.connect(PG_URL) as con:
        rows = con.execute(
            "select column_name, data_type from information_schema.columns where table_schema = %s and table_name = %s",
            (schema, table),
        ).fetchall()
    return dict(rows)


def _rows(schema: str, table: str, columns: list[str]) -> list[tuple]:
    quoted = ", ".join(f'"{c}"' for c in columns)
    with psycopg.connect(PG_URL) as con:
        return con.execute(f'select {quoted} from "{schema}"."{table}"').fetchall()


def test_documented_sub_fields_land_as_typed_columns(apis, schema):
    if not TARGET.exists():
        pytest.fail("target-postgres not found: link /work/main/.venv-target-postgres (make test installs it)")
    done = apis.talonic.add_job(rows=2)
    failed = apis.talonic.add_job(status="failed", rows=0)
    apis.clavata.add_job(results=2)
    apis.clavata.add_job(results=1, enum_numbers=True)
    run = run_tap({**apis.config(sources=("talonic", "clavata")), **FLAT}, check=True)
    schemas = run.schemas()
    jobs = schemas["extraction_jobs"]["schema"]["properties"]
    assert jobs["grid_stats__total_cells"]["type"] == ["integer", "null"]
    assert jobs["error__code"]["type"] == ["string", "null"]
    _load(run.stdout, schema)

    columns = _columns(schema, "extraction_jobs")
    assert columns["grid_stats__total_cells"] == "bigint"
    assert columns["grid_stats__filled"] == "bigint"
    assert columns["grid_stats__fill_rate"] in ("numeric", "double precision")
    assert columns["error__code"] in ("character varying", "text")
    assert columns["total_rows"] == "bigint"
    landed = {
        r[0]: r[1:]
        for r in _rows(
            schema, "extraction_jobs", ["job_id", "grid_stats__total_cells", "error__code", "error__message"]
        )
    }
    assert landed[done][0] == 8 and landed[done][1] is None
    assert landed[failed][1:] == ("extraction_failed", "document unreadable")

    reports = _columns(schema, "clavata_reports")
    assert reports["token_usage__inputTokens"] == "bigint"
    assert reports["token_usage__multiplier"] in ("numeric", "double precision")
    assert reports["exception_evaluation_report__reviewResult__outcome"] in ("character varying", "text")
    assert reports["exception_evaluation_report__reviewResult__score"] in ("numeric", "double precision")
    rows = _rows(
        schema,
        "clavata_reports",
        ["token_usage__inputTokens", "exception_evaluation_report__reviewResult__outcome", "outcome", "score"],
    )
    assert len(rows) == 3
    for tokens, exception_outcome, outcome, score in rows:
        assert tokens >= 120
        assert exception_outcome == "OUTCOME_FALSE"  # numbers decoded inside typed objects too
        assert outcome == ("OUTCOME_TRUE" if score >= 0.5 else "OUTCOME_FALSE")


def test_an_undeclared_sub_field_is_not_dropped_by_flattening(apis, schema, monkeypatch):
    """A sub-field the schema does not declare would be flattened into a column the loader does not have (and
    dropped): the tap moves it to extra_fields, which flattening keeps as one JSON column."""
    job_id = apis.talonic.add_job(status="failed", rows=0)
    original = apis.talonic._job

    def with_new_sub_field(job: dict) -> dict:
        body = original(job)
        if body.get("error"):
            body["error"] = {**body["error"], "step": "phase_2_execute", "details": {"page": 3}}
        body["grid_stats"] = {**body["grid_stats"], "cells_reviewed": 7}
        return body

    monkeypatch.setattr(apis.talonic, "_job", with_new_sub_field)
    run = run_tap({**apis.config(sources=("talonic",)), **FLAT}, check=True)
    _load(run.stdout, schema)
    (extra,) = [r[0] for r in _rows(schema, "extraction_jobs", ["extra_fields"]) if r]
    extra = json.loads(extra) if isinstance(extra, str) else extra
    assert extra["error"] == {"step": "phase_2_execute", "details": {"page": 3}}
    assert extra["grid_stats"] == {"cells_reviewed": 7}
    assert _rows(schema, "extraction_jobs", ["job_id", "error__code"]) == [(job_id, "extraction_failed")]
