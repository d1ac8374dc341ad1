"""Fake Talonic extraction API (api-notes §5, extraction-job-results.txt).

Cursor-paged job list (`{data, pagination: {total, limit, has_more, next_cursor}}`, cursor =
base64 of `{"createdAt", "id"}`), job details, and results readable while a job processes.
Error envelope per the error-format page; rate-limit headers on every response.

Realistic mode (`self.realistic`): 429s carry no `Retry-After`, only `X-RateLimit-Reset` as ISO 8601
(the docs' form) on every response; jobs omit their null optional fields and carry fields the docs do
not name (the Node SDK's `failed_documents`, `extraction_id`, `links.results`); rows carry an unknown
field and `validation_flags: null` when there are none; jobs created at the same instant are listed in
no particular order; and the results of a finished job report `job_status: processing` on the first
read after it finished (the grid lags the listing). As unkind as the docs allow: one job in sixteen has
no `created_at`, the last page of the listing still carries a `next_cursor` (with `has_more: false`),
the same documents come back in every job, and `schema` and `error` carry keys the docs do not name.
Knobs outside realistic mode: `omit_row_ids` (rows without `id`, as the Node SDK types them),
`cursor_on_last_page`, `shared_documents`, `hidden` (jobs the listing no longer shows), `daily_quota_spent`
(every request answers 429 until the next UTC midnight, hours ahead), and, on every vendor,
`refuse_scope` (every request answers 403: the key lacks the scope).
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import typing as t
import uuid
from datetime import datetime, timedelta, timezone

from tests.fakeapi.base import BadRequest, Response, VendorServer, bearer, new_uuid

TERMINAL = {"complete", "completed", "failed", "cancelled"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _ts(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if moment else None


class TalonicServer(VendorServer):
    name = "talonic"
    api_key = "tlnc_test_0123456789abcdef"
    routes: t.ClassVar = [
        ("GET", r"/v1/jobs", "list_jobs"),
        ("GET", r"/v1/jobs/(?P<id>[^/]+)", "get_job"),
        ("GET", r"/v1/jobs/(?P<id>[^/]+)/results", "get_results"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, dict] = {}
        self.jobs_order = "desc"
        self._clock = itertools.count()
        self._start = datetime(2025, 1, 1, tzinfo=timezone.utc)
        self.omit_row_ids = False
        # Unkind, as the docs allow: a `next_cursor` on the last page (with `has_more: false`), the
        # same documents in every job (rows keyed by document), jobs the listing no longer shows.
        self.cursor_on_last_page = False
        self.shared_documents = False
        self.hidden: set[str] = set()
        self.daily_quota_spent = False
        self._lag_served: set[str] = set()  # finished jobs whose lagging results read was served

    def _reset_header(self, seconds: float) -> str:
        moment = datetime.now(timezone.utc) + timedelta(seconds=seconds)
        return _ts(moment) if self.realistic else str(int(moment.timestamp()))  # type: ignore[return-value]

    def authorized(self, headers: dict) -> bool:
        return bearer(headers) == self.api_key

    def error(self, status: int, code: str, message: str) -> Response:
        code = {401: "unauthorized", 404: "not_found", 429: "rate_limited", 400: "validation_error"}.get(status, code)
        body = {
            "statusCode": status,
            "code": code,
            "error": code.replace("_", " ").title(),
            "message": message,
            "retryable": status in (429, 500, 502, 503, 504),
            "request_id": f"req_{new_uuid()[:12]}",
            "timestamp": _ts(datetime.now(timezone.utc)),
            "path": "",
        }
        headers: dict = {}
        if status == 429:
            headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": self._reset_header(1)}
            if not self.realistic:
                headers["Retry-After"] = "1"
        return status, body, headers

    def refusal(self, path: str) -> Response | None:
        if self.daily_quota_spent:
            # The daily quota resets at UTC midnight (talonic.com/docs: rate limits): hours ahead, not 1 s.
            now = datetime.now(timezone.utc)
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            status, body, _ = self.error(429, "rate_limited", "Daily request quota exceeded.")
            reset = _ts(midnight) if self.realistic else str(int(midnight.timestamp()))
            headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
            if not self.realistic:
                headers["Retry-After"] = str(int((midnight - now).total_seconds()) + 1)
            return status, body, headers
        return super().refusal(path)

    def extra_headers(self) -> dict:
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4999",
            "X-RateLimit-Reset": self._reset_header(86400),
        }

    # -- control ---------------------------------------------------------------------------------

    def add_job(
        self,
        status: str = "completed",
        rows: int = 3,
        created_at: t.Any = None,
        flags_as_objects: bool = False,
        name: str | None = None,
        undated: bool = False,
        job_id: str | None = None,
    ) -> str:
        """`undated`: the job carries no `created_at` (it is still listed in its place); `job_id`: an ID
        of the test's choosing (one that needs encoding in a URL, say)."""
        job_id = job_id or new_uuid()
        if isinstance(created_at, str):
            created_at = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        created = created_at or self._start + timedelta(minutes=next(self._clock))
        with self.lock:
            self.jobs[job_id] = {
                "id": job_id,
                "status": status,
                "rows": rows,
                "created": created,
                "objects": flags_as_objects,
                "name": name or f"invoices batch {len(self.jobs) + 1}",
                "schema": {"id": new_uuid(), "name": "Invoice"},
                "row_ids": [new_uuid() for _ in range(rows)],
                "undated": undated,
            }
        return job_id

    def set_status(self, job_id: str, status: str) -> None:
        with self.lock:
            self.jobs[job_id]["status"] = status
            self._lag_served.discard(job_id)
        self.invalidate(job_id)

    def finish_all(self) -> None:
        with self.lock:
            for job in self.jobs.values():
                if job["status"] not in TERMINAL:
                    self.set_status(job["id"], "completed")

    # -- payloads --------------------------------------------------------------------------------

    def _undated(self, job: dict) -> bool:
        """No `created_at`: asked for, or (realistic) one job in sixteen, by ID (the OpenAPI model
        makes it optional)."""
        return job["undated"] or (self.realistic and job["id"][-1:] == "0")

    def _job(self, job: dict) -> dict:
        status = job["status"]
        done = status in TERMINAL
        started = None if status in ("pending", "queued") else job["created"] + timedelta(seconds=5)
        body = {
            "id": job["id"],
            "name": job["name"],
            "status": status,
            "progress": 40 if status == "processing" else None,
            "estimated_seconds_remaining": None,
            # Realistic: a third of the listed jobs carry no schema (the vendor's own job fixture has
            # none); the results envelope still names it.
            "schema": None if self.realistic and int(job["id"][-1], 16) % 3 == 0 else job["schema"],
            "document_count": job["rows"],
            "completed_documents": job["rows"] if done else job["rows"] // 2,
            "grid_stats": {
                "total_cells": job["rows"] * 4,
                "filled": job["rows"] * 3,
                "empty": job["rows"],
                "fill_rate": 0.75,
            },
            "current_phase": "completed" if done else "phase_2_execute",
            "error": {"code": "extraction_failed", "message": "document unreadable"} if status == "failed" else None,
            "created_at": None if self._undated(job) else _ts(job["created"]),
            "started_at": _ts(started),
            "completed_at": _ts(job["created"] + timedelta(minutes=2)) if done else None,
            "links": {
                "self": f"/v1/jobs/{job['id']}",
                "dashboard": f"https://app.talonic.com/jobs/{job['id']}",
                **({} if done else {"cancel": f"/v1/jobs/{job['id']}/cancel"}),
            },  # cancel: only while unfinished
        }
        if self.realistic:
            body = {k: v for k, v in body.items() if v is not None}
            body["failed_documents"] = 1 if status == "failed" else 0
            body["extraction_id"] = str(uuid.uuid5(uuid.NAMESPACE_OID, job["id"]))
            body["links"]["results"] = f"/v1/jobs/{job['id']}/results"
            # Unknown keys inside the objects the columns reach into (schema.id, error.code).
            if "schema" in body:  # a third of listed jobs come without their schema (see above)
                body["schema"] = {**body["schema"], "version": 3}
            if "error" in body:
                body["error"] = {**body["error"], "retryable": False}
        return body

    def _results(self, job: dict) -> dict:
        done = job["status"] in TERMINAL
        rows = job["row_ids"] if done else job["row_ids"][: max(1, len(job["row_ids"]) // 2)]
        if job["status"] == "failed":
            rows = []
        data = []
        for i, row_id in enumerate(rows):
            rng = random.Random(row_id)
            confidence = round(rng.uniform(0.55, 0.99), 2)
            total = round(rng.uniform(10, 9000), 2) if (done and i % 4 != 1) else None  # every 4th row lacks a total
            flags = [] if total is not None or not done else ["missing_required_field:total"]
            if done and confidence < 0.7:  # flags come from Phase 4, so partial rows have none yet
                flags.append("format_mismatch:date")
            if job["objects"]:
                flags = [{"code": f.split(":")[0], "field": f.split(":")[1]} for f in flags]
            row = {
                "id": row_id,
                "document_id": str(
                    uuid.uuid5(
                        uuid.NAMESPACE_URL, f"document-{i}" if self.shared_documents or self.realistic else row_id
                    )
                ),
                "filename": f"invoice_{i:04d}.pdf",
                "status": "complete" if done else "partial",
                "values": {
                    "invoice_number": f"INV-2025-{i:04d}",
                    "vendor": "Acme Corp",
                    "total": total,
                    "date": "2025-10-01",
                    "currency": "EUR",
                    "lines": i % 7,
                },
                "confidence": confidence,
                "validation_flags": flags,
            }
            if self.realistic:
                row["page_count"] = 1 + i % 3
                if not flags:
                    row["validation_flags"] = None
            if self.omit_row_ids:
                del row["id"]
            data.append(row)
        status = (
            "complete" if job["status"] in ("complete", "completed") else job["status"]
        )  # "completed mapped to complete"
        return {
            "job_id": job["id"],
            "job_status": status,
            "schema": job["schema"],
            "total_rows": len(data),
            "data": data,
            "links": {"self": f"/v1/jobs/{job['id']}/results", "job": f"/v1/jobs/{job['id']}"},
        }

    # -- routes ----------------------------------------------------------------------------------

    def list_jobs(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            raise BadRequest("limit must be an integer", "validation_error") from None
        if not 1 <= limit <= 500:
            raise BadRequest("limit must be between 1 and 500", "validation_error")
        status = query.get("status", [None])[0]
        # The docs spell the finished state both `complete` and `completed`; either filter finds either.
        wanted = {"complete", "completed"} if status in ("complete", "completed") else {status}
        with self.lock:
            jobs = [
                j
                for j in self.jobs.values()
                if (status is None or j["status"] in wanted) and j["id"] not in self.hidden
            ]
        # Realistic: jobs created at the same instant come in insertion order, not by ID.
        jobs.sort(
            key=(lambda j: j["created"]) if self.realistic else (lambda j: (j["created"], j["id"])),
            reverse=self.jobs_order == "desc",
        )
        cursor = query.get("cursor", [None])[0]
        start = 0
        if cursor:
            try:
                position = json.loads(base64.b64decode(cursor, validate=True))
                position["id"]
            except (ValueError, TypeError, KeyError):
                raise BadRequest("Invalid cursor.", "validation_error") from None
            start = next((i + 1 for i, j in enumerate(jobs) if j["id"] == position["id"]), len(jobs))
        page = jobs[start : start + limit]
        more = start + limit < len(jobs)
        next_cursor = None
        if (more or self.cursor_on_last_page or self.realistic) and page:
            next_cursor = base64.b64encode(
                json.dumps({"createdAt": _ts(page[-1]["created"]), "id": page[-1]["id"]}).encode()
            ).decode()
        return (
            200,
            {
                "data": [self._job(j) for j in page],
                "pagination": {"total": len(jobs), "limit": limit, "has_more": more, "next_cursor": next_cursor},
            },
            {},
        )

    def _lookup(self, job_id: str) -> dict:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None and not UUID.fullmatch(job_id):
            raise BadRequest("Invalid job ID format. Must be a UUID.", "validation_error")
        if job is None:
            raise LookupError
        return job

    def get_job(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        self.count(match["id"])
        try:
            return 200, self._job(self._lookup(match["id"])), {}
        except LookupError:
            return self.error(404, "not_found", "No job with this ID exists for your organization.")

    def get_results(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        self.count(match["id"])
        try:
            job = self._lookup(match["id"])
        except LookupError:
            return self.error(404, "not_found", "No job with this ID exists for your organization.")
        if self.realistic and job["status"] in TERMINAL:
            with self.lock:
                lagging = job["id"] not in self._lag_served
                self._lag_served.add(job["id"])
            if lagging:
                body = self._results(job)
                body["job_status"] = "processing"
                return 200, body, {}
        return 200, self.cached(job["id"], lambda: self._results(job)), {}
