"""Replay bodies written from the vendors' own code (tests/fixtures/vendor, each citing its source) to the real
tap: exit 0, every record valid against its stream's schema (formats checked), and 0 fields lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_tap
from tests.vendorcheck import CHECKS, ReplayServer, invalid_records, section_config

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "vendor").glob("*.json"))


def load(path: Path) -> dict:
    fixture = json.loads(path.read_text())
    assert fixture["_source"], f"{path.name} cites no source"
    return fixture


def replay(fixture: dict, state: dict | None = None):
    with ReplayServer(fixture["responses"]) as server:
        config = section_config(fixture["vendor"], server.url, fixture["config"])
        return run_tap(config, state=state), server.requests


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.stem for p in FIXTURES])
def replayed(request):
    fixture = load(request.param)
    run, requests = replay(fixture)
    return fixture, run, requests


def test_vendor_bodies_sync_with_exit_0(replayed):
    _, run, _ = replayed
    assert run.returncode == 0, run.stderr[-3000:]


def test_every_record_is_valid_against_its_schema_with_formats_checked(replayed):
    _, run, _ = replayed
    problems = invalid_records(run)
    assert not problems, problems[:10]


def test_no_field_the_vendor_sent_is_lost(replayed):
    fixture, run, _ = replayed
    checked, lost = CHECKS[fixture["vendor"]](fixture["responses"], run)
    assert checked > 0
    assert not lost, f"{len(lost)} fields lost of {checked} objects:\n" + "\n".join(lost)


def test_every_stream_carries_extra_fields(replayed):
    _, run, _ = replayed
    for stream, schema in run.schemas().items():
        assert "extra_fields" in schema["schema"]["properties"], stream
    for message in run.messages:
        if message["type"] == "RECORD":
            extra = message["record"].get("extra_fields", "missing")
            assert extra is None or (isinstance(extra, dict) and extra), (message["stream"], extra)


def test_generated_rules_carry_the_rule():
    fixture = load(next(p for p in FIXTURES if p.stem == "cdf_pipeline_runs"))
    run, _ = replay(fixture)
    body = fixture["responses"]["/api/v1/projects/vendorproj/context/entitymatching/pipelines/7001/runs/9001"]
    rules = sorted(run.records("generated_rules"), key=lambda r: r["rule_index"])
    assert [(r["extractors"], r["conditions"], r["priority"]) for r in rules] == [
        (g["extractors"], g["conditions"], g["priority"]) for g in body["generatedRules"]
    ]
    properties = run.schemas()["generated_rules"]["schema"]["properties"]
    assert {"extractors", "conditions", "priority"} <= set(properties)


def test_talonic_rows_without_id_get_the_same_deterministic_id_every_run():
    fixtures = [load(p) for p in FIXTURES if p.stem.startswith("talonic_")]
    for fixture in fixtures:
        first, _ = replay(fixture)
        second, _ = replay(fixture)
        assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:]
        ids = sorted(r["id"] for r in first.records("extraction_rows"))
        assert ids and all(isinstance(i, str) and i for i in ids)
        assert ids == sorted(r["id"] for r in second.records("extraction_rows"))
        assert len(set(ids)) == len(ids)


def test_unfinished_cdf_jobs_have_no_result_rows_and_stay_pending():
    fixture = load(next(p for p in FIXTURES if p.stem == "cdf_predict_jobs"))
    run, _ = replay(fixture)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {r["job_id"] for r in run.records("match_results")} == {3101}
    collecting = [r for r in run.records("entity_matching_jobs") if r["job_id"] == 3102]
    assert collecting and collecting[0]["status"] == "Collecting" and not collecting[0]["finished"]
    again, requests = replay(fixture, state=run.state)
    assert [r["job_id"] for r in again.records("entity_matching_jobs")] == [3102]  # the finished one is not re-read
    assert not any(p.endswith("/jobs/3101") for p in requests)


def test_the_check_itself_sees_a_lost_field_and_accepts_every_way_of_keeping_it():
    from tests.vendorcheck import CLAVATA_RESULT, PREDICT_JOB, TALONIC_JOB, lost_fields

    job = {"jobId": 1, "createdTime": 1730204340123, "modelId": 7, "items": [{"x": 1}], "errorMessage": None}
    record = {"job_id": 1, "created_time": "2024-10-29T12:19:00.123000Z", "extra_fields": None}
    assert lost_fields(job, record, PREDICT_JOB) == ["modelId=7"]
    assert lost_fields(job, {**record, "extra_fields": {"modelId": 7}}, PREDICT_JOB) == []
    assert lost_fields(job, {**record, "model_id": 7}, PREDICT_JOB) == []
    assert lost_fields(job, {**record, "created_time": "2024-10-29T12:19:00Z"}, PREDICT_JOB) == [
        "createdTime=1730204340123",
        "modelId=7",
    ]
    result = {"created": "2025-11-03T09:14:27.418263117Z", "report": {"name": "", "policyKey": "k", "new": 1}}
    row = {"created": "2025-11-03T09:14:27.418263Z", "policy_key": "k", "extra_fields": {"report": {"new": 1}}}
    # nanoseconds: the microsecond column alone loses digits; the string as sent in extra_fields keeps them
    assert lost_fields(result, row, CLAVATA_RESULT) == ['created="2025-11-03T09:14:27.418263117Z"']
    row["extra_fields"]["created"] = result["created"]
    assert lost_fields(result, row, CLAVATA_RESULT) == []
    assert lost_fields(result, {**row, "extra_fields": None}, CLAVATA_RESULT) == [
        'created="2025-11-03T09:14:27.418263117Z"',
        "report.new=1",
    ]
    # enum numbers: 1 is OUTCOME_FALSE in the vendor's numbering; landing it as OUTCOME_TRUE is a loss
    numeric = {"report": {"reviewResult": {"outcome": 1, "score": 0.1}}}
    assert lost_fields(numeric, {"outcome": "OUTCOME_FALSE", "score": 0.1}, CLAVATA_RESULT) == []
    assert lost_fields(numeric, {"outcome": "OUTCOME_TRUE", "score": 0.1}, CLAVATA_RESULT) == [
        "report.reviewResult.outcome=1 altered: outcome='OUTCOME_TRUE'"
    ]
    kept_raw = {"extra_fields": {"report": {"reviewResult": {"outcome": 1}}}}  # keeping the number does not excuse it
    assert lost_fields(numeric, {"outcome": "OUTCOME_TRUE", "score": 0.1, **kept_raw}, CLAVATA_RESULT) == [
        "report.reviewResult.outcome=1 altered: outcome='OUTCOME_TRUE'"
    ]
    # a typed object column: declared sub-fields in the column, the others in extra_fields under its key
    usage = {"report": {"tokenUsage": {"inputTokens": 5, "cachedTokens": 2}}}
    typed_row = {"token_usage": {"inputTokens": 5}, "extra_fields": {"report": {"tokenUsage": {"cachedTokens": 2}}}}
    assert lost_fields(usage, typed_row, CLAVATA_RESULT) == []
    assert lost_fields(usage, {**typed_row, "extra_fields": None}, CLAVATA_RESULT) == [
        "report.tokenUsage.cachedTokens=2"
    ]
    talonic = {"id": "j", "progress": 1.0, "schema": {"id": "s", "name": "n"}, "total_documents": 3}
    kept = {"job_id": "j", "progress": 100, "schema_id": "s", "schema_name": "n", "document_count": 3}
    assert lost_fields(talonic, kept, TALONIC_JOB) == []
    assert lost_fields(talonic, {**kept, "schema_name": None}, TALONIC_JOB) == ['schema.name="n"']


def _fixture(stem: str) -> dict:
    return load(Path(__file__).parent / "fixtures" / "vendor" / f"{stem}.json")


def test_each_vendor_spelling_lands_in_its_column_and_stays_in_extra_fields_as_sent():
    """The older draft's `phase` and `progress: 1.0` (a fraction), the Node SDK's `total_documents` and
    `document_filename`: each fills its column; the alias and the raw fraction stay in extra_fields."""
    draft, _ = replay(_fixture("talonic_draft"))
    (job,) = draft.records("extraction_jobs")
    assert (job["current_phase"], job["progress"]) == ("done", 100)
    assert job["extra_fields"]["phase"] == "done" and job["extra_fields"]["progress"] == 1.0
    assert "status" not in job["extra_fields"] and "created_at" not in job["extra_fields"]

    node, _ = replay(_fixture("talonic_node_sdk"))
    first = next(r for r in node.records("extraction_jobs") if r["job_id"] == "0b6e2c1d-8f3a-4c5b-9d7e-1a2b3c4d5e6f")
    assert (first["document_count"], first["progress"]) == (3, 100)
    assert first["extra_fields"]["total_documents"] == 3 and "progress" not in first["extra_fields"]
    rows = {r["filename"]: r for r in node.records("extraction_rows")}
    assert {"invoice-042.pdf", "invoice-043.pdf", "po-1.pdf"} <= set(rows)
    assert rows["po-1.pdf"]["extra_fields"] == {"document_filename": "po-1.pdf"}
