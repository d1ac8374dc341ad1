"""Clavata content-policy evaluation jobs, over the REST gateway (grpc-gateway in front of gRPC).

JSON names are the proto JSON names (camelCase); proto3 may leave zero-valued fields out, and an
unset timestamp reads 1970-01-01T00:00:00Z: both mean "not set".
"""

from __future__ import annotations

import typing as t

from tap_jobresults.lifecycle import Bookmark, FetchedJob, JobKey, JobRef
from tap_jobresults.sources.base import JobSource, NewestFirstListing, require, timestamp
from tap_jobresults.streams import JobStream, ResultStream

TERMINAL = frozenset({"JOB_STATUS_COMPLETED", "JOB_STATUS_FAILED", "JOB_STATUS_CANCELED"})
JOB_STATUSES = (
    "JOB_STATUS_UNSPECIFIED",
    "JOB_STATUS_PENDING",
    "JOB_STATUS_RUNNING",
    "JOB_STATUS_COMPLETED",
    "JOB_STATUS_FAILED",
    "JOB_STATUS_CANCELED",
)  # index = proto enum number
PAGE_SIZE = 500


class ClavataJobs(JobSource):
    vendor = "clavata"
    terminal_statuses = TERMINAL

    def label(self, partition: str, job_id: str) -> str:
        return f"Clavata job {job_id}"

    def partitions(self) -> list[str]:
        # A bookmark taken under one policy filter says nothing about another policy's jobs.
        policy = self.section.get("policy_id")
        return [f"policy:{policy}" if policy else "all"]

    def discover(self, partition: str, bookmark: Bookmark) -> list[JobRef]:
        what = "listing Clavata jobs"
        listing = NewestFirstListing(what, bookmark, self.start_date, lambda job_id: self.label(partition, job_id))
        floor = listing.floor
        params: dict[str, t.Any] = {"pageSize": PAGE_SIZE}
        if floor is not None and floor.created:
            # The server filters on creation time; the boundary job itself is deduped by UUID.
            params["query.createdTimeRange.start"] = floor.created
            params["query.createdTimeRange.inclusive"] = "true"
        if self.section.get("policy_id"):
            params["query.policyId"] = self.section["policy_id"]
        token = None
        while True:
            if token:
                params["pageToken"] = token
            body = self.client.get_json("/v1/jobs", what, params=params)
            for summary in require("clavata", what, body, "jobs", list, optional=True) or []:
                job_uuid = require("clavata", what, summary, "jobUuid", str)
                created = timestamp("clavata", what, summary.get("created"), "created") or ""
                listing.offer(JobKey(created, job_uuid), summary)  # filtered server-side: read every page
            next_token = body.get("nextPageToken")
            if not next_token or next_token == token:
                return listing.result()
            token = next_token

    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        what = ref.label
        summary = ref.summary
        if summary is not None and not self.is_finished(summary.get("status")):
            job = summary  # "Incomplete jobs will only include basic information" anyway
            has_results = False
        else:
            body = self.client.get_json(f"/v1/jobs/{ref.key.id}", what)
            job = require("clavata", what, body, "job", dict)
            has_results = True
        status = job.get("status") or "JOB_STATUS_UNSPECIFIED"  # proto3 omits the zero enum
        if isinstance(status, int) and not isinstance(status, bool) and 0 <= status < len(JOB_STATUSES):
            status = JOB_STATUSES[status]  # a gateway may send enum numbers
        if not isinstance(status, str):
            status = str(status)
        finished = self.is_finished(status)
        results = require("clavata", what, job, "results", list, optional=True) or []
        for index, result in enumerate(results):
            require("clavata", f"{what} results[{index}]", result, "report", dict, optional=True)
            timestamp("clavata", f"{what} results[{index}]", result.get("created"), "created")
        record: dict[str, t.Any] = {
            "job_uuid": require("clavata", what, job, "jobUuid", str),
            "status": status,
            "finished": finished,
            "customer_id": job.get("customerId") or None,
            "policy_id": job.get("policyId") or None,
            "policy_version_id": job.get("policyVersionId") or None,
            "label_id": job.get("labelId") or None,
            "label_version_id": job.get("labelVersionId") or None,
            "job_type": job.get("jobType") or None,
            "threshold": job.get("threshold", 0.0),
            "created": timestamp("clavata", what, job.get("created"), "created"),
            "updated": timestamp("clavata", what, job.get("updated"), "updated"),
            "completed": timestamp("clavata", what, job.get("completed"), "completed"),
            "content_data": job.get("contentData") or [],
            "result_count": len(results) if has_results and finished else None,
        }
        if self.is_before_start(record["created"]):
            return FetchedJob(ref, finished=True, record=None)
        payload = job if has_results and finished and results else None
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
        for index, result in enumerate(job.payload["results"]):
            report = result.get("report") or {}
            review_result = report.get("reviewResult")
            reviewed = isinstance(review_result, dict)
            review: dict = review_result if isinstance(review_result, dict) else {}
            # reviewResult.outcome, else the deprecated `result` (older reports, or an outcome that
            # proto3 left out as the zero value); a reviewResult without score means a score of 0.
            outcome = review.get("outcome") or report.get("result")
            outcome = outcome or ("OUTCOME_UNSPECIFIED" if reviewed else None)
            score = review.get("score", 0.0) if reviewed else None
            yield {
                "job_uuid": job_uuid,
                "result_index": index,
                "content_hash": report.get("contentHash") or None,
                "policy_id": report.get("policyId") or None,
                "policy_key": report.get("policyKey") or None,
                "policy_version_id": report.get("policyVersionId") or None,
                "label_id": report.get("labelId") or None,
                "label_version_id": report.get("labelVersionId") or None,
                "outcome": outcome,
                "score": score,
                "threshold": report.get("threshold", 0.0),
                "label_matches": report.get("labelMatches") or {},
                "section_evaluation_reports": report.get("sectionEvaluationReports") or [],
                "exception_evaluation_report": report.get("exceptionEvaluationReport"),
                "token_usage": report.get("tokenUsage"),
                "content_metadata": report.get("contentMetadata") or {},
                "created": timestamp("clavata", f"Clavata job {job_uuid}", result.get("created"), "created"),
            }


STREAMS = (ClavataJobsStream, ClavataReportsStream)
