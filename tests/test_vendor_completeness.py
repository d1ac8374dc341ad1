"""Every property of every response object in the vendors' own published schemas has a declared destination: a
column (the tap's field maps, or a property its stream schema declares inside a typed object or array column), a
child stream, or a documented decision to keep it in extra_fields (KEPT_AS_SENT in the source module, listed in the
docs). The specs are reduced copies in tests/fixtures/specs, each citing repository, path and commit. A property the
vendor adds to its schema fails here until someone decides where it lands."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from tap_jobresults.records import Col, items_of
from tap_jobresults.sources import clavata, cognite, talonic
from tap_jobresults.streams import load_schema

SPECS = Path(__file__).parent / "fixtures" / "specs"
DOCS = Path(__file__).parent.parent / "docs" / "reference.md"

# root object of a vendor spec -> (stream, the tap's field map, child streams by API field)
ROOTS: dict[str, dict[str, tuple[str, t.Sequence[Col], dict[str, str]]]] = {
    "clavata_messages": {
        "clavata_jobs": ("clavata_jobs", clavata.JOB, {"results": "clavata_reports"}),
        "clavata_reports": ("clavata_reports", clavata.REPORT, {}),
    },
    "talonic_models": {
        "extraction_jobs": ("extraction_jobs", talonic.JOB, {}),
        "extraction_jobs node": ("extraction_jobs", talonic.JOB, {}),
        "extraction_jobs results": (
            "extraction_jobs",
            tuple(talonic.col(column, path) for path, column in talonic.ENVELOPE_COLUMNS.items()),
            {"data": "extraction_rows"},
        ),
        "extraction_rows": ("extraction_rows", talonic.ROW, {}),
        "extraction_rows node": ("extraction_rows", talonic.ROW, {}),
    },
    "cognite_entity_matching": {
        "entity_matching_jobs": ("entity_matching_jobs", cognite.PREDICT_JOB, {"items": "match_results"}),
        "match_results": ("match_results", cognite.ITEM, {}),
        "pipeline_runs": (
            "pipeline_runs",
            cognite.RUN,
            {"matches": "pipeline_matches", "suggestedRules": "suggested_rules", "generatedRules": "generated_rules"},
        ),
        "pipeline_matches": ("pipeline_matches", cognite.PIPELINE_MATCH, {}),
        "suggested_rules": ("suggested_rules", cognite.SUGGESTED_RULE, {}),
        "generated_rules": ("generated_rules", cognite.GENERATED_RULE, {}),
    },
}
KEPT_AS_SENT = {"clavata_messages": clavata.KEPT_AS_SENT, "talonic_models": talonic.KEPT_AS_SENT}
# Envelope messages: protocol, not data (paging and wrapping).
ENVELOPES = {"ListJobsResponse": {"jobs", "nextPageToken"}, "GetJobResponse": {"job"}}


def load(name: str) -> dict:
    spec = json.loads((SPECS / f"{name}.json").read_text())
    assert spec["_source"] and all(s.get("path") or s.get("docs") for s in spec["_source"]), f"{name} cites no source"
    return spec


def _in_schema(schema: dict, sub: tuple[str, ...]) -> bool:
    """Does the column's JSON schema declare this sub-path (through object properties and array items)?"""
    node = schema
    for key in sub:
        while items_of(node) is not None and "properties" not in node:
            node = items_of(node)
        props = node.get("properties") or {}
        if key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), dict):  # a typed map: any key
            node = node["additionalProperties"]
        else:
            return False
    return True


def destination(
    stream: str, cols: t.Sequence[Col], children: dict, path: tuple[str, ...], decided: str | None
) -> str | None:
    """Where the field at `path` (API path in the stream's source object) lands; None when undecided."""
    if len(path) == 1 and path[0] in children:
        return f"stream {children[path[0]]}"
    schema = load_schema(stream)["properties"]
    for spec in cols:
        for sent in spec.paths:
            if sent == path:
                return f"column {spec.column}"
            if path[: len(sent)] == sent and _in_schema(schema[spec.column], path[len(sent) :]):
                return f"column {spec.column}, declared sub-field {'.'.join(path[len(sent) :])}"
    if any(sent[: len(path)] == path for spec in cols for sent in spec.paths):
        return "sub-fields in columns"
    return f"extra_fields ({decided})" if decided else None


