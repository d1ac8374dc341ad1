"""Talonic document extraction jobs (GET /v1/jobs, GET /v1/jobs/{id}/results).

The vendor's documents and SDKs disagree on names (total_documents / document_count, phase /
current_phase, document_filename / filename), on status words (complete/completed, queued/pending),
on `progress` (0-100 in the API reference, a 0-1 fraction in an older draft) and on
validation_flags (strings in the prose, objects in the OpenAPI model): every spelling is accepted
and lands in one column; whatever no column carries is kept in `extra_fields`.
Results are readable while a job is processing; such rows are emitted early and again, with the
same `id`, once the job finishes.
"""

from __future__ import annotations

import typing as t

from tap_jobresults.errors import MalformedPayload, NotFoundError
from tap_jobresults.lifecycle import FetchedJob, JobKey, JobRef
from tap_jobresults.records import (
    MISSING,
    Partial,
    Unfit,
    build,
    col,
    to_int,
    to_list,
    to_num,
    to_obj,
    to_str,
    to_ts,
    typed,
)
from tap_jobresults.sources.base import (
    BODY,
    JobSource,
    Listing,
    created_of,
    decode,
    logger,
    objects,
    path_id,
    require,
    same_job,
    split_body,
)
from tap_jobresults.streams import JobStream, ResultStream, load_schema

TERMINAL = frozenset({"complete", "completed", "failed", "cancelled", "canceled"})
PAGE_LIMIT = 100  # documented maximum is 500; 100 keeps a page's latency low


def percent(value: t.Any) -> t.Any:
    """`progress` as a percentage: the API reference says 0-100, an older draft a 0-1 fraction
    (1.0 when done). A float from 0 to 1 (0.5, 1.0) is read as a fraction (and
    kept as sent in extra_fields)."""
    number = to_num(value)
    if isinstance(number, float) and 0 <= number <= 1:
        return Partial(round(number * 100, 6), value)
    if not 0 <= number <= 100:
        raise Unfit
    return number


JOBS_SCHEMA = load_schema("extraction_jobs")["properties"]

# Fields of the vendor's models (tests/fixtures/specs/talonic_models.json) that no column declares: kept in
# the job's extra_fields as sent, by decision (the results envelope's under `results`).
KEPT_AS_SENT = {
    "JobResponse.estimated_seconds_remaining": "documented as 'currently always null'",
    "JobResponse.links": "URLs of the job's own API resources (self, cancel, dashboard)",
    "NodeJob.extraction_id": "Node SDK only; no documented meaning",
    "NodeJob.message": "Node SDK only: free text",
    "NodeJob.links": "URLs of the job's own API resources (self, results)",
    "NodeJob.cancelled_at": "Node SDK only (kept as sent, not normalised)",
    "NodeJob.estimated_completion": "Node SDK only: an estimate",
    "JobResultsResponse.job_status": "also the job_status column of every row; kept whole in extra_fields.results",
    "JobResultsResponse.links": "URLs of the results and the job (self, job)",
}
# The results envelope's fields that have columns on the job (the others: KEPT_AS_SENT, under `results`).
ENVELOPE_COLUMNS = {
    "job_id": "job_id",
    "schema.id": "schema_id",
    "schema.name": "schema_name",
    "total_rows": "total_rows",
}


JOB = (
    col("job_id", "id", convert=to_str),
    col("status", "status", convert=to_str),
    col("name", "name", convert=to_str),
    col("schema_id", "schema.id", "schema_id", convert=to_str),
    col("schema_name", "schema.name", "schema_name", convert=to_str),
    col("document_count", "document_count", "total_documents", convert=to_int),
    col("completed_documents", "completed_documents", convert=to_int),
    col("failed_documents", "failed_documents", convert=to_int),
    col("progress", "progress", convert=percent),
    col("current_phase", "current_phase", "phase", convert=to_str),
    col("grid_stats", "grid_stats", convert=typed(JOBS_SCHEMA["grid_stats"])),
    col("error", "error", convert=typed(JOBS_SCHEMA["error"])),
    col("error_code", "error.code", convert=to_str),
    col("error_message", "error.message", convert=to_str),
    col("created_at", "created_at", convert=to_ts),
    col("started_at", "started_at", convert=to_ts),
    col("completed_at", "completed_at", convert=to_ts),
)

