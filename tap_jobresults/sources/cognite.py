"""Cognite Data Fusion entity matching: predict jobs and pipeline runs.

Paths are under {base_url}/api/v1/projects/{project}. Pipelines are documented only under the
20230101 beta, so pipeline calls send `cdf-version: 20230101-beta`.
"""

from __future__ import annotations

import typing as t

import msgspec

from tap_jobresults.errors import MalformedPayload
from tap_jobresults.lifecycle import Bookmark, FetchedJob, JobKey, JobRef
from tap_jobresults.sources.base import JobSource, NewestFirstListing, require, timestamp
from tap_jobresults.streams import JobStream, ResultStream

TERMINAL = frozenset({"Completed", "Failed"})  # SDK JobStatus; Queued/Running/Distributing/... are not
PIPELINE_HEADERS = {"cdf-version": "20230101-beta"}
PAGE_LIMIT = 100  # "maximum results returned by the server is 100"


def _project_path(section: t.Mapping[str, t.Any]) -> str:
    return f"/api/v1/projects/{section['project']}"


def _objects(source: str, what: str, body: dict, field: str) -> list:
    """An optional array of objects (absent or null while a job is unfinished)."""
    items = require(source, what, body, field, list, optional=True) or []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedPayload(source, what, f"{field}[{index}] should be an object, got {type(item).__name__}")
    return items


# --------------------------------------------------------------------------------------------------
# Predict jobs


class ConfiguredJobs(Bookmark):
    """Predict jobs come from config, not a listing: remember which ones are finished.

    {"finished": {job_id: status}}; bounded by the configured list (pruned to it every run).
    """

    def __init__(self, state: dict, configured: list[str]) -> None:
        finished = state.setdefault("finished", {})
        for job_id in set(finished) - set(configured):
            del finished[job_id]
        state.pop("pending", None)
        self._state = state

    @property
    def pending(self) -> dict[str, str]:
        return {}

    def advance(self, key: JobKey, *, done: bool, missing: bool = False) -> None:
        if done:
            self._state["finished"][key.id] = "missing" if missing else "finished"


class _Match(msgspec.Struct):
    score: float | None = None
    target: dict | None = None


class _Item(msgspec.Struct):
    source: dict | None = None
    matches: list[_Match] | None = None


class JobSummary(msgspec.Struct):
    """The fields every contextualization job shares (a predict job, a pipeline run)."""

    status: str
    jobId: int
    createdTime: int | None = None
    startTime: int | None = None
    statusTime: int | None = None
    errorMessage: str | None = None

    def fields(self, what: str) -> dict[str, t.Any]:
        """The job-level columns they share, times converted from ms epochs."""
        return {
            "status": self.status,
            "created_time": timestamp("cognite", what, self.createdTime, "createdTime"),
            "start_time": timestamp("cognite", what, self.startTime, "startTime"),
            "status_time": timestamp("cognite", what, self.statusTime, "statusTime"),
            "error_message": self.errorMessage,
        }


class PredictJobBody(JobSummary):
    """GET /context/entitymatching/jobs/{jobId}. `items` stay raw JSON slices until emitted, so a
    100k-item job costs its body's bytes in memory, not several times that in Python objects."""

    items: list[msgspec.Raw] | None = None


_ITEM = msgspec.json.Decoder(_Item)
_ANY = msgspec.json.Decoder()


class PredictJobs(JobSource):
    vendor = "cognite"
    terminal_statuses = TERMINAL

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs = {str(job["job_id"]): job.get("job_token") for job in self.section.get("entity_matching_jobs") or []}

    def label(self, partition: str, job_id: str) -> str:
        return f"CDF predict job {job_id}"

    def bookmark(self, state: dict) -> Bookmark:
        return ConfiguredJobs(state, list(self.jobs))

    def discover(self, partition: str, bookmark: Bookmark) -> list[JobRef]:
        # CDF documents no list endpoint for predict jobs, so job IDs come from config, in its order.
        finished = bookmark._state["finished"]
        return [
            JobRef(JobKey("", job_id), self.label(partition, job_id)) for job_id in self.jobs if job_id not in finished
        ]

    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        what = ref.label
        token = self.jobs.get(ref.key.id)
        body: PredictJobBody = self.client.get_json(
            f"{_project_path(self.section)}/context/entitymatching/jobs/{ref.key.id}",
            what,
            headers={"X-Job-Token": token} if token else None,
            decode_as=PredictJobBody,
        )
        items = body.items or []
        for index, raw in enumerate(items):  # check every item before the first one is written
            try:
                _ITEM.decode(raw)
            except msgspec.ValidationError as exc:
                raise MalformedPayload("cognite", what, f"items[{index}]: {exc}") from None
        finished = self.is_finished(body.status)
        record: dict[str, t.Any] = {
            "job_id": body.jobId,
            **body.fields(what),
            "finished": finished,
            "item_count": len(items) if finished else None,
        }
        if self.is_before_start(record["created_time"]):
            return FetchedJob(ref, finished=True, record=None)
        return FetchedJob(ref, finished=finished, record=record, payload=items if finished and items else None)


