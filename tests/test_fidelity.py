"""Fidelity: enum numbers decoded by the vendor's own numbering, the Talonic results envelope, timestamps finer than
a microsecond kept as sent, and typed nested objects that keep every sub-field (column or extra_fields)."""

from __future__ import annotations

import json
import re
import typing as t
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_jobresults.records import build, col, conforms, to_ts, typed
from tap_jobresults.sources import clavata
from tap_jobresults.streams import load_schema
from tests.conftest import run_tap
from tests.fakeapi.clavata import ENUM_NUMBERS

FACTS = json.loads((Path(__file__).parent / "fixtures" / "specs" / "clavata_enums.json").read_text())
PAIRS = [(full, name, number) for full, values in FACTS["enums"].items() for name, number in values.items()]


# -- enum tables against the vendor's descriptors ----------------------------------------------------------------


def test_the_facts_cite_the_vendors_descriptors():
    sources = FACTS["_source"]
    assert any(s.get("repo") == "clavataai/gosdk" and len(s.get("commit", "")) == 40 for s in sources)
    assert all(s.get("path") for s in sources)


@pytest.mark.parametrize(("full", "name", "number"), PAIRS, ids=[f"{p[1]}={p[2]}" for p in PAIRS])
def test_each_enum_number_decodes_as_the_vendor_numbers_it(full, name, number):
    assert clavata.ENUMS[full][number] == name
    assert clavata.decode(full, number) == name
    assert clavata.decode(full, name) == name  # a name is taken as sent


@pytest.mark.parametrize("full", sorted(FACTS["enums"]))
def test_the_tables_hold_exactly_the_vendors_values(full):
    assert clavata.ENUMS[full] == {number: name for name, number in FACTS["enums"][full].items()}


def test_every_enum_the_tap_decodes_is_backed_by_the_facts():
    assert set(clavata.ENUMS) == set(FACTS["enums"])


def test_the_fake_numbers_enums_as_the_vendor_does():
    for values in FACTS["enums"].values():
        for name, number in values.items():
            assert ENUM_NUMBERS[name] == number


def test_an_unknown_number_is_kept_as_sent_not_guessed():
    record = build({"status": 9, "jobType": 7}, clavata.JOB, proto3=True)
    assert record["status"] == "JOB_STATUS_UNSPECIFIED" and record["job_type"] is None
    assert record["extra_fields"] == {"status": 9, "jobType": 7}


def test_a_numeric_outcome_lands_as_its_name_and_the_number_as_sent():
    result = {"jobUuid": "j", "report": {"reviewResult": {"outcome": 1, "score": 0.2}, "result": 1}}
    row = build(result, clavata.REPORT, proto3=True)
    assert row["outcome"] == "OUTCOME_FALSE"  # 1 is FALSE in the vendor's numbering
    assert row["extra_fields"] == {"report": {"reviewResult": {"outcome": 1}, "result": 1}}
    deprecated_only = build({"report": {"result": 2}}, clavata.REPORT, proto3=True)
    assert deprecated_only["outcome"] == "OUTCOME_TRUE"


def _body(response: tuple) -> dict:
    body = response[1]
    return json.loads(body) if isinstance(body, (bytes, str)) else body


def _clavata_config(apis) -> dict:
    return apis.config(sources=("clavata",))


def test_numeric_statuses_bookmark_by_their_decoded_value(apis):
    done = apis.clavata.add_job(status="JOB_STATUS_COMPLETED", results=2, enum_numbers=True)
    running = apis.clavata.add_job(status="JOB_STATUS_RUNNING", results=2, enum_numbers=True)
    listing = _body(apis.clavata.list_jobs(None, {}, {}, {}))["jobs"]
    assert {j["jobUuid"]: j["status"] for j in listing} == {done: 3, running: 2}  # the fake sends numbers

    first = run_tap(_clavata_config(apis), check=True)
    jobs = {r["job_uuid"]: r for r in first.records("clavata_jobs")}
    assert (jobs[done]["status"], jobs[done]["finished"], jobs[done]["result_count"]) == (
        "JOB_STATUS_COMPLETED",
        True,
        2,
    )
    assert (jobs[running]["status"], jobs[running]["finished"]) == ("JOB_STATUS_RUNNING", False)
    assert jobs[done]["extra_fields"]["status"] == 3 and jobs[done]["job_type"] == "JOB_TYPE_STANDARD"
    reports = first.records("clavata_reports")
    assert len(reports) == 2
    for report in reports:
        assert report["outcome"] == ("OUTCOME_TRUE" if report["score"] >= 0.5 else "OUTCOME_FALSE")

    second = run_tap(_clavata_config(apis), state=first.state, check=True)
    assert [r["job_uuid"] for r in second.records("clavata_jobs")] == [running]  # pending, the finished one is not
    assert apis.clavata.requests(done) == 1  # fetched once: COMPLETED (3) bookmarked it

    apis.clavata.set_status(running, "JOB_STATUS_COMPLETED")
    third = run_tap(_clavata_config(apis), state=second.state, check=True)
    (job,) = third.records("clavata_jobs")
    assert (job["job_uuid"], job["status"], job["finished"]) == (running, "JOB_STATUS_COMPLETED", True)
    assert len(third.records("clavata_reports")) == 2


