"""Nothing the vendors send is lost: a check, written from the contract, of which emitted record carries each
field of a vendor object (a column, or `extra_fields` keyed as sent).

The API field -> column maps here are the tests' own reading of the contract (shared/contract.md) and of the
vendors' documents; they deliberately do not import the tap's field maps. A field counts as recoverable when
  - a mapped column holds the same value (timestamps compared as instants: CDF ms epochs, 9-digit RFC 3339), or
  - `extra_fields` holds it under the key the API used (at the top, or under its parent key for nested reports), or
  - a column named as the snake_case of the API key holds it (so a column the lead adds for a field, e.g.
    `model_id` for `modelId`, also counts).
Values that are empty (None, "", [], {}, a protobuf zero timestamp) carry no information and are not required.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import typing as t
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema

ZERO_TIMES = {"1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z"}


# -- field maps --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Col:
    """The field lands in one of these columns; `kind` says how values compare."""

    names: tuple[str, ...]
    kind: str = "same"  # same | time | fraction | an enum's full name (clavata.shared.v1.Outcome)
    strict: bool = False  # the column must not contradict the value sent (even if extra_fields keeps it)


@dataclasses.dataclass(frozen=True)
class Sub:
    """A nested object whose own fields land in columns (e.g. Talonic `schema.id` -> `schema_id`)."""

    spec: dict
    whole: tuple[str, ...] = ()  # or the whole object in one of these columns


CHILDREN = "children"  # carried by child records, checked on its own


def col(*names: str, kind: str = "same", strict: bool = False) -> Col:
    return Col(names, kind, strict)


def ts(*names: str) -> Col:
    return Col(names, "time")


# The vendor's enum numbering, from the vendor's descriptors (tests/fixtures/specs/clavata_enums.json, sources cited
# there): a number sent lands as its name.
ENUM_FACTS = {
    full: {number: name for name, number in values.items()}
    for full, values in json.loads((Path(__file__).parent / "fixtures" / "specs" / "clavata_enums.json").read_text())[
        "enums"
    ].items()
}
OUTCOME, JOB_STATUS, JOB_TYPE = (f"clavata.shared.v1.{n}" for n in ("Outcome", "JobStatus", "JobType"))


PREDICT_JOB = {
    "jobId": col("job_id"),
    "status": col("status"),
    "createdTime": ts("created_time"),
    "startTime": ts("start_time"),
    "statusTime": ts("status_time"),
    "errorMessage": col("error_message"),
    "items": CHILDREN,
}
PREDICT_ITEM = {"source": col("source"), "matches": col("matches")}
RUN = {
    "jobId": col("run_id"),
    "status": col("status"),
    "createdTime": ts("created_time"),
    "startTime": ts("start_time"),
    "statusTime": ts("status_time"),
    "errorMessage": col("error_message"),
    "errors": col("errors"),
    "matches": CHILDREN,
    "suggestedRules": CHILDREN,
    "generatedRules": CHILDREN,
}
RUN_MATCH = {"matchType": col("match_type"), "score": col("score"), "source": col("source"), "target": col("target")}
SUGGESTED_RULE = {
    "inputPattern": col("input_pattern"),
    "predictPattern": col("predict_pattern"),
    "numMatches": col("num_matches"),
    "avgScore": col("avg_score"),
    "matchIndex": col("match_index"),
    "matches": col("matches"),
}
GENERATED_RULE = {
    "extractors": col("extractors"),
    "conditions": col("conditions"),
    "priority": col("priority"),
    "matches": col("matches"),
    "numConflicts": col("num_conflicts"),
    "numOverlaps": col("num_overlaps"),
}
CLAVATA_JOB = {
    "jobUuid": col("job_uuid"),
    "status": col("status", kind=JOB_STATUS, strict=True),
    "customerId": col("customer_id"),
    "policyId": col("policy_id"),
    "policyVersionId": col("policy_version_id"),
    "labelId": col("label_id"),
    "labelVersionId": col("label_version_id"),
    "jobType": col("job_type", kind=JOB_TYPE, strict=True),
    "threshold": col("threshold"),
    "created": ts("created"),
    "updated": ts("updated"),
    "completed": ts("completed"),
    "contentData": col("content_data"),
    "results": CHILDREN,
}
CLAVATA_REPORT = {
    "policyId": col("policy_id"),
    "policyKey": col("policy_key"),
    "policyVersionId": col("policy_version_id"),
    "labelId": col("label_id"),
    "labelVersionId": col("label_version_id"),
    "result": col("outcome", kind=OUTCOME),  # deprecated; the outcome when reviewResult is missing
    "reviewResult": Sub({"outcome": col("outcome", kind=OUTCOME, strict=True), "score": col("score")}),
    "threshold": col("threshold"),
    "labelMatches": col("label_matches"),
    "sectionEvaluationReports": col("section_evaluation_reports"),
    "exceptionEvaluationReport": col("exception_evaluation_report"),
    "tokenUsage": col("token_usage"),
    "contentMetadata": col("content_metadata"),
    "contentHash": col("content_hash"),
}
CLAVATA_RESULT = {
    "jobUuid": col("job_uuid"),
    "contentHash": col("content_hash"),
    "created": ts("created"),
    "report": Sub(CLAVATA_REPORT),
}
TALONIC_JOB = {
    "id": col("job_id"),
    "status": col("status"),
    "name": col("name"),
    "schema": Sub({"id": col("schema_id"), "name": col("schema_name")}),
    "document_count": col("document_count"),
    "total_documents": col("document_count"),  # Node SDK spelling
    "completed_documents": col("completed_documents"),
    "progress": col("progress", kind="fraction"),  # 0-100 (docs) or 0-1 (older draft)
    "current_phase": col("current_phase"),
    "phase": col("current_phase"),  # older draft spelling
    "grid_stats": col("grid_stats"),
    "error": Sub({"code": col("error_code"), "message": col("error_message")}, whole=("error",)),
    "created_at": ts("created_at"),
    "started_at": ts("started_at"),
    "completed_at": ts("completed_at"),
}
TALONIC_RESULTS = {  # the results body around `data`: the job's record carries it (extra_fields under `results`)
    "job_id": col("job_id"),
    "schema": Sub({"id": col("schema_id"), "name": col("schema_name")}),
    "total_rows": col("total_rows"),
    "data": CHILDREN,
}
TALONIC_ROW = {
    "id": col("id"),
    "document_id": col("document_id"),
    "filename": col("filename"),
    "document_filename": col("filename"),  # Node SDK spelling
    "status": col("status"),
    "values": col("values"),
    "confidence": col("confidence"),
    "validation_flags": col("validation_flags"),
}


# -- comparing -----------------------------------------------------------------------------------------------------


def empty(value: t.Any) -> bool:
    return (
        value is None or value == "" or value == [] or value == {} or (isinstance(value, str) and value in ZERO_TIMES)
    )


def instant(value: t.Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, timezone.utc)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # Python reads 6 fractional digits; RFC 3339 allows 9
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


def finer_than_micros(sent: t.Any) -> bool:
    found = re.search(r"\d{2}:\d{2}:\d{2}[.,](\d+)", sent) if isinstance(sent, str) else None
    return bool(found and found[1][6:].strip("0"))


def same(sent: t.Any, emitted: t.Any, kind: str = "same") -> bool:
    if kind == "time":
        # A column holds microseconds: a string with finer digits is recoverable only as sent (extra_fields).
        a, b = instant(sent), instant(emitted)
        return a is not None and a == b and not finer_than_micros(sent)
    if kind in ENUM_FACTS and isinstance(sent, int) and not isinstance(sent, bool):
        return emitted == ENUM_FACTS[kind].get(sent, object())
    if kind == "fraction" and isinstance(sent, (int, float)) and isinstance(emitted, (int, float)):
        return any(abs(emitted - x) < 1e-9 for x in (sent, sent * 100, sent / 100))
    return json.dumps(sent, sort_keys=True) == json.dumps(emitted, sort_keys=True) or (
        isinstance(sent, (int, float)) and isinstance(emitted, (int, float)) and sent == emitted
    )


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def lost_fields(obj: dict, record: dict, spec: dict, path: tuple[str, ...] = ()) -> list[str]:
    """The fields of `obj` (an API object) that `record` (its emitted record) does not carry."""
    extra = record.get("extra_fields") if isinstance(record.get("extra_fields"), dict) else {}
    lost = []
    for key, value in obj.items():
        if empty(value):
            continue
        where = ".".join((*path, key))
        rule = spec.get(key)
        if rule == CHILDREN:
            continue
        if isinstance(rule, Col) and rule.strict:
            contradicted = [
                n for n in rule.names if record.get(n) is not None and not same(value, record[n], rule.kind)
            ]
            if contradicted:  # e.g. an enum number decoded by the wrong table: the column says the opposite
                lost.append(f"{where}={json.dumps(value)} altered: {contradicted[0]}={record[contradicted[0]]!r}")
                continue
        in_extra = key in extra and same(value, extra[key])
        nested = extra
        for step in path:  # nested reports may keep their unknown fields under their parent's key
            nested = nested.get(step) if isinstance(nested, dict) else None
        in_extra = in_extra or (isinstance(nested, dict) and key in nested and same(value, nested[key]))
        if in_extra:
            continue
        if isinstance(rule, Sub):
            if any(name in record and same(value, record[name]) for name in rule.whole):
                continue
            if isinstance(value, dict):
                lost += lost_fields(value, record, rule.spec, (*path, key))
                continue
        if isinstance(rule, Col) and any(
            name in record and same(value, record[name], rule.kind) for name in rule.names
        ):
            continue
        if isinstance(rule, Col) and isinstance(value, dict):
            # A typed object column holds the declared sub-fields; the others are in extra_fields under the key.
            holders = [record[name] for name in rule.names if isinstance(record.get(name), dict)]
            sub_extra = nested.get(key) if isinstance(nested, dict) else None
            missing = covered(value, holders[0] if holders else {}, sub_extra if isinstance(sub_extra, dict) else {})
            if holders and not missing:
                continue
            if holders:
                lost += [f"{where}.{m}" for m in missing]
                continue
        if snake(key) in record and same(value, record[snake(key)]):
            continue
        lost.append(f"{where}={json.dumps(value)[:80]}")
    return lost


def covered(sent: dict, column: dict, extra: dict, path: tuple[str, ...] = ()) -> list[str]:
    """The sub-fields of `sent` that neither the object column nor `extra_fields` (at the same path) holds."""
    missing = []
    for key, value in sent.items():
        if empty(value):
            continue
        here, kept = column.get(key), extra.get(key)
        if same(value, here) or same(value, kept):
            continue
        if isinstance(value, dict):
            missing += covered(
                value,
                here if isinstance(here, dict) else {},
                kept if isinstance(kept, dict) else {},
                (*path, key),
            )
            continue
        if isinstance(value, int) and any(same(value, here, kind) for kind in ENUM_FACTS) and kept == value:
            continue  # an enum number decoded in the column, and kept as sent
        missing.append(f"{'.'.join((*path, key))}={json.dumps(value)[:60]}")
    return missing


def validators(run: t.Any) -> dict[str, jsonschema.Draft7Validator]:
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    assert "date-time" in checker.checkers, "rfc3339-validator is not installed: date-time formats go unchecked"
    return {s: jsonschema.Draft7Validator(m["schema"], format_checker=checker) for s, m in run.schemas().items()}


def invalid_records(run: t.Any) -> list[str]:
    checks = validators(run)
    problems = []
    for message in run.messages:
        if message["type"] == "RECORD":
            for error in checks[message["stream"]].iter_errors(message["record"]):
                problems.append(f"{message['stream']}: {'/'.join(map(str, error.path))}: {error.message}")
    return problems


# -- what each vendor's objects are, and which records carry them -----------------------------------------------


def _one(records: list[dict], **keys: t.Any) -> dict | None:
    found = [r for r in records if all(r.get(k) == v for k, v in keys.items())]
    assert len(found) <= 1, f"{len(found)} records for {keys}"
    return found[0] if found else None


def check_cognite(responses: dict, run: t.Any) -> tuple[int, list[str]]:
    """Every predict job, item, run, match and rule in `responses` -> (objects checked, fields lost)."""
    checked, lost = 0, []
    for path, body in responses.items():
        if m := re.search(r"/entitymatching/jobs/(\d+)$", path):
            record = _one(run.records("entity_matching_jobs"), job_id=body["jobId"])
            assert record is not None, f"no record for predict job {m[1]}"
            checked += 1
            lost += [f"predict job {body['jobId']}: {f}" for f in lost_fields(body, record, PREDICT_JOB)]
            finished = body.get("status") in ("Completed", "Failed")  # terminal: the item count is known (0 if failed)
            items = body.get("items") or [] if finished else []
            assert record["item_count"] == (len(items) if finished else None)
            for index, item in enumerate(items):
                row = _one(run.records("match_results"), job_id=body["jobId"], item_index=index)
                assert row is not None, f"no match_results row {index} of job {body['jobId']}"
                checked += 1
                lost += [f"job {body['jobId']} item {index}: {f}" for f in lost_fields(item, row, PREDICT_ITEM)]
            emitted = [r for r in run.records("match_results") if r["job_id"] == body["jobId"]]
            assert len(emitted) == len(items), f"job {body['jobId']}: {len(emitted)} rows for {len(items)} items"
        elif m := re.search(r"/pipelines/(\d+)/runs$", path):
            pid = int(m[1])
            for summary in body["items"]:
                run_path = f"{path}/{summary['jobId']}"
                finished = summary["status"] in ("Completed", "Failed")
                obj = responses[run_path] if finished else summary
                record = _one(run.records("pipeline_runs"), pipeline_id=pid, run_id=summary["jobId"])
                assert record is not None, f"no record for run {summary['jobId']}"
                checked += 1
                lost += [f"run {summary['jobId']}: {f}" for f in lost_fields(obj, record, RUN)]
                if not finished:
                    continue
                for field, stream, spec in (
                    ("matches", "pipeline_matches", RUN_MATCH),
                    ("suggestedRules", "suggested_rules", SUGGESTED_RULE),
                    ("generatedRules", "generated_rules", GENERATED_RULE),
                ):
                    children = obj.get(field) or []
                    index_name = "match_index" if stream == "pipeline_matches" else "rule_index"
                    emitted = [r for r in run.records(stream) if (r["pipeline_id"], r["run_id"]) == (pid, obj["jobId"])]
                    assert len(emitted) == len(children), f"run {obj['jobId']}: {len(emitted)} {stream}"
                    for index, child in enumerate(children):
                        row = _one(emitted, **{index_name: index})
                        assert row is not None, f"no {stream} row {index} of run {obj['jobId']}"
                        checked += 1
                        lost += [f"run {obj['jobId']} {field}[{index}]: {f}" for f in lost_fields(child, row, spec)]
    return checked, lost


def check_clavata(responses: dict, run: t.Any) -> tuple[int, list[str]]:
    checked, lost = 0, []
    for summary in responses["/v1/jobs"]["jobs"]:
        uuid = summary["jobUuid"]
        status = ENUM_FACTS[JOB_STATUS].get(summary["status"], summary["status"])  # a number, as the vendor numbers it
        finished = status in ("JOB_STATUS_COMPLETED", "JOB_STATUS_FAILED", "JOB_STATUS_CANCELED")
        job = responses[f"/v1/jobs/{uuid}"]["job"] if finished else summary
        record = _one(run.records("clavata_jobs"), job_uuid=uuid)
        assert record is not None, f"no record for Clavata job {uuid}"
        checked += 1
        lost += [f"job {uuid}: {f}" for f in lost_fields(job, record, CLAVATA_JOB)]
        results = (job.get("results") or []) if finished else []
        emitted = [r for r in run.records("clavata_reports") if r["job_uuid"] == uuid]
        assert len(emitted) == len(results)
        for index, result in enumerate(results):
            row = _one(emitted, result_index=index)
            assert row is not None
            checked += 1
            lost += [f"job {uuid} results[{index}]: {f}" for f in lost_fields(result, row, CLAVATA_RESULT)]
    return checked, lost


def check_talonic(responses: dict, run: t.Any) -> tuple[int, list[str]]:
    checked, lost = 0, []
    for job in responses["/v1/jobs"]["data"]:
        record = _one(run.records("extraction_jobs"), job_id=job["id"])
        assert record is not None, f"no record for Talonic job {job['id']}"
        checked += 1
        lost += [f"job {job['id']}: {f}" for f in lost_fields(job, record, TALONIC_JOB)]
        results = responses.get(f"/v1/jobs/{job['id']}/results") or {}
        if results and job.get("status") not in ("pending", "queued"):
            checked += 1
            envelope_view = {**record, "extra_fields": (record.get("extra_fields") or {}).get("results")}
            lost += [f"job {job['id']} results: {f}" for f in lost_fields(results, envelope_view, TALONIC_RESULTS)]
        rows = results.get("data") or []
        emitted = [r for r in run.records("extraction_rows") if r["job_id"] == job["id"]]
        assert len(emitted) == len(rows), f"job {job['id']}: {len(emitted)} records for {len(rows)} rows"
        assert len({r["id"] for r in emitted}) == len(emitted), "row ids are not unique"
        unclaimed = list(emitted)
        for index, row in enumerate(rows):  # by id, else document_id, else what is left in order
            key = {"id": row["id"]} if row.get("id") else {"document_id": row.get("document_id")}
            record_row = _one(unclaimed, **key) if row.get("id") or row.get("document_id") else None
            if record_row is None and not row.get("id") and not row.get("document_id"):
                record_row = next((r for r in unclaimed if r.get("document_id") is None), None)
            assert record_row is not None, f"job {job['id']}: no record for row {index} {row}"
            unclaimed.remove(record_row)
            checked += 1
            lost += [f"job {job['id']} data[{index}]: {f}" for f in lost_fields(row, record_row, TALONIC_ROW)]
    return checked, lost


CHECKS = {"cognite": check_cognite, "clavata": check_clavata, "talonic": check_talonic}


# -- serving recorded bodies -------------------------------------------------------------------------------------


class ReplayServer:
    """A loopback server that answers GET <path> (any query) with the body recorded for that path."""

    def __init__(self, responses: dict[str, t.Any]) -> None:
        self.responses = responses
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                owner.requests.append(path)
                status, body = (200, owner.responses[path]) if path in owner.responses else (404, {"message": "no"})
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.close()


def section_config(vendor: str, url: str, extra: dict) -> dict:
    credentials = {"cognite": {"token": "replay-token-0123456789"}}.get(vendor, {"api_key": "replay-key-0123456789"})
    return {vendor: {"base_url": url, **credentials, **extra}}
