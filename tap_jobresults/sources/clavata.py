"""Clavata content-policy evaluation jobs, over the REST gateway (grpc-gateway in front of gRPC).

JSON names are the proto JSON names (camelCase). The gateway may send every field (protojson
`EmitUnpopulated`: "" / [] / null) or leave zero values out; both mean "not set", and an unset
timestamp reads 1970-01-01T00:00:00Z. Fields no column carries (INTERNAL ones included) are kept
in `extra_fields` when they hold a value.
"""

from __future__ import annotations

import typing as t

from tap_jobresults.errors import MalformedPayload
from tap_jobresults.lifecycle import FetchedJob, JobKey, JobRef
from tap_jobresults.records import Partial, Unfit, build, col, to_num, to_str, to_ts, typed
from tap_jobresults.sources.base import JobSource, Listing, created_of, objects, path_id, require, same_job
from tap_jobresults.streams import JobStream, ResultStream, load_schema

TERMINAL = frozenset({"JOB_STATUS_COMPLETED", "JOB_STATUS_FAILED", "JOB_STATUS_CANCELED"})
PAGE_SIZE = 500

# Every enum the tap decodes, numbered as the vendor's descriptors number them (clavataai/gosdk
# internal/protobufs/shared/v1/public.pb.go `*_name` maps; JobType from clavata-sdk 1.1.0's
# public_pb2 descriptor). The gateway sends names by default and numbers when configured to
# (protojson UseEnumNumbers); tests/fixtures/specs/clavata_enums.json holds the vendor's facts.
ENUMS: dict[str, dict[int, str]] = {
    "clavata.shared.v1.JobStatus": {
        0: "JOB_STATUS_UNSPECIFIED",
        1: "JOB_STATUS_PENDING",
        2: "JOB_STATUS_RUNNING",
        3: "JOB_STATUS_COMPLETED",
        4: "JOB_STATUS_FAILED",
        5: "JOB_STATUS_CANCELED",
    },
    "clavata.shared.v1.Outcome": {
        0: "OUTCOME_UNSPECIFIED",
        1: "OUTCOME_FALSE",
        2: "OUTCOME_TRUE",
        3: "OUTCOME_FAILED",
    },
    "clavata.shared.v1.JobType": {
        0: "JOB_TYPE_UNSPECIFIED",
        1: "JOB_TYPE_STANDARD",
        2: "JOB_TYPE_BATCH",
        3: "JOB_TYPE_FREE",
        4: "JOB_TYPE_TEST",
    },
}


def enum(full_name: str) -> t.Callable[[t.Any], t.Any]:
    """A proto enum as its name. A number is decoded by the vendor's table; the column gets the
    name and `extra_fields` keeps the number as sent. A number the table lacks (a value the
    vendor added since) does not fit: the column stays unset and the number is kept as sent."""
    names = ENUMS[full_name]

    def convert(value: t.Any) -> t.Any:
        if value is None:  # inside a typed object (a column's own null never reaches a converter): unset
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value in names:
                return Partial(names[value], value)
            raise Unfit
        if isinstance(value, str):
            return value or None
        raise Unfit

    return convert


def decode(full_name: str, value: t.Any) -> t.Any:
    """An enum value as its name (the name as sent, a known number decoded, else as sent)."""
    try:
        converted = enum(full_name)(value)
    except Unfit:
        return value
    return converted.value if isinstance(converted, Partial) else converted


# Fields of the vendor's messages (tests/fixtures/specs/clavata_messages.json) that no column declares:
# kept in extra_fields as sent (on their object's record; inside an array column's items, in the column
# as sent), by decision. Keyed by the message and the field's JSON name.
KEPT_AS_SENT = {
    "Job.metadata": "INTERNAL (customerId, threshold: both have columns on the job)",
    "Job.policyDraftId": "INTERNAL",
    "Job.labelDraftId": "INTERNAL",
    "ContentData.text": "INPUT_ONLY: never returned",
    "ContentData.image": "INPUT_ONLY: never returned",
    "ContentData.imageUrl": "INPUT_ONLY: never returned",
    "ContentData.video": "INPUT_ONLY (PREVIEW): never returned",
    "ContentData.audioUrl": "INPUT_ONLY (PREVIEW): never returned",
    "ContentData.labels": "INTERNAL",
    "ContentData.contentType": "INTERNAL",
    "JobResult.uuid": "INTERNAL",
    "PolicyEvaluationReport.name": "INTERNAL, deprecated",
    "PolicyEvaluationReport.featureReports": "INTERNAL",
    "PolicyEvaluationReport.internals": "INTERNAL",
    "PolicyEvaluationReport.SectionEvaluationReport.sourceRange": "INTERNAL",
    "PolicyEvaluationReport.AssertionEvaluationReport.sourceRange": "INTERNAL",
    "PolicyEvaluationReport.ExceptionEvaluationReport.sourceRange": "INTERNAL",
}