@pytest.mark.parametrize("apis", [True], ids=["realistic"], indirect=True)
def test_realistic_clavata_outcomes_are_never_inverted(apis):
    made = [apis.clavata.add_job(results=4) for _ in range(12)]
    bodies = [_body(apis.clavata.get_job({"uuid": u}, {}, {}, {}))["job"] for u in made]
    numeric = [b for b in bodies if isinstance(b.get("status"), int)]
    assert numeric and len(numeric) < len(bodies)  # a share, not all
    run = run_tap(_clavata_config(apis), check=True)
    reports = run.records("clavata_reports")
    assert len(reports) == 48
    for report in reports:
        assert report["outcome"] == ("OUTCOME_TRUE" if report["score"] >= 0.5 else "OUTCOME_FALSE"), report
        exception = report["exception_evaluation_report"]
        assert exception["result"] == "OUTCOME_FALSE" and exception["reviewResult"]["outcome"] == "OUTCOME_FALSE"
    assert {r["status"] for r in run.records("clavata_jobs")} == {"JOB_STATUS_COMPLETED"}


# -- timestamps as sent --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("apis", [True], ids=["realistic"], indirect=True)
def test_nanosecond_timestamps_keep_the_string_as_sent(apis):
    fine = apis.clavata.add_job(results=1, created="2025-03-01T10:00:00.123456Z")  # the fake adds 3 more digits
    whole = apis.clavata.add_job(results=1, created="2025-03-01T11:00:00Z")  # ...000000000: nothing finer
    run = run_tap(_clavata_config(apis), check=True)
    jobs = {r["job_uuid"]: r for r in run.records("clavata_jobs")}
    reports = {r["job_uuid"]: r for r in run.records("clavata_reports")}
    for uuid in (fine, whole):
        body = _body(apis.clavata.get_job({"uuid": uuid}, {}, {}, {}))["job"]
        assert re.search(r"\.\d{9}Z$", body["created"])
        assert jobs[uuid]["created"] == body["created"][:26] + "Z"  # the column: microseconds, UTC
        kept = (jobs[uuid]["extra_fields"] or {}).get("created")
        assert kept == (body["created"] if uuid == fine else None)
        result_created = body["results"][0]["created"]
        assert (reports[uuid]["extra_fields"] or {}).get("created") == (result_created if uuid == fine else None)
    assert body["created"].endswith(".000000000Z")


DIGITS = st.text("0123456789", min_size=1, max_size=9)


@given(
    DIGITS,
    st.sampled_from(["Z", "+00:00", "+02:00", "-05:30"]),
    st.integers(min_value=1971, max_value=2100),
)
@settings(max_examples=200, deadline=None)
def test_a_timestamp_is_kept_as_sent_exactly_when_the_column_cannot_hold_it(fraction, zone, year):
    sent = f"{year}-06-30T12:34:56.{fraction}{zone}"
    record = build({"t": sent}, [col("t", "t", convert=to_ts)])
    assert record["t"] is not None and record["t"].endswith("Z") and len(record["t"]) == 27
    finer = bool(fraction[6:].strip("0"))
    assert (record["extra_fields"] or {}).get("t") == (sent if finer else None)
    assert record["t"][20:26] == (fraction + "000000")[:6] or zone != "Z"


# -- typed nested objects ------------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.dictionaries(st.text(max_size=8), inner, max_size=4) | st.lists(inner, max_size=3),
    max_leaves=12,
)
TYPED_COLUMNS = [
    (stream, name, schema)
    for stream in (
        "extraction_jobs",
        "clavata_reports",
        "clavata_jobs",
        "generated_rules",
        "suggested_rules",
        "match_results",
    )
    for name, schema in load_schema(stream)["properties"].items()
    if "properties" in schema or "allOf" in schema or isinstance(schema.get("additionalProperties"), dict)
]


def _merge(column: t.Any, rest: t.Any) -> t.Any:
    if isinstance(column, dict) and isinstance(rest, dict):
        return {**column, **{k: _merge(column.get(k), v) if k in column else v for k, v in rest.items()}}
    return rest if rest is not None else column


