"""Fake Clavata REST gateway (grpc-gateway in front of gRPC; api-notes §4, clavata-job.txt).

ListJobs takes `query.*` filters in JSON (camelCase) or proto (snake_case) names and pages with
pageSize/pageToken; unfinished jobs in the list carry basic information only. Errors are
google.rpc.Status-like `{code, message, details}` with gRPC codes. Proto3 JSON may omit zero values.

TimeRange: `start` is inclusive when `inclusive` is true, exclusive otherwise; `end` likewise
(the proto leaves it open; this fake treats `inclusive` as applying to both bounds).

Realistic mode (`self.realistic`): half the jobs (by UUID) come marshalled the way the gateway's
protojson does with `EmitUnpopulated: true` (clavataai/gosdk vendors grpc-gateway's marshaler with it
on): unset messages `null`, strings `""`, lists `[]`, INTERNAL fields present and empty; the other half
with zero values left out. Timestamps carry 9 fractional digits; listings come in no particular order;
429s carry no `Retry-After`. A third of the jobs (by UUID) come with enums as numbers, as a gateway
configured with protojson `UseEnumNumbers` sends them (numbering: ENUM_NUMBERS, the vendor's; a
job added with `enum_numbers=True` always does).
"""

from __future__ import annotations

import base64
import itertools
import random
import typing as t
from datetime import datetime, timedelta, timezone

from tests.fakeapi.base import BadRequest, Response, VendorServer, bearer, new_uuid

TERMINAL = {"JOB_STATUS_COMPLETED", "JOB_STATUS_FAILED", "JOB_STATUS_CANCELED"}
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 499: 1, 500: 13, 502: 14, 503: 14, 504: 4}
ZERO_TIME = "1970-01-01T00:00:00Z"
JOB_STATUSES = [
    "JOB_STATUS_UNSPECIFIED",
    "JOB_STATUS_PENDING",
    "JOB_STATUS_RUNNING",
    "JOB_STATUS_COMPLETED",
    "JOB_STATUS_FAILED",
    "JOB_STATUS_CANCELED",
]  # index = proto number; the gateway takes either


# The vendor's numbering (clavataai/gosdk internal/protobufs/shared/v1/public.pb.go; JobType: clavata-sdk
# 1.1.0 public_pb2), written out here independently of the tap's tables.
ENUM_NUMBERS = {
    **{name: number for number, name in enumerate(JOB_STATUSES)},
    "OUTCOME_UNSPECIFIED": 0,
    "OUTCOME_FALSE": 1,
    "OUTCOME_TRUE": 2,
    "OUTCOME_FAILED": 3,
    "JOB_TYPE_UNSPECIFIED": 0,
    "JOB_TYPE_STANDARD": 1,
    "JOB_TYPE_BATCH": 2,
    "JOB_TYPE_FREE": 3,
    "JOB_TYPE_TEST": 4,
}
ENUM_FIELDS = {"status", "jobType", "result", "outcome"}


