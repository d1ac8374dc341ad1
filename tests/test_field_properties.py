"""Property: for any API object the vendors could send (unknown extra keys, optional keys left out, nulls), every
non-empty field is recoverable from the emitted record: a column, or `extra_fields` keyed as sent.

One example = one world per vendor (several jobs, items, rules, reports, rows), served by loopback replay servers to
one run of the real tap; few examples, since each one runs the tap binary."""

from __future__ import annotations

import contextlib
import string
import typing as t
import uuid

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tap_jobresults.records import Col, build, is_empty
from tap_jobresults.sources import clavata, cognite, talonic
from tests.conftest import run_tap
from tests.vendorcheck import CHECKS, ReplayServer, invalid_records, section_config

scalars = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(string.ascii_letters + " -_", max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
# Keys no document names (a field a vendor adds next month); prefixed so they never collide with a known one.
unknown = st.dictionaries(st.from_regex(r"zz[A-Za-z_]{1,8}", fullmatch=True), values, max_size=3)
uuids = st.uuids().map(str)
epoch_ms = st.integers(1_600_000_000_000, 1_900_000_000_000)
iso = st.integers(1_600_000_000, 1_900_000_000).map(
    lambda s: (
        __import__("datetime")
        .datetime.fromtimestamp(s, __import__("datetime").timezone.utc)
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )
)
entity = st.fixed_dictionaries({"id": st.integers(1, 10**9)}, optional={"name": st.text(max_size=8), "meta": values})
maybe = st.none  # an optional field sent as null


def obj(required: dict, optional: dict) -> st.SearchStrategy[dict]:
    """An object with its required fields, any subset of its optional ones (some null), and unknown extras."""
    return st.tuples(
        st.fixed_dictionaries(required, optional={k: v | maybe() for k, v in optional.items()}), unknown
    ).map(lambda pair: {**pair[1], **pair[0]})


def cdf_world(draw: t.Callable) -> dict:
    match = obj({"target": entity}, {"score": st.floats(0, 1)})
    item = obj({"source": entity}, {"matches": st.lists(match, max_size=3), "matchFrom": entity})
    responses: dict[str, t.Any] = {}
    jobs = draw(st.lists(st.integers(1, 10**12), min_size=1, max_size=3, unique=True))
    for job_id in jobs:
        body = draw(
            obj(
                {"jobId": st.just(job_id), "status": st.just("Completed"), "createdTime": epoch_ms},
                {
                    "startTime": epoch_ms,
                    "statusTime": epoch_ms,
                    "errorMessage": st.text(max_size=8),
                    "items": st.lists(item, max_size=3),
                    "modelId": st.integers(1, 10**9),
                },
            )
        )
        responses[f"/api/v1/projects/p/context/entitymatching/jobs/{job_id}"] = body
    run_match = st.one_of(
        obj({"matchType": st.just("model"), "score": st.floats(0, 1)}, {"source": entity, "target": entity}),
        obj({"matchType": st.just("previously-confirmed")}, {"source": entity, "target": entity}),
    )
    extractor = obj(
        {"entitySet": st.sampled_from(["sources", "targets"]), "extractorType": st.just("regex")},
        {"field": st.just("name"), "pattern": st.just("^(\\d+)$")},
    )
    rule = obj(
        {"priority": st.integers(0, 100)},
        {
            "extractors": st.lists(extractor, max_size=2),
            "conditions": st.lists(
                obj({"conditionType": st.just("equals")}, {"arguments": st.just([[0, 0], [1, 0]])}), max_size=2
            ),
            "matches": st.lists(obj({"source": entity, "target": entity}, {"score": st.floats(0, 1)}), max_size=2),
            "numConflicts": st.integers(0, 5),
            "numOverlaps": st.integers(0, 5),
        },
    )
    suggested = obj(
        {},
        {
            "inputPattern": st.text(max_size=5),
            "predictPattern": st.text(max_size=5),
            "numMatches": st.integers(0, 9),
            "avgScore": st.floats(0, 1),
            "matchIndex": st.lists(st.integers(0, 9), max_size=2),
        },
    )
    runs = draw(st.lists(st.integers(1, 10**12), min_size=1, max_size=2, unique=True))
    summaries = []
    for run_id in runs:
        created = draw(epoch_ms)
        body = draw(
            obj(
                {"jobId": st.just(run_id), "status": st.just("Completed"), "createdTime": st.just(created)},
                {
                    "startTime": epoch_ms,
                    "statusTime": epoch_ms,
                    "errorMessage": st.text(max_size=8),
                    "errors": st.lists(st.text(max_size=6), max_size=2),
                    "matches": st.lists(run_match, max_size=3),
                    "generatedRules": st.lists(rule, max_size=2),
                    "suggestedRules": st.lists(suggested, max_size=2),
                },
            )
        )
        responses[f"/api/v1/projects/p/context/entitymatching/pipelines/7/runs/{run_id}"] = body
        summaries.append({"jobId": run_id, "status": "Completed", "createdTime": created})
    responses["/api/v1/projects/p/context/entitymatching/pipelines/7/runs"] = {"items": summaries, "nextCursor": None}
    return {
        "vendor": "cognite",
        "responses": responses,
        "config": {"project": "p", "entity_matching_jobs": [{"job_id": j} for j in jobs], "pipeline_ids": [7]},
    }


def clavata_world(draw: t.Callable) -> dict:
    review = obj({}, {"outcome": st.sampled_from(["OUTCOME_TRUE", "OUTCOME_FALSE"]), "score": st.floats(0, 1)})
    report = obj(
        {"policyId": uuids},
        {
            "policyKey": st.text(string.ascii_lowercase, min_size=1, max_size=8),
            "policyVersionId": uuids,
            "result": st.sampled_from(["OUTCOME_TRUE", "OUTCOME_FALSE"]),
            "reviewResult": review,
            "threshold": st.floats(0, 1),
            "contentHash": st.just("md5::00ff"),
            "contentMetadata": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
            "labelMatches": st.dictionaries(st.text(min_size=1, max_size=4), st.floats(0, 1), max_size=2),
            "sectionEvaluationReports": st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)}), max_size=2),
            "tokenUsage": st.fixed_dictionaries({"inputTokens": st.integers(0, 999)}),
        },
    )
    result = obj({"report": report, "created": iso}, {"jobUuid": st.none(), "uuid": uuids})
    jobs, listing = {}, []
    for job_uuid in draw(st.lists(uuids, min_size=1, max_size=3, unique=True)):
        job = draw(
            obj(
                {"jobUuid": st.just(job_uuid), "status": st.just("JOB_STATUS_COMPLETED"), "created": iso},
                {
                    "customerId": uuids,
                    "policyId": uuids,
                    "updated": iso,
                    "completed": iso,
                    "threshold": st.floats(0, 1),
                    "contentData": st.lists(st.fixed_dictionaries({"contentHash": st.just("md5::00ff")}), max_size=2),
                    "results": st.lists(result, max_size=3),
                    "metadata": st.fixed_dictionaries({"customerId": uuids}),
                },
            )
        )
        for r in job.get("results") or []:
            r["jobUuid"] = job_uuid
        jobs[f"/v1/jobs/{job_uuid}"] = {"job": job}
        listing.append({"jobUuid": job_uuid, "status": job["status"], "created": job["created"]})
    return {
        "vendor": "clavata",
        "config": {},
        "responses": {"/v1/jobs": {"jobs": listing, "nextPageToken": ""}, **jobs},
    }