class EntityMatchingJobsStream(JobStream):
    name = "entity_matching_jobs"
    primary_keys = ("job_id",)
    source_class = PredictJobs


class MatchResultsStream(ResultStream):
    name = "match_results"
    primary_keys = ("job_id", "item_index")
    parent_stream_type = EntityMatchingJobsStream

    def rows(self, job: FetchedJob) -> t.Iterable[dict]:
        job_id = job.fields["job_id"]
        for index, raw in enumerate(job.payload):
            item = _ANY.decode(raw)
            matches = item.get("matches") or []
            scored = [m for m in matches if isinstance(m.get("score"), (int, float))]
            top = max(scored, key=lambda m: m["score"]) if scored else None
            yield {
                "job_id": job_id,
                "item_index": index,
                "source": item.get("source"),
                "matches": matches,
                "match_count": len(matches),
                "top_score": top.get("score") if top else None,
                "top_target": top.get("target") if top else None,
            }


# --------------------------------------------------------------------------------------------------
# Pipeline runs


class _PipelineMatch(msgspec.Struct):
    matchType: str | None = None
    score: float | None = None
    source: dict | None = None
    target: dict | None = None


class _SuggestedRule(msgspec.Struct):
    matches: list[dict] | None = None  # RuleMatch objects, kept as sent
    inputPattern: str | None = None
    predictPattern: str | None = None
    numMatches: int | None = None
    avgScore: float | None = None
    matchIndex: list[int] | None = None


class _GeneratedRule(msgspec.Struct):
    matches: list[dict] | None = None
    numConflicts: int | None = None
    numOverlaps: int | None = None


class RunBody(JobSummary):
    """GET .../pipelines/{id}/runs/{runId}: a RunSummary plus the results, whose arrays stay raw
    JSON slices until emitted (a run over a large asset set can be large)."""

    errors: list[str] | None = None
    matches: list[msgspec.Raw] | None = None
    suggestedRules: list[msgspec.Raw] | None = None
    generatedRules: list[msgspec.Raw] | None = None


_SUMMARY_FIELDS = JobSummary.__struct_fields__
_RUN_ELEMENTS: dict[str, msgspec.json.Decoder] = {
    "matches": msgspec.json.Decoder(_PipelineMatch),
    "suggestedRules": msgspec.json.Decoder(_SuggestedRule),
    "generatedRules": msgspec.json.Decoder(_GeneratedRule),
}