ROW = (
    col("id", "id", convert=to_str),
    col("document_id", "document_id", convert=to_str),
    col("filename", "filename", "document_filename", convert=to_str),
    col("status", "status", convert=to_str),
    col("values", "values", "result", convert=to_obj),
    col("confidence", "confidence", convert=to_num),
    col("validation_flags", "validation_flags", convert=to_list, default=[]),
)

# A 200 that is an error envelope (talonic.com/docs/api/error-format), not a listing or results.
ERROR_ENVELOPE_KEYS = ("statusCode", "error", "message", "code")


def _error_envelope(body: dict) -> str | None:
    if "data" in body:
        return None
    found = [key for key in ERROR_ENVELOPE_KEYS if key in body]
    if len(found) >= 2 or "statusCode" in body:
        message = body.get("message") or body.get("error") or body.get("code")
        return f"an error envelope with HTTP 200 ({str(message)[:200]})"
    return None


class ExtractionJobs(JobSource):
    name = "talonic"
    setting = "talonic"
    terminal_statuses = TERMINAL
    early_stop = True  # the cursor encodes createdAt: newest first, checked as the pages come

    def is_finished(self, status: t.Any) -> bool:
        return isinstance(status, str) and status.lower() in self.terminal_statuses

    def label(self, partition: str, job_id: str) -> str:
        return f"Talonic job {job_id}"

    def list_label(self, partition: str) -> str:
        return "listing Talonic jobs"

    def walk(self, partition: str, listing: Listing, *, full: bool = False) -> None:
        what = self.list_label(partition)
        go_on = True

        def page(cursor: str | None) -> tuple[list, str | None]:
            params: dict[str, t.Any] = {"limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            body = self.client.get_json("/v1/jobs", what, params=params)
            if not isinstance(body, dict):
                raise MalformedPayload("talonic", what, f"expected a JSON object, got {type(body).__name__}")
            if "data" not in body:  # every list page carries `data`, [] when empty: an error envelope, or a proxy's
                raise MalformedPayload("talonic", what, _error_envelope(body) or "a list page without 'data'")
            jobs = objects("talonic", what, body, "data")
            pagination: dict = body["pagination"] if isinstance(body.get("pagination"), dict) else {}
            total = body.get("total")
            if not pagination and isinstance(total, int) and total > len(jobs):
                # The generic page-based envelope ({data, total, links}) has no cursor to follow:
                # reading one page and moving the bookmark would lose the others.
                raise MalformedPayload(
                    "talonic", what, f"a page-based answer ({total} jobs, no cursor) where a cursor page was expected"
                )
            next_cursor = pagination.get("next_cursor")
            if pagination.get("has_more") is True and next_cursor in (None, ""):
                raise MalformedPayload("talonic", what, "has_more is true but there is no next_cursor to follow")
            # A cursor means more, unless has_more says otherwise.
            return jobs, (next_cursor if pagination.get("has_more") is not False else None)

        for jobs in self.pages(what, page):
            for job in jobs:
                job_id = require("talonic", what, job, "id", (str, int))
                go_on = listing.offer(JobKey(created_of(job.get("created_at")), str(job_id)), job)
            if not go_on:  # only at a page end: a later job on the page may prove the order wrong
                return

    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        what = ref.label
        job = ref.summary
        if job is None:  # a pending job the listing did not show
            job = self.client.get_json(f"/v1/jobs/{path_id(ref.key.id)}", what)
        if not isinstance(job, dict):
            raise MalformedPayload("talonic", what, f"expected a JSON object, got {type(job).__name__}")
        record = build(job, JOB)
        if record["job_id"] is None:
            raise MalformedPayload("talonic", what, "required field 'id' is missing")
        same_job("talonic", what, ref.key.id, record["job_id"], "id")
        record["total_rows"] = None
        status = record["status"] or ""
        record["finished"] = self.is_finished(status)
        if self.is_before_start(record["created_at"]):
            return FetchedJob(ref, finished=True, record=None)
        payload = None
        if want_results and status.lower() not in ("pending", "queued"):
            results_what = f"{what} results"
            try:
                body = self.client.get_json(f"/v1/jobs/{path_id(ref.key.id)}/results", results_what, decode_as=BODY)
            except NotFoundError:
                # The job was listed, so it exists: it has no results (yet, or ever, if it failed).
                logger.debug("%s has no results (404); its job record is synced without rows", what)
                return FetchedJob(ref, finished=record["finished"], record=record)
            small, arrays = split_body("talonic", results_what, body, ("data",))
            same_job("talonic", results_what, ref.key.id, small.get("job_id"), "job_id")
            if "data" not in body and (problem := _error_envelope(small)):
                raise MalformedPayload("talonic", results_what, problem)
            rows = arrays.get("data") or []
            no_data = "data" not in body or bytes(body["data"]) == b"null"
            promised = max(record["completed_documents"] or 0, record["document_count"] or 0)
            if no_data and promised and status.lower() not in ("failed", "cancelled", "canceled"):
                # {} or data: null for a job whose listing says it has documents is a failed fetch, not
                # "0 rows, done" (an explicit empty `data` is taken at its word).
                raise MalformedPayload("talonic", results_what, f"no 'data', but the job reports {promised} documents")
            self._land_envelope(record, small)
            job_status = small.get("job_status")
            payload = {"job_status": job_status if isinstance(job_status, str) else None, "rows": rows}
            if isinstance(job_status, str) and not self.is_finished(job_status):
                # Results flush phase by phase: a job listed as done whose grid is not final yet
                # stays pending, so its rows are read again next run.
                record["finished"] = False
            if not rows:
                payload = None
        return FetchedJob(ref, finished=record["finished"], record=record, payload=payload)

    def _land_envelope(self, record: dict, envelope: dict) -> None:
        """The results body's fields around `data` (job_id, job_status, schema, total_rows, links, and
        whatever the vendor adds): `schema` fills schema_id/schema_name where the listing had none,
        `total_rows` has its column, and the rest is kept in the job's extra_fields under `results`,
        as sent (job_id only when it is not the job's own ID; schema only where it says something the
        columns do not)."""
        envelope = dict(envelope)
        schema = envelope.get("schema")
        if isinstance(schema, dict):
            rest = dict(schema)
            for column, key in (("schema_id", "id"), ("schema_name", "name")):
                value = rest.get(key)
                try:
                    value = to_str(value) if value is not None else None
                except Unfit:
                    continue  # kept as sent
                if value is not None and record[column] is None:
                    record[column] = value
                if value is None or record[column] == value:
                    rest.pop(key, None)
            if rest:
                envelope["schema"] = rest
            else:
                del envelope["schema"]
        if envelope.get("schema", MISSING) is None:
            del envelope["schema"]
        try:
            record["total_rows"] = to_int(envelope["total_rows"]) if envelope.get("total_rows") is not None else None
            envelope.pop("total_rows", None)
        except Unfit:
            pass  # kept as sent
        if str(envelope.get("job_id")) == record["job_id"]:
            del envelope["job_id"]
        envelope = {key: value for key, value in envelope.items() if value is not None}
        if envelope:
            record["extra_fields"] = {**(record["extra_fields"] or {}), "results": envelope}


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
        job_status = job.payload["job_status"]
        for index, raw in enumerate(job.payload["rows"]):
            row = build(decode(raw), ROW)
            if row["id"] is None:
                # The vendor's OpenAPI makes `id` optional and its Node SDK's rows have none: a
                # stable key from the job and the document (its position when that is missing too).
                document = row["document_id"]
                row["id"] = f"{job_id}:{document}" if document is not None else f"{job_id}:#{index}"
            row["job_id"] = job_id
            row["job_status"] = job_status
            yield row


STREAMS = (ExtractionJobsStream, ExtractionRowsStream)
