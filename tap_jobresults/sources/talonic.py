"""Talonic document extraction jobs (GET /v1/jobs, GET /v1/jobs/{id}/results).

The docs disagree on status words (complete/completed, queued/pending) and on validation_flags
(strings in the prose, objects in the OpenAPI model): every spelling is accepted and kept as sent.
Results are readable while a job is processing; such rows are emitted early and again, with the
same `id`, once the job finishes.
"""

from __future__ import annotations

import typing as t

import msgspec

from tap_jobresults.errors import MalformedPayload, NotFoundError
from tap_jobresults.lifecycle import Bookmark, FetchedJob, JobKey, JobRef
from tap_jobresults.sources.base import JobSource, NewestFirstListing, logger, require, timestamp
from tap_jobresults.streams import JobStream, ResultStream

TERMINAL = frozenset({"complete", "completed", "failed", "cancelled", "canceled"})
PAGE_LIMIT = 100  # documented maximum is 500; 100 keeps a page's latency low


class _Row(msgspec.Struct):
    id: str
    values: dict | None = None
    confidence: float | None = None
    validation_flags: list[str | dict] | None = None  # strings (docs) or objects (OpenAPI)


class ResultsBody(msgspec.Struct):
    """GET /v1/jobs/{id}/results; rows stay raw JSON slices until emitted (one row per document)."""

    job_status: str | None = None
    data: list[msgspec.Raw] | None = None


_ROW = msgspec.json.Decoder(_Row)
_ANY = msgspec.json.Decoder()


class ExtractionJobs(JobSource):
    vendor = "talonic"
    terminal_statuses = TERMINAL

    def is_finished(self, status: t.Any) -> bool:
        return isinstance(status, str) and status.lower() in self.terminal_statuses

    def label(self, partition: str, job_id: str) -> str:
        return f"Talonic job {job_id}"

    def discover(self, partition: str, bookmark: Bookmark) -> list[JobRef]:
        what = "listing Talonic jobs"
        listing = NewestFirstListing(what, bookmark, self.start_date, lambda job_id: self.label(partition, job_id))
        cursor = None
        while True:
            params: dict[str, t.Any] = {"limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            body = self.client.get_json("/v1/jobs", what, params=params)
            go_on = True
            for job in require("talonic", what, body, "data", list, optional=True) or []:
                job_id = require("talonic", what, job, "id", str)
                created = timestamp("talonic", what, job.get("created_at"), "created_at") or ""
                go_on = listing.offer(
                    JobKey(created, job_id), job
                )  # the whole page: a later job may prove the order wrong
            pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
            next_cursor = pagination.get("next_cursor")
            total = body.get("total")
            if not pagination and isinstance(total, int) and total > len(body.get("data") or []):
                # The generic page-based envelope ({data, total, links}) has no cursor to follow:
                # reading one page and moving the bookmark would lose the others.
                raise MalformedPayload(
                    "talonic", what, f"a page-based answer ({total} jobs, no cursor) where a cursor page was expected"
                )
            # A cursor means more, unless has_more says otherwise.
            if not go_on or pagination.get("has_more") is False or not next_cursor or next_cursor == cursor:
                return listing.result()
            cursor = next_cursor

    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        what = ref.label
        job = ref.summary
        if job is None:  # a pending job the listing did not show
            job = self.client.get_json(f"/v1/jobs/{ref.key.id}", what)
        status = require("talonic", what, job, "status", str)
        schema = job.get("schema") if isinstance(job.get("schema"), dict) else {}
        error = job.get("error") if isinstance(job.get("error"), dict) else None
        record: dict[str, t.Any] = {
            "job_id": require("talonic", what, job, "id", str),
            "status": status,
            "finished": self.is_finished(status),
            "name": job.get("name"),
            "schema_id": schema.get("id"),
            "schema_name": schema.get("name"),
            "document_count": job.get("document_count"),
            "completed_documents": job.get("completed_documents"),
            "progress": job.get("progress"),
            "current_phase": job.get("current_phase"),
            "grid_stats": job.get("grid_stats"),
            "error": error,
            "error_code": error.get("code") if error else None,
            "error_message": error.get("message") if error else None,
            "created_at": timestamp("talonic", what, job.get("created_at"), "created_at"),
            "started_at": timestamp("talonic", what, job.get("started_at"), "started_at"),
            "completed_at": timestamp("talonic", what, job.get("completed_at"), "completed_at"),
        }
        if self.is_before_start(record["created_at"]):
            return FetchedJob(ref, finished=True, record=None)
        payload = None
        if want_results and status.lower() not in ("pending", "queued"):
            try:
                results: ResultsBody = self.client.get_json(
                    f"/v1/jobs/{ref.key.id}/results", f"{what} results", decode_as=ResultsBody
                )
            except NotFoundError:
                # The job was listed, so it exists: it has no results (yet, or ever, if it failed).
                logger.info("%s has no results (404); its job record is synced without rows", what)
                return FetchedJob(ref, finished=record["finished"], record=record)
            for index, raw in enumerate(results.data or []):  # check every row before the first is written
                try:
                    _ROW.decode(raw)
                except msgspec.ValidationError as exc:
                    raise MalformedPayload("talonic", f"{what} results", f"data[{index}]: {exc}") from None
            payload = results if results.data else None
            if results.job_status is not None and not self.is_finished(results.job_status):
                # Results flush phase by phase: a job listed as done whose grid is not final yet
                # stays pending, so its rows are read again next run.
                record["finished"] = False
        return FetchedJob(ref, finished=record["finished"], record=record, payload=payload)


class ExtractionJobsStream(JobStream):
    name = "extraction_jobs"
    primary_keys = ("job_id",)
    source_class = ExtractionJobs


class ExtractionRowsStream(ResultStream):
    name = "extraction_rows"
    primary_keys = ("id",)
    parent_stream_type = ExtractionJobsStream

    def rows(self, job: FetchedJob) -> t.Iterable[dict]:
        job_id = job.fields["job_id"]
        job_status = job.payload.job_status
        for raw in job.payload.data:
            row = _ANY.decode(raw)
            yield {
                "id": row["id"],
                "job_id": job_id,
                "job_status": job_status,
                "document_id": row.get("document_id"),
                "filename": row.get("filename"),
                "status": row.get("status"),
                "values": row.get("values"),
                "confidence": row.get("confidence"),
                "validation_flags": row.get("validation_flags") or [],
            }


STREAMS = (ExtractionJobsStream, ExtractionRowsStream)