JOB_STATUS = enum("clavata.shared.v1.JobStatus")
OUTCOME = enum("clavata.shared.v1.Outcome")
JOB_TYPE = enum("clavata.shared.v1.JobType")
JOBS_SCHEMA = load_schema("clavata_jobs")["properties"]
REPORTS_SCHEMA = load_schema("clavata_reports")["properties"]
# Outcomes inside a typed object column are decoded too (the number is kept in extra_fields).
EXCEPTION_REPORT_ENUMS = {("result",): OUTCOME, ("reviewResult", "outcome"): OUTCOME}


def text(value: t.Any) -> str | None:
    """A proto string: "" is unset."""
    return to_str(value) or None


JOB = (
    col("job_uuid", "jobUuid", convert=text),
    col("status", "status", convert=JOB_STATUS, default="JOB_STATUS_UNSPECIFIED"),
    col("customer_id", "customerId", convert=text),
    col("policy_id", "policyId", convert=text),
    col("policy_version_id", "policyVersionId", convert=text),
    col("label_id", "labelId", convert=text),
    col("label_version_id", "labelVersionId", convert=text),
    col("job_type", "jobType", convert=JOB_TYPE),
    col("threshold", "threshold", convert=to_num, default=0.0),
    col("created", "created", convert=to_ts),
    col("updated", "updated", convert=to_ts),
    col("completed", "completed", convert=to_ts),
    col("content_data", "contentData", convert=typed(JOBS_SCHEMA["content_data"]), default=[]),
)

REPORT = (
    col("content_hash", "report.contentHash", "contentHash", convert=text),
    col("policy_id", "report.policyId", convert=text),
    col("policy_key", "report.policyKey", convert=text),
    col("policy_version_id", "report.policyVersionId", convert=text),
    col("label_id", "report.labelId", convert=text),
    col("label_version_id", "report.labelVersionId", convert=text),
    # reviewResult.outcome, else the deprecated `result` (older reports, or an outcome proto3 left out)
    col("outcome", "report.reviewResult.outcome", "report.result", convert=OUTCOME),
    col("score", "report.reviewResult.score", convert=to_num),
    col("threshold", "report.threshold", convert=to_num, default=0.0),
    col("label_matches", "report.labelMatches", convert=typed(REPORTS_SCHEMA["label_matches"]), default={}),
    col(
        "section_evaluation_reports",
        "report.sectionEvaluationReports",
        convert=typed(REPORTS_SCHEMA["section_evaluation_reports"]),
        default=[],
    ),
    col(
        "exception_evaluation_report",
        "report.exceptionEvaluationReport",
        convert=typed(REPORTS_SCHEMA["exception_evaluation_report"], EXCEPTION_REPORT_ENUMS),
    ),
    col("token_usage", "report.tokenUsage", convert=typed(REPORTS_SCHEMA["token_usage"])),
    col("content_metadata", "report.contentMetadata", convert=typed(REPORTS_SCHEMA["content_metadata"]), default={}),
    col("created", "created", convert=to_ts),
    col("job_uuid", "jobUuid", convert=text),
)