def talonic_world(draw: t.Callable) -> dict:
    row = obj(
        {},
        {
            "id": uuids,
            "document_id": uuids,
            "filename": st.text(max_size=8),
            "document_filename": st.text(max_size=8),
            "status": st.sampled_from(["complete", "partial", "failed"]),
            "values": st.dictionaries(st.text(max_size=5), scalars, max_size=3),
            "confidence": st.floats(0, 1),
            "validation_flags": st.lists(st.text(max_size=6), max_size=2)
            | st.lists(st.fixed_dictionaries({"code": st.text(max_size=5)}), max_size=2),
        },
    )
    responses: dict[str, t.Any] = {}
    jobs = []
    for job_id in draw(st.lists(uuids, min_size=1, max_size=3, unique=True)):
        job = draw(
            obj(
                {
                    "id": st.just(job_id),
                    "status": st.sampled_from(["complete", "completed", "failed"]),
                    "created_at": iso,
                },
                {
                    "name": st.text(max_size=8),
                    "document_count": st.integers(0, 9),
                    "total_documents": st.integers(0, 9),
                    "completed_documents": st.integers(0, 9),
                    "progress": st.integers(0, 100),
                    "current_phase": st.just("completed"),
                    "phase": st.just("done"),
                    "schema": st.fixed_dictionaries({"id": uuids, "name": st.text(max_size=5)}),
                    "error": st.fixed_dictionaries({"code": st.text(max_size=5), "message": st.text(max_size=5)}),
                    "started_at": iso,
                    "completed_at": iso,
                    "links": st.fixed_dictionaries({"self": st.just("/v1/jobs/x")}),
                },
            )
        )
        jobs.append(job)
        rows = draw(
            st.lists(row, max_size=3, unique_by=lambda r: r.get("document_id") or r.get("id") or str(uuid.uuid4()))
        )
        responses[f"/v1/jobs/{job_id}/results"] = {"job_id": job_id, "job_status": "complete", "data": rows}
    responses["/v1/jobs"] = {
        "data": jobs,
        "pagination": {"total": len(jobs), "limit": 100, "has_more": False, "next_cursor": None},
    }
    return {"vendor": "talonic", "config": {}, "responses": responses}