def walk(spec: dict, decisions: dict, name: str, root: tuple, obj: str, prefix: tuple[str, ...] = ()) -> t.Iterator:
    """(spec property, destination or None) for every property of `obj` and the objects inside it."""
    stream, cols, children = root
    for prop, info in spec["objects"][obj]["properties"].items():
        path = (*prefix, prop)
        key = f"{obj}.{prop}"
        decided = decisions.get(key)
        where = destination(stream, cols, children if not prefix else {}, path, decided)
        yield f"{name}:{key} ({'.'.join(path)})", where
        if where is None or where.startswith(("stream", "extra_fields")):
            continue
        inner = info.get("object") or (info.get("items") or {}).get("object")
        if inner:
            yield from walk(spec, decisions, name, root, inner, path)


def results(name: str, spec: dict | None = None) -> list[tuple[str, str | None]]:
    spec = spec or load(name)
    decisions = KEPT_AS_SENT.get(name, {})
    found = []
    for root_name, root in ROOTS[name].items():
        found += list(walk(spec, decisions, name, root, spec["roots"][root_name]))
    return found


@pytest.mark.parametrize("name", sorted(ROOTS))
def test_every_property_in_the_vendor_spec_has_a_declared_destination(name):
    found = results(name)
    assert len(found) > 10
    undecided = [prop for prop, where in found if where is None]
    assert not undecided, "properties with no column and no documented decision:\n" + "\n".join(undecided)


@pytest.mark.parametrize("name", sorted(ROOTS))
def test_every_object_of_the_spec_is_reached(name):
    spec = load(name)
    reached = {prop.split(":")[1].rsplit(".", 1)[0] for prop, _ in results(name)}
    unreached = set(spec["objects"]) - reached - set(ENVELOPES)
    # objects only inside fields kept whole in extra_fields are not walked (their parent is the decision)
    inside_kept = {
        (info.get("object") or (info.get("items") or {}).get("object") or (info.get("values")))
        for obj in spec["objects"].values()
        for prop, info in obj["properties"].items()
    }
    assert unreached <= inside_kept, unreached


def test_envelopes_hold_only_protocol_fields():
    spec = load("clavata_messages")
    for envelope, fields in ENVELOPES.items():
        assert set(spec["objects"][envelope]["properties"]) == fields


def test_the_typed_columns_declare_what_the_spec_documents():
    """The documented sub-fields are declared properties (so flattening gives columns), not just 'somewhere'."""
    found = dict(results("clavata_messages") + results("talonic_models") + results("cognite_entity_matching"))
    for prop in (
        "clavata_messages:PolicyEvaluationReport.TokenUsage.billedTokens (report.tokenUsage.billedTokens)",
        "clavata_messages:PolicyEvaluationReport.ReviewResult.outcome (report.exceptionEvaluationReport.reviewResult.outcome)",
        "talonic_models:GridStats.fill_rate (grid_stats.fill_rate)",
        "talonic_models:Error1.code (error.code)",
        "cognite_entity_matching:Extractor.pattern (extractors.pattern)",
        "cognite_entity_matching:RuleMatch.consistentMatch (matches.consistentMatch)",
    ):
        assert found[prop] and found[prop].startswith("column"), (prop, found.get(prop))


def test_a_property_the_vendor_adds_fails_the_check():
    for name, obj in (
        ("clavata_messages", "PolicyEvaluationReport.TokenUsage"),
        ("talonic_models", "JobResultsResponse"),
        ("cognite_entity_matching", "GeneratedRule"),
    ):
        spec = load(name)
        spec["objects"][obj]["properties"]["addedNextMonth"] = {"type": "string"}
        undecided = [prop for prop, where in results(name, spec) if where is None]
        assert len(undecided) == 1 and "addedNextMonth" in undecided[0], undecided


def test_every_decision_is_documented():
    text = DOCS.read_text()
    for decisions in KEPT_AS_SENT.values():
        for key in decisions:
            assert f"`{key}`" in text, f"{key} is kept in extra_fields by decision but not documented in {DOCS.name}"


def test_every_decision_is_about_a_property_the_spec_has():
    for name, decisions in KEPT_AS_SENT.items():
        spec = load(name)
        for key in decisions:
            obj, prop = key.rsplit(".", 1)
            assert prop in spec["objects"][obj]["properties"], key