class ClavataJobs(JobSource):
    name = "clavata"
    setting = "clavata"
    terminal_statuses = TERMINAL

    def label(self, partition: str, job_id: str) -> str:
        return f"Clavata job {job_id}"

    def list_label(self, partition: str) -> str:
        return "listing Clavata jobs"

    def partitions(self) -> list[str]:
        # A bookmark taken under one policy filter says nothing about another policy's jobs.
        policy = self.section.get("policy_id")
        return [f"policy:{policy}" if policy else "all"]

    def walk(self, partition: str, listing: Listing, *, full: bool = False) -> None:
        what = self.list_label(partition)
        params: dict[str, t.Any] = {"pageSize": PAGE_SIZE}
        floor = listing.floor if not full else None
        if floor is not None and floor.created:
            # Filtered on creation time from the bookmark's floor (the lookback window's start, or
            # the oldest pending job); everything above it is deduped against the bookmark.
            params["query.createdTimeRange.start"] = floor.created
            params["query.createdTimeRange.inclusive"] = "true"
        if self.section.get("policy_id"):
            params["query.policyId"] = self.section["policy_id"]

        def page(token: str | None) -> tuple[list, str | None]:
            query = {**params, "pageToken": token} if token else params
            body = self.client.get_json("/v1/jobs", what, params=query)
            if not isinstance(body, dict):
                raise MalformedPayload("clavata", what, f"expected a JSON object, got {type(body).__name__}")
            # protojson leaves an empty `jobs` out, so {} is an empty page; a body with an error's fields is not
            if "jobs" not in body and {"code", "message", "error"} & body.keys():
                error = body["error"] if isinstance(body.get("error"), dict) else body
                raise MalformedPayload(
                    "clavata", what, f"an error body with HTTP 200 ({str(error.get('message'))[:200]})"
                )
            next_token = body.get("nextPageToken")
            return objects("clavata", what, body, "jobs"), next_token  # JobSource.pages refuses one not a string

        for jobs in self.pages(what, page):
            for summary in jobs:
                job_uuid = require("clavata", what, summary, "jobUuid", str)
                listing.offer(JobKey(created_of(summary.get("created")), job_uuid), summary)

    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        what = ref.label
        summary = ref.summary
        if summary is not None and not self.is_finished(
            decode("clavata.shared.v1.JobStatus", summary.get("status") or 0)
        ):
            job = summary  # "Incomplete jobs will only include basic information" anyway
            has_results = False
        else:
            body = self.client.get_json(f"/v1/jobs/{path_id(ref.key.id)}", what)
            job = require("clavata", what, body, "job", dict)
            has_results = True
        results = objects("clavata", what, job, "results")
        for index, result in enumerate(results):
            report = result.get("report")
            if report is not None and not isinstance(report, dict):
                raise MalformedPayload("clavata", f"{what} results[{index}]", "field 'report' should be an object")
        record = build({k: v for k, v in job.items() if k != "results"}, JOB, proto3=True)
        if record["job_uuid"] is None:
            raise MalformedPayload("clavata", what, "required field 'jobUuid' is missing")
        same_job("clavata", what, ref.key.id, record["job_uuid"], "jobUuid")
        finished = self.is_finished(record["status"])
        record["finished"] = finished
        record["result_count"] = len(results) if has_results and finished else None
        if self.is_before_start(record["created"]):
            return FetchedJob(ref, finished=True, record=None)
        payload = results if has_results and finished and results else None
        return FetchedJob(ref, finished=finished, record=record, payload=payload)


class ClavataJobsStream(JobStream):
    name = "clavata_jobs"
    primary_keys = ("job_uuid",)
    source_class = ClavataJobs


class ClavataReportsStream(ResultStream):
    name = "clavata_reports"
    primary_keys = ("job_uuid", "result_index")
    parent_stream_type = ClavataJobsStream

    def rows(self, job: FetchedJob) -> t.Iterable[dict]:
        job_uuid = job.fields["job_uuid"]
        for index, result in enumerate(job.payload):
            row = build(result, REPORT, proto3=True)
            review = (result.get("report") or {}).get("reviewResult")
            if isinstance(review, dict):
                # A reviewResult without outcome or score: proto3 left out the zero values.
                row["outcome"] = row["outcome"] or "OUTCOME_UNSPECIFIED"
                row["score"] = 0.0 if row["score"] is None else row["score"]
            row["job_uuid"] = job_uuid
            row["result_index"] = index
            yield row


STREAMS = (ClavataJobsStream, ClavataReportsStream)