@st.composite
def worlds(draw: t.Callable) -> list[dict]:
    return [cdf_world(draw), clavata_world(draw), talonic_world(draw)]


@settings(
    max_examples=5,
    deadline=None,
    phases=[
        Phase.explicit,
        Phase.reuse,
        Phase.generate,
    ],  # no shrinking: each step runs the tap; the report names the fields
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(worlds())
def test_every_non_empty_field_of_any_api_object_is_recoverable(world):
    servers = [ReplayServer(w["responses"]) for w in world]
    try:
        config: dict = {}
        for w, server in zip(world, servers, strict=True):
            config.update(section_config(w["vendor"], server.url, w["config"]))
        run = run_tap(config, timeout=120)
    finally:
        for server in servers:
            server.close()
    assert run.returncode == 0, run.stderr[-2000:]
    assert not invalid_records(run)[:5]
    lost = []
    for w in world:
        lost += CHECKS[w["vendor"]](w["responses"], run)[1]
    assert not lost, "\n".join(lost[:20])


# -- the same property in-process: hundreds of objects per column table, no tap binary ---------------------


TABLES: dict[str, tuple[tuple[Col, ...], bool]] = {
    "talonic job": (talonic.JOB, False),
    "talonic row": (talonic.ROW, False),
    "clavata job": (clavata.JOB, True),
    "clavata report": (clavata.REPORT, True),
    "cdf predict job": (cognite.PREDICT_JOB, False),
    "cdf item": (cognite.ITEM, False),
    "cdf run": (cognite.RUN, False),
    "cdf pipeline match": (cognite.PIPELINE_MATCH, False),
    "cdf suggested rule": (cognite.SUGGESTED_RULE, False),
    "cdf generated rule": (cognite.GENERATED_RULE, False),
}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | iso,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def api_objects(draw: t.Callable, cols: tuple[Col, ...]) -> dict:
    """Any subset of the table's field paths (aliases included), any JSON at each, unknown keys at
    the top and inside every object a dotted path reaches into."""
    obj: dict = draw(unknown)
    for spec in cols:
        for path in spec.paths:
            if not draw(st.booleans()):
                continue
            parent = obj
            for key in path[:-1]:
                nested = parent.get(key)
                if not isinstance(nested, dict):
                    nested = parent[key] = draw(unknown)
                parent = nested
            parent[path[-1]] = draw(json_values)
    return obj


def _leaves(obj: dict, prefix: tuple = ()) -> t.Iterator[tuple[tuple, t.Any]]:
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        elif not isinstance(value, dict):
            yield (*prefix, key), value


def _at(obj: t.Any, path: tuple) -> t.Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return KeyError
        obj = obj[key]
    return obj


@pytest.mark.parametrize("table", sorted(TABLES))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_non_empty_field_is_a_column_or_kept_as_sent(table, data):
    """Nothing a vendor sends is lost: each non-empty leaf is in `extra_fields` at the path it was sent
    with, or a column read it (the column holds a value, or the value means "unset", as 0 ms does)."""
    cols, proto3 = TABLES[table]
    obj = data.draw(api_objects(cols))
    record = build(obj, cols, proto3=proto3)
    extra = record["extra_fields"] or {}
    by_path = {path: spec for spec in cols for path in spec.paths}
    for path, value in _leaves(obj):
        if is_empty(value, proto3) or (proto3 and value in ("", [], {})):
            continue
        if _at(extra, path) == value and type(_at(extra, path)) is type(value):
            continue
        # Another spelling of a column (an alias after the first) is kept as sent even when it fills the column.
        assert not any(path in spec.paths[1:] for spec in cols), f"{table}: alias {path}={value!r} not kept as sent"
        read = False
        for size in range(1, len(path) + 1):
            spec = by_path.get(path[:size])
            if spec is None:
                continue
            sent = _at(obj, path[:size])
            if record[spec.column] is not None:
                read = True
            else:
                with contextlib.suppress(Exception):  # the converter refused it: not read by this column
                    read = read or spec.convert(sent) is None
        assert read, f"{table}: {path}={value!r} is neither a column nor in extra_fields {extra!r}"
    assert not extra or all(not is_empty(v, proto3) for v in extra.values())
