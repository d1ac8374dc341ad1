"""Fake CDF entity matching: predict jobs, pipelines and pipeline runs (api-notes §1-3).

Every response carries `x-request-id`; errors use `{"error": {"code", "message", "missing"?}}`;
pipeline endpoints answer only with `cdf-version: 20230101-beta` (or `beta`); times are ms epochs.

Pipeline run matches are `model` (scored) or `previously-confirmed` (no score), and generated rules
carry the rule itself (`extractors`, `conditions`, `priority`), as Cognite's entity-matching UI reads them.

Realistic mode (`self.realistic`): predict jobs carry `modelId` and items `matchFrom` (python SDK),
matches come unsorted and some without a score; a running predict job already returns partial items
(the tap must ignore them); a job created with a token is refused without `X-Job-Token`; run listings
are unsorted; a queued run has `startTime: null`; a run without suggested rules has no
`suggestedRules` key at all (the experimental SDK's integration test).
"""

from __future__ import annotations

import base64
import itertools
import random
import time
import typing as t
import uuid

from tests.fakeapi.base import BadRequest, Response, VendorServer, bearer

TERMINAL = {"Completed", "Failed"}
EPOCH_2025 = 1735689600000  # 2025-01-01T00:00:00Z in ms


class CogniteServer(VendorServer):
    name = "cognite"
    project = "fakeproject"
    static_token = "cdf-static-token-0123456789"
    P = r"/api/v1/projects/(?P<project>[^/]+)/context/entitymatching"
    routes: t.ClassVar = [
        ("GET", P + r"/jobs/(?P<job>[^/]+)", "get_predict_job"),
        ("GET", P + r"/pipelines", "list_pipelines"),
        ("GET", P + r"/pipelines/(?P<pid>\d+)", "get_pipeline"),
        ("GET", P + r"/pipelines/(?P<pid>\d+)/runs", "list_runs"),
        ("GET", P + r"/pipelines/(?P<pid>\d+)/runs/(?P<run>[^/]+)", "get_run"),
    ]

    def __init__(self, idp: t.Any) -> None:
        super().__init__()
        self.idp = idp
        self.predict_jobs: dict[int, dict] = {}
        self.pipelines: dict[int, dict] = {}
        self.runs: dict[int, dict[int, dict]] = {}
        self.runs_order = "desc"
        self.undated_in_listing: set[int] = set()  # run IDs listed without createdTime (a test's switch)
        self.match_to_spelling = False  # every match spelled `matchTo` (realistic: every 4th item's)
        self._ids = itertools.count(4_000_000_000_001)
        self._clock = itertools.count(EPOCH_2025, 60_000)  # one minute apart, in creation order
        self._rng = random.Random(42)

    # -- envelopes --------------------------------------------------------------------------------

    def authorized(self, headers: dict) -> bool:
        token = bearer(headers)
        return token == self.static_token or (token is not None and self.idp.is_valid(token))

    def error(self, status: int, code: str, message: str) -> Response:
        return status, {"error": {"code": status, "message": message}}, {}

    def extra_headers(self) -> dict:
        return {"x-request-id": uuid.uuid4().hex[:16]}

    # -- control ---------------------------------------------------------------------------------

    def add_predict_job(
        self,
        items: int = 10,
        matches_per_item: int = 2,
        status: str = "Completed",
        job_token: str | None = None,
        error_message: str | None = None,
        created_ms: int | None = None,
        job_id: int | None = None,
    ) -> int:
        job_id = job_id or next(self._ids)
        created = created_ms or next(self._clock)
        with self.lock:
            self.predict_jobs[job_id] = {
                "jobId": job_id,
                "status": status,
                "createdTime": created,
                "startTime": created + 1000,
                "statusTime": created + 2000,
                "errorMessage": error_message,
                "token": job_token,
                "n_items": items,
                "per_item": matches_per_item,
            }
        return job_id

    def add_pipeline(self, pipeline_id: int | None = None, name: str | None = None) -> int:
        pid = pipeline_id or next(self._ids)
        with self.lock:
            self.pipelines[pid] = {
                "id": pid,
                "externalId": f"pipeline-{pid}",
                "name": name or f"pipeline {pid}",
                "owner": "alice@example.com",
                "createdTime": EPOCH_2025,
                "lastUpdatedTime": EPOCH_2025,
                "sources": {"dataSetIds": [{"id": 1}], "resource": "assets"},
                "targets": {"dataSetIds": [{"id": 2}], "resource": "assets"},
                "modelParameters": {"featureType": "bigram"},
                "scoreThreshold": 0.7,
                "scheduleInterval": 7200,
            }
            self.runs.setdefault(pid, {})
        return pid

    def add_run(
        self,
        pipeline_id: int,
        status: str = "Completed",
        matches: int = 5,
        suggested_rules: int = 2,
        generated_rules: int = 1,
        errors: list[str] | None = None,
        error_message: str | None = None,
        created_ms: int | None = None,
        run_id: int | None = None,
    ) -> int:
        run_id = run_id or next(self._ids)
        created = created_ms or next(self._clock)
        with self.lock:
            self.runs.setdefault(pipeline_id, {})[run_id] = {
                "jobId": run_id,
                "status": status,
                "createdTime": created,
                "startTime": created + 1000,
                "statusTime": created + 2000,
                "errorMessage": error_message,
                "errors": errors or [],
                "n": (matches, suggested_rules, generated_rules),
            }
        return run_id

    def set_status(self, job_id: int, status: str) -> None:
        with self.lock:
            job = self.predict_jobs[job_id]
            job["status"], job["statusTime"] = status, int(time.time() * 1000)
        self.invalidate(("job", job_id))

    def set_run_status(self, pipeline_id: int, run_id: int, status: str) -> None:
        with self.lock:
            run = self.runs[pipeline_id][run_id]
            run["status"], run["statusTime"] = status, int(time.time() * 1000)
        self.invalidate(("run", run_id))

    def finish_all(self) -> None:
        with self.lock:
            for job in self.predict_jobs.values():
                if job["status"] not in TERMINAL:
                    self.set_status(job["jobId"], "Completed")
            for pid, runs in self.runs.items():
                for run in runs.values():
                    if run["status"] not in TERMINAL:
                        self.set_run_status(pid, run["jobId"], "Completed")

    # -- payloads --------------------------------------------------------------------------------

    def _entity(self, kind: str, n: int) -> dict:
        return {
            "name": f"{kind}-{n}",
            "id": n,
            "externalId": f"{kind[0]}{n}",
            "meta": {"site": "oslo", "tag": f"T-{n % 97}"},
        }

    def _predict_body(self, job: dict) -> dict:
        body = {k: job[k] for k in ("status", "createdTime", "startTime", "statusTime", "jobId", "errorMessage")}
        items = []
        finished = job["status"] == "Completed"
        partial = self.realistic and job["status"] not in TERMINAL  # unfinished jobs still show what is done
        if finished or partial:
            rng = random.Random(job["jobId"])
            for i in range(job["n_items"] if finished else job["n_items"] // 2 + 1):
                count = 0 if i % 5 == 4 else job["per_item"]
                scores = sorted((round(rng.random(), 4) for _ in range(count)), reverse=True)
                matches = [{"score": s, "target": self._entity("asset", rng.randrange(10_000))} for s in scores]
                if self.match_to_spelling or (self.realistic and i % 4 == 3):
                    # The JS SDK's older naming (api-notes §6: `{matchFrom, matches: [{matchTo, score}]}`).
                    matches = [{"score": m["score"], "matchTo": m["target"]} for m in matches]
                if self.realistic:  # unsorted, and some without a score
                    rng.shuffle(matches)
                    for j, m in enumerate(matches):
                        if (i + j) % 3 == 2:
                            del m["score"]
                item = {"source": self._entity("source", i), "matches": matches}
                if self.realistic:
                    item["matchFrom"] = self._entity("source", i)
                items.append(item)
        body["items"] = items
        if self.realistic:
            body["modelId"] = job["jobId"] % 1_000_003
        return body

    def _pipeline_body(self, pid: int) -> dict:
        """The pipeline plus `lastRun`, the newest run's summary (api-notes §3.2), when it has runs."""
        body = dict(self.pipelines[pid])
        runs = self.runs.get(pid, {}).values()
        if runs:
            body["lastRun"] = self._summary(max(runs, key=lambda r: (r["createdTime"], r["jobId"])))
        return body

    def _summary(self, run: dict) -> dict:
        summary = {k: run[k] for k in ("status", "createdTime", "startTime", "statusTime", "jobId", "errorMessage")}
        if self.realistic and run["status"] == "Queued":
            summary["startTime"] = None
        return summary

    def _run_body(self, run: dict) -> dict:
        body = self._summary(run)
        n_matches, n_suggested, n_generated = run["n"] if run["status"] == "Completed" else (0, 0, 0)
        rng = random.Random(run["jobId"])
        rule_match = lambda i: {  # noqa: E731
            "sourceKeyField": "name",
            "targetKeyField": "name",
            "source": self._entity("source", i),
            "target": self._entity("asset", i),
            "existingMatchType": "none",
            "consistentMatch": bool(i % 2),
        }
        body["matches"] = [
            # previously-confirmed matches come from existing relationships and carry no score
            {
                "matchType": "previously-confirmed",
                "source": self._entity("source", i),
                "target": self._entity("asset", i),
            }
            if i % 3 == 2
            else {
                "matchType": "model",
                "score": round(rng.random(), 4),
                "source": self._entity("source", i),
                "target": self._entity("asset", i),
            }
            for i in range(n_matches)
        ]
        body["suggestedRules"] = [
            {
                "matches": [rule_match(i)],
                "inputPattern": f"P{i}-[0-9]+",
                "predictPattern": f"A{i}-[0-9]+",
                "numMatches": 3 + i,
                "avgScore": 0.73,
                "matchIndex": [i, i + 1],
            }
            for i in range(n_suggested)
        ]
        body["generatedRules"] = [
            {
                "extractors": [
                    {"entitySet": "sources", "extractorType": "regex", "field": "name", "pattern": f"^P{i}-(\\d+)$"},
                    {"entitySet": "targets", "extractorType": "regex", "field": "name", "pattern": f"^A{i}-(\\d+)$"},
                ],
                "conditions": [{"conditionType": "equals", "arguments": [[0, 0], [1, 0]]}],
                "priority": 10 * (i + 1),
                "matches": [rule_match(i)],
                "numConflicts": i,
                "numOverlaps": 1,
            }
            for i in range(n_generated)
        ]
        body["errors"] = run["errors"]
        if self.realistic and not body["suggestedRules"]:
            del body["suggestedRules"]
        return body

    # -- routes ----------------------------------------------------------------------------------

    def _project_ok(self, match: t.Any) -> Response | None:
        if match["project"] != self.project:
            return self.error(403, "forbidden", f"no access to project {match['project']}")
        return None

    def _beta(self, headers: dict) -> Response | None:
        version = {k.lower(): v for k, v in headers.items()}.get("cdf-version")
        if version not in ("20230101-beta", "beta"):
            return self.error(400, "invalid", "entity matching pipelines require cdf-version: 20230101-beta")
        return None

    def _missing(self, ident: t.Any) -> Response:
        status, body, extra = self.error(404, "not_found", "Ids not found")
        body["error"]["missing"] = [{"id": ident}]
        return status, body, extra

    def get_predict_job(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        if denied := self._project_ok(match):
            return denied
        try:
            job_id = int(match["job"])
        except ValueError:
            raise BadRequest("jobId must be an integer") from None
        self.count(job_id)
        with self.lock:
            job = self.predict_jobs.get(job_id)
        if job is None:
            return self._missing(job_id)
        sent = {k.lower(): v for k, v in headers.items()}.get("x-job-token")
        if job["token"] and sent is not None and sent != job["token"]:
            return self.error(403, "forbidden", "invalid X-Job-Token")
        if job["token"] and sent is None and self.realistic:  # without assetsAcl:READ the token is the key
            return self.error(
                403, "forbidden", "Resource not found. This may also be due to insufficient access rights."
            )
        return 200, self.cached(("job", job_id), lambda: self._predict_body(job)), {}

    def _page(self, items: list, query: dict) -> dict:
        limit = int(query.get("limit", ["100"])[0])
        if limit < 1:
            raise BadRequest(f"limit must be at least 1, got {limit}")
        limit = min(limit, 100)  # "maximum results returned by the server is 100, even if you specify a higher limit"
        cursor = query.get("cursor", [None])[0]
        start = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "items": page,
            "nextCursor": base64.urlsafe_b64encode(str(start + limit).encode()).decode() if more else None,
        }

    def list_pipelines(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        if denied := self._project_ok(match) or self._beta(headers):
            return denied
        with self.lock:
            items = [self._pipeline_body(pid) for pid in self.pipelines]
        return 200, self._page(items, query), {}

    def get_pipeline(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        if denied := self._project_ok(match) or self._beta(headers):
            return denied
        pid = int(match["pid"])
        with self.lock:
            pipeline = self._pipeline_body(pid) if pid in self.pipelines else None
        return (200, pipeline, {}) if pipeline else self._missing(pid)

    def list_runs(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        if denied := self._project_ok(match) or self._beta(headers):
            return denied
        pid = int(match["pid"])
        if pid not in self.pipelines:
            return self._missing(pid)
        with self.lock:
            runs = [self._summary(r) for r in self.runs.get(pid, {}).values()]
        runs.sort(key=lambda r: (r["createdTime"], r["jobId"]), reverse=self.runs_order == "desc")
        if self.runs_order == "shuffled" or self.realistic:  # the order is undocumented
            random.Random(pid).shuffle(runs)
        for summary in runs:  # a listing that leaves a run undated: only its details say when it was created
            if summary["jobId"] in self.undated_in_listing:
                del summary["createdTime"]
        return 200, self._page(runs, query), {}

    def get_run(self, match: t.Any, query: dict, headers: dict, form: dict) -> Response:
        if denied := self._project_ok(match) or self._beta(headers):
            return denied
        pid, run_id = int(match["pid"]), int(match["run"])
        self.count(run_id)
        with self.lock:
            run = self.runs.get(pid, {}).get(run_id)
        if run is None:
            return self._missing(run_id)
        return 200, self.cached(("run", run_id), lambda: self._run_body(run)), {}