def _numbered(value: t.Any) -> t.Any:
    """Every enum field as its number (protojson UseEnumNumbers), at every depth."""
    if isinstance(value, dict):
        return {
            k: ENUM_NUMBERS[v] if k in ENUM_FIELDS and v in ENUM_NUMBERS else _numbered(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_numbered(v) for v in value]
    return value


def _prune(value: t.Any) -> t.Any:
    """Proto3 JSON without EmitUnpopulated: zero scalars, empty lists/maps and zero enums are left out at every depth."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {
            k: v
            for k, v in pruned.items()
            if v not in ("", [], {}, 0, None, ZERO_TIME) and not (isinstance(v, str) and v.endswith("_UNSPECIFIED"))
        }
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _ts(moment: datetime, nanos: bool = False) -> str:
    """RFC 3339; `nanos`: 9 fractional digits, as Go's time marshals them."""
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{text}{moment.microsecond % 997:03d}Z" if nanos else f"{text}Z"


def _emit_unpopulated_job(body: dict) -> dict:
    """Add what protojson with EmitUnpopulated writes for fields the server left unset."""
    body = {
        "metadata": None,
        "contentData": [],
        "results": [],
        "policyDraftId": "",
        "labelId": "",
        "labelVersionId": "",
        "labelDraftId": "",
        **body,
    }
    if body.get("completed") == ZERO_TIME:
        body["completed"] = None  # an unset Timestamp is a message: null
    body["contentData"] = [
        {
            "text": "",
            "image": "",
            "imageUrl": "",
            "video": None,
            "audioUrl": "",
            "labels": [],
            "contentType": "",
            "title": "",
            **item,
        }
        for item in body["contentData"]
    ]
    results = []
    for result in body["results"]:
        report = {
            "name": "",
            "featureReports": {},
            "internals": None,
            "labelId": "",
            "labelVersionId": "",
            **result["report"],
        }
        report["sectionEvaluationReports"] = [
            {
                "exceptionEvaluationReport": None,
                "sourceRange": None,
                **section,
                "assertionEvaluationReports": [
                    {"sourceRange": None, **a} for a in section.get("assertionEvaluationReports", [])
                ],
            }
            for section in report.get("sectionEvaluationReports", [])
        ]
        results.append({"uuid": "", "contentHash": "", **result, "report": report})
    body["results"] = results
    return body


def _parse(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"invalid timestamp {value!r}") from None


class ClavataServer(VendorServer):
    name = "clavata"
    api_key = "clavata-key-0123456789abcdef"
    routes: t.ClassVar = [
        ("GET", r"/v1/jobs", "list_jobs"),
        ("GET", r"/v1/jobs/(?P<uuid>[^/]+)", "get_job"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, dict] = {}
        self.customer_id = new_uuid()
        self.default_policy = new_uuid()
        self._clock = itertools.count()
        self._start = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def authorized(self, headers: dict) -> bool:
        return bearer(headers) == self.api_key

    def error(self, status: int, code: str, message: str) -> Response:
        if status == 429:  # the 429 schema is GRPCErrorResponse {code, message}, not google.rpc.Status
            return status, {"code": 8, "message": message}, {}
        return status, {"code": GRPC_CODES.get(status, 2), "message": message, "details": []}, {}

    # -- control ---------------------------------------------------------------------------------

    def add_job(
        self,
        status: str = "JOB_STATUS_COMPLETED",
        results: int = 3,
        policy_id: str | None = None,
        created: t.Any = None,
        deprecated_result_only: bool = False,
        omit_zero_fields: bool = True,
        enum_numbers: bool = False,
        job_uuid: str | None = None,
    ) -> str:
        job_uuid = job_uuid or new_uuid()
        if isinstance(created, str):
            created = _parse(created)
        created = created or self._start + timedelta(minutes=next(self._clock))
        with self.lock:
            self.jobs[job_uuid] = {
                "uuid": job_uuid,
                "status": status,
                "n": results,
                "policy": policy_id or self.default_policy,
                "policy_version": new_uuid(),
                "created": created,
                "updated": created,
                "completed": None,
                "legacy": deprecated_result_only,
                "omit_zero": omit_zero_fields,
                "numbers": enum_numbers,
            }
            if status in TERMINAL:
                self.jobs[job_uuid]["completed"] = self.jobs[job_uuid]["updated"] = created + timedelta(seconds=30)
        return job_uuid

    def set_status(self, job_uuid: str, status: str) -> None:
        with self.lock:
            job = self.jobs[job_uuid]
            job["status"] = status
            job["updated"] = datetime.now(timezone.utc)
            if status in TERMINAL:
                job["completed"] = job["updated"]
        self.invalidate(job_uuid)

    def finish_all(self) -> None:
        with self.lock:
            for job in self.jobs.values():
                if job["status"] not in TERMINAL:
                    self.set_status(job["uuid"], "JOB_STATUS_COMPLETED")

    # -- payloads --------------------------------------------------------------------------------

    @staticmethod
    def _content_hash(job: dict, index: int) -> str:
        """The same content has the same hash in contentData and in its report."""
        seed = f"hash{job['uuid']}{index}"
        return f"md5::{random.Random(seed).getrandbits(128):032x}"

    def _report(self, job: dict, index: int) -> dict:
        rng = random.Random(f"{job['uuid']}{index}")
        score = round(rng.random(), 3)
        outcome = "OUTCOME_TRUE" if score >= 0.5 else "OUTCOME_FALSE"
        sections = [
            {
                "name": name,
                "message": f"action:{name.lower()}",
                "result": outcome,
                "assertionEvaluationReports": [{"result": outcome, "message": f"{name} assertion", "score": score}],
                "reviewResult": {"outcome": outcome, "score": score},
            }
            for name in ("Violence", "Spam")
        ]
        report: dict = {
            "policyId": job["policy"],
            "policyKey": "community-guidelines",
            "policyVersionId": job["policy_version"],
            "result": outcome,
            "sectionEvaluationReports": sections,
            "exceptionEvaluationReport": {
                "result": "OUTCOME_FALSE",
                "assertionEvaluationReports": [],
                "reviewResult": {"outcome": "OUTCOME_FALSE", "score": 0.0},
            },
            "contentHash": self._content_hash(job, index),
            "contentMetadata": {"post_id": str(index)},
            "reviewResult": {"outcome": outcome, "score": score},
            "threshold": 0.5,
            "labelMatches": {"Violence": score} if outcome == "OUTCOME_TRUE" else {},
            "tokenUsage": {"inputTokens": 120 + index, "billedTokens": 120 + index, "multiplier": 1.0},
        }
        if job["legacy"]:
            del report["reviewResult"]
        return {
            "jobUuid": job["uuid"],
            "report": report,
            "created": _ts(job["completed"] or job["created"], self.realistic),
        }

    def _job(self, job: dict, full: bool) -> dict:
        body: dict = {
            "jobUuid": job["uuid"],
            "customerId": self.customer_id,
            "status": job["status"],
            "created": _ts(job["created"], self.realistic),
            "updated": _ts(job["updated"], self.realistic),
            "completed": _ts(job["completed"], self.realistic) if job["completed"] else ZERO_TIME,
            "policyId": job["policy"],
            "policyVersionId": job["policy_version"],
            "threshold": 0.5,
            "jobType": "JOB_TYPE_STANDARD",
        }
        if full or job["status"] in TERMINAL:
            body["contentData"] = [
                {"contentHash": self._content_hash(job, i), "metadata": {"post_id": str(i)}} for i in range(job["n"])
            ]
            done = job["status"] == "JOB_STATUS_COMPLETED"
            body["results"] = [self._report(job, i) for i in range(job["n"])] if done else []
        if job["numbers"] or (self.realistic and int(job["uuid"][-2], 16) % 3 == 0):
            body = _numbered(body)
        if self.realistic:
            return _prune(body) if int(job["uuid"][-1], 16) % 2 else _emit_unpopulated_job(body)
        return _prune(body) if job["omit_zero"] else body

    # -- routes ----------------------------------------------------------------------------------

    @staticmethod
    def _param(query: dict, *names: str) -> str | None:
        for name in names:
            if name in query:
                return query[name][0]
        return None

    def _range(self, query: dict, json_name: str, proto_name: str) -> tuple | None:
        start = self._param(query, f"query.{json_name}.start", f"query.{proto_name}.start")
        end = self._param(query, f"query.{json_name}.end", f"query.{proto_name}.end")
        inclusive = (
            self._param(query, f"query.{json_name}.inclusive", f"query.{proto_name}.inclusive") or ""
        ).lower() == "true"
        if start is None and end is None:
            return None
        return (_parse(start) if start else None, _parse(end) if end else None, inclusive)

    @staticmethod
    def _within(value: datetime | None, bounds: tuple | None) -> bool:
        if bounds is None:
            return True
        if value is None:
            return False
        start, end, inclusive = bounds
        if start is not None and (value < start or (value == start and not inclusive)):
            return False
        return not (end is not None and (value > end or (value == end and not inclusive)))

    def list_jobs(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        ranges = {
            "created": self._range(query, "createdTimeRange", "created_time_range"),
            "updated": self._range(query, "updatedTimeRange", "updated_time_range"),
            "completed": self._range(query, "completedTimeRange", "completed_time_range"),
        }
        status = self._param(query, "query.status")
        if status is not None:
            if status.isdigit() and int(status) < len(JOB_STATUSES):
                status = JOB_STATUSES[int(status)]
            if status not in JOB_STATUSES:
                raise BadRequest(f"invalid value for enum field query.status: {status!r}")
            if status == "JOB_STATUS_UNSPECIFIED":  # the zero value means "no filter"
                status = None
        policy = self._param(query, "query.policyId", "query.policy_id")
        size = int(self._param(query, "pageSize", "page_size") or 0) or 1000  # 0 = unset (gosdk types.go)
        if size < 0:
            raise BadRequest(f"pageSize must not be negative, got {size}")
        token = self._param(query, "pageToken", "page_token")
        offset = int(base64.b64decode(token).decode()) if token else 0
        with self.lock:
            jobs = [
                j
                for j in self.jobs.values()
                if all(self._within(j[field], bounds) for field, bounds in ranges.items())
                and (status is None or j["status"] == status)
                and (policy is None or j["policy"] == policy)
            ]
            jobs.sort(key=lambda j: (j["created"], j["uuid"]), reverse=True)
            if self.realistic:  # the order is undocumented
                random.Random(len(jobs)).shuffle(jobs)
            page = [self._job(j, full=False) for j in jobs[offset : offset + size]]
        more = offset + size < len(jobs)
        return (
            200,
            {"jobs": page, "nextPageToken": base64.b64encode(str(offset + size).encode()).decode() if more else ""},
            {},
        )

    def get_job(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        job_uuid = match["uuid"]
        self.count(job_uuid)
        with self.lock:
            job = self.jobs.get(job_uuid)
        if job is None:
            return self.error(404, "not_found", "job not found")
        return 200, self.cached(job_uuid, lambda: {"job": self._job(job, full=True)}), {}