class PipelineRuns(JobSource):
    vendor = "cognite"
    terminal_statuses = TERMINAL

    def label(self, partition: str, job_id: str) -> str:
        return f"CDF pipeline {partition} run {job_id}"

    def _pipelines_path(self) -> str:
        return f"{_project_path(self.section)}/context/entitymatching/pipelines"

    def partitions(self) -> list[str]:
        configured = self.section.get("pipeline_ids")
        if configured is not None:  # an empty list means: no pipelines
            return [str(pid) for pid in dict.fromkeys(configured)]
        ids: list[str] = []
        cursor = None
        while True:
            params: dict[str, t.Any] = {"limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            body = self.client.get_json(
                self._pipelines_path(), "listing CDF pipelines", params=params, headers=PIPELINE_HEADERS
            )
            for item in _objects("cognite", "listing CDF pipelines", body, "items"):
                ids.append(str(require("cognite", "listing CDF pipelines", item, "id", int)))
            next_cursor = body.get("nextCursor")
            if not next_cursor or next_cursor == cursor:
                return list(dict.fromkeys(ids))
            cursor = next_cursor

    def discover(self, partition: str, bookmark: Bookmark) -> list[JobRef]:
        what = f"listing runs of CDF pipeline {partition}"
        # The order of the runs listing is documented nowhere, and runs could as well be sorted by
        # status time: stopping early could skip a run for good, so the listing is read whole
        # (summaries, 100 a page); only runs that are new or pending are fetched.
        listing = NewestFirstListing(
            what, bookmark, self.start_date, lambda job_id: self.label(partition, job_id), early_stop=False
        )
        cursor = None
        while True:
            params: dict[str, t.Any] = {"limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            body = self.client.get_json(
                f"{self._pipelines_path()}/{partition}/runs", what, params=params, headers=PIPELINE_HEADERS
            )
            go_on = True
            for summary in _objects("cognite", what, body, "items"):
                run_id = require("cognite", what, summary, "jobId", int)
                created = timestamp("cognite", what, summary.get("createdTime"), "createdTime") or ""
                go_on = listing.offer(
                    JobKey(created, str(run_id)), summary
                )  # the whole page: a later job may prove the order wrong
            next_cursor = body.get("nextCursor")
            if not go_on or not next_cursor or next_cursor == cursor:
                return listing.result()
            cursor = next_cursor

    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        what = ref.label
        has_results = ref.summary is None or self.is_finished(ref.summary.get("status"))
        if has_results:
            body: RunBody = self.client.get_json(
                f"{self._pipelines_path()}/{partition}/runs/{ref.key.id}",
                what,
                headers=PIPELINE_HEADERS,
                decode_as=RunBody,
            )
            for field, decoder in _RUN_ELEMENTS.items():  # check every element before the first is written
                for index, raw in enumerate(getattr(body, field) or []):
                    try:
                        decoder.decode(raw)
                    except msgspec.ValidationError as exc:
                        raise MalformedPayload("cognite", what, f"{field}[{index}]: {exc}") from None
        else:  # an unfinished run: the listing's summary says all there is to say
            try:
                summary = {key: ref.summary[key] for key in _SUMMARY_FIELDS if key in ref.summary}
                body = msgspec.convert(summary, RunBody)
            except msgspec.ValidationError as exc:
                raise MalformedPayload("cognite", what, f"run summary: {exc}") from None
        finished = self.is_finished(body.status)
        counts = {
            field: len(getattr(body, field) or []) if has_results and finished else None for field in _RUN_ELEMENTS
        }
        record: dict[str, t.Any] = {
            "pipeline_id": int(partition),
            "run_id": body.jobId,
            **body.fields(what),
            "finished": finished,
            "errors": body.errors,
            "match_count": counts["matches"],
            "suggested_rule_count": counts["suggestedRules"],
            "generated_rule_count": counts["generatedRules"],
        }
        if self.is_before_start(record["created_time"]):
            return FetchedJob(ref, finished=True, record=None)
        payload = body if has_results and finished and any(counts.values()) else None
        return FetchedJob(ref, finished=finished, record=record, payload=payload)


class PipelineRunsStream(JobStream):
    name = "pipeline_runs"
    primary_keys = ("pipeline_id", "run_id")
    source_class = PipelineRuns


class _RunResultStream(ResultStream):
    parent_stream_type = PipelineRunsStream
    field: str

    def rows(self, job: FetchedJob) -> t.Iterable[dict]:
        keys = {"pipeline_id": job.fields["pipeline_id"], "run_id": job.fields["run_id"]}
        for index, raw in enumerate(getattr(job.payload, self.field) or []):
            yield self.row(keys, index, _ANY.decode(raw))

    def row(self, keys: dict, index: int, item: dict) -> dict:
        raise NotImplementedError


class PipelineMatchesStream(_RunResultStream):
    name = "pipeline_matches"
    primary_keys = ("pipeline_id", "run_id", "match_index")
    field = "matches"

    def row(self, keys: dict, index: int, item: dict) -> dict:
        return {
            **keys,
            "match_index": index,
            "match_type": item.get("matchType"),
            "score": item.get("score"),
            "source": item.get("source"),
            "target": item.get("target"),
        }


class SuggestedRulesStream(_RunResultStream):
    name = "suggested_rules"
    primary_keys = ("pipeline_id", "run_id", "rule_index")
    field = "suggestedRules"

    def row(self, keys: dict, index: int, item: dict) -> dict:
        return {
            **keys,
            "rule_index": index,
            "input_pattern": item.get("inputPattern"),
            "predict_pattern": item.get("predictPattern"),
            "num_matches": item.get("numMatches"),
            "avg_score": item.get("avgScore"),
            "match_index": item.get("matchIndex"),
            "matches": item.get("matches"),
        }


class GeneratedRulesStream(_RunResultStream):
    name = "generated_rules"
    primary_keys = ("pipeline_id", "run_id", "rule_index")
    field = "generatedRules"

    def row(self, keys: dict, index: int, item: dict) -> dict:
        return {
            **keys,
            "rule_index": index,
            "num_conflicts": item.get("numConflicts"),
            "num_overlaps": item.get("numOverlaps"),
            "matches": item.get("matches"),
        }


STREAMS = (
    EntityMatchingJobsStream,
    MatchResultsStream,
    PipelineRunsStream,
    PipelineMatchesStream,
    SuggestedRulesStream,
    GeneratedRulesStream,
)