def _keys_of(schema: dict) -> st.SearchStrategy:
    return st.sampled_from([*sorted(schema.get("properties") or {"x": 0}), "undeclared", "extra"])


@pytest.mark.parametrize(("stream", "name", "schema"), TYPED_COLUMNS, ids=[f"{s}.{n}" for s, n, _ in TYPED_COLUMNS])
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_a_typed_column_holds_what_it_declares_and_extra_fields_the_rest(stream, name, schema, data):
    """Any value: the column conforms to its schema, and column + extra_fields give back the value as sent."""
    if "properties" in schema:
        value = data.draw(st.dictionaries(_keys_of(schema), JSONISH, max_size=5))
    else:
        value = data.draw(JSONISH)
    record = build({"v": value}, [col(name, "v", convert=typed(schema))])
    assert conforms(record[name], schema), (value, record)
    kept = (record["extra_fields"] or {}).get("v")
    if value is None:
        return
    if record[name] is None:
        assert kept == value
        return
    clean = json.loads(json.dumps(value, allow_nan=False))
    merged = _merge(record[name], kept)
    strip = lambda v: {k: strip(x) for k, x in v.items() if x is not None} if isinstance(v, dict) else v  # noqa: E731
    assert strip(merged) == strip(clean)


def test_a_sub_field_of_the_wrong_type_or_undeclared_moves_to_extra_fields():
    job = {"id": "j", "grid_stats": {"total_cells": 10, "filled": "six", "fill_rate": 0.6, "cells_reviewed": 3}}
    from tap_jobresults.sources.talonic import JOB

    record = build(job, JOB)
    assert record["grid_stats"] == {"total_cells": 10, "fill_rate": 0.6}
    assert record["extra_fields"] == {"grid_stats": {"filled": "six", "cells_reviewed": 3}}


# -- the Talonic results envelope ----------------------------------------------------------------------------------


@pytest.mark.parametrize("apis", [True], ids=["realistic"], indirect=True)
def test_the_talonic_results_envelope_lands(apis):
    made = [apis.talonic.add_job(rows=2 + i % 3) for i in range(9)]
    listed = {j["id"]: j for j in _body(apis.talonic.list_jobs(None, {}, {}, {}))["data"]}
    without_schema = [job_id for job_id in made if "schema" not in listed[job_id]]
    assert without_schema and len(without_schema) < len(made)
    run = run_tap(apis.config(sources=("talonic",)), check=True)
    jobs = {r["job_id"]: r for r in run.records("extraction_jobs")}
    for job_id in made:
        truth = apis.talonic.jobs[job_id]
        record = jobs[job_id]
        assert (record["schema_id"], record["schema_name"]) == (truth["schema"]["id"], truth["schema"]["name"])
        assert record["total_rows"] == truth["rows"]
        envelope = record["extra_fields"]["results"]
        assert envelope["links"] == {"self": f"/v1/jobs/{job_id}/results", "job": f"/v1/jobs/{job_id}"}
        assert envelope["job_status"] in ("complete", "processing")  # realistic: results may lag the listing
        assert "schema" not in envelope and "total_rows" not in envelope and "data" not in envelope


def test_an_envelope_schema_that_differs_from_the_listing_is_kept_as_sent():
    from tap_jobresults.sources.talonic import ExtractionJobs

    record = {"job_id": "j", "schema_id": "s1", "schema_name": None, "total_rows": None, "extra_fields": None}
    envelope = {"job_id": "j", "job_status": "complete", "schema": {"id": "s2", "name": "N"}, "total_rows": "7", "x": 1}
    ExtractionJobs._land_envelope(t.cast(t.Any, None), record, envelope)
    assert (record["schema_id"], record["schema_name"], record["total_rows"]) == ("s1", "N", None)
    assert record["extra_fields"] == {
        "results": {"job_status": "complete", "schema": {"id": "s2"}, "total_rows": "7", "x": 1}
    }


def test_a_numeric_deprecated_result_decodes_through_the_tap(apis):
    """Older reports carry only the deprecated `result`; as a number it decodes by the same table."""
    uuid = apis.clavata.add_job(results=3, deprecated_result_only=True, enum_numbers=True)
    body = _body(apis.clavata.get_job({"uuid": uuid}, {}, {}, {}))["job"]
    sent = [r["report"]["result"] for r in body["results"]]
    assert all(isinstance(n, int) for n in sent)
    run = run_tap(_clavata_config(apis), check=True)
    rows = sorted(run.records("clavata_reports"), key=lambda r: r["result_index"])
    names = {1: "OUTCOME_FALSE", 2: "OUTCOME_TRUE"}
    assert [r["outcome"] for r in rows] == [names[n] for n in sent]
    assert [r["extra_fields"]["report"]["result"] for r in rows] == sent
