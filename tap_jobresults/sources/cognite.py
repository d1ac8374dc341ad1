"""Cognite Data Fusion entity matching: predict jobs and pipeline runs.

Paths are under {base_url}/api/v1/projects/{project}. Pipelines are documented only under the
20230101 beta, so pipeline calls send `cdf-version: 20230101-beta`. Beyond the documented fields,
the vendor's own code shows more (modelId on jobs, matchFrom on items, previously-confirmed
matches without a score, generated rules with extractors/conditions/priority): columns where
analysts need them, `extra_fields` for the rest.
"""

from __future__ import annotations

import typing as t

from tap_jobresults.errors import MalformedPayload
from tap_jobresults.lifecycle import Bookmark, ConfiguredJobs, FetchedJob, JobKey, JobRef
from tap_jobresults.records import (
    build,
    col,
    to_int,
    to_int_list,
    to_num,
    to_obj,
    to_str,
    to_str_list,
    to_ts,
    typed,
)
from tap_jobresults.sources.base import (
    BODY,
    JobSource,
    Listing,
    created_of,
    decode,
    objects,
    path_id,
    require,
    same_job,
    split_body,
)
from tap_jobresults.streams import JobStream, ResultStream, load_schema

TERMINAL = frozenset({"Completed", "Failed"})  # SDK JobStatus; Queued/Running/Distributing/... are not
PIPELINE_HEADERS = {"cdf-version": "20230101-beta"}
PAGE_LIMIT = 100  # "maximum results returned by the server is 100"
# A job body may echo its X-Job-Token: a credential, never landed.
NEVER_LANDED = frozenset({"jobToken"})


def _project_path(section: t.Mapping[str, t.Any]) -> str:
    return f"/api/v1/projects/{path_id(section['project'])}"


# The fields every contextualization job shares (a predict job, a pipeline run).
SUMMARY = (
    col("status", "status", convert=to_str),
    col("created_time", "createdTime", convert=to_ts),
    col("start_time", "startTime", convert=to_ts),
    col("status_time", "statusTime", convert=to_ts),
    col("error_message", "errorMessage", convert=to_str),
)

PREDICT_JOB = (col("job_id", "jobId", convert=to_int), *SUMMARY, col("model_id", "modelId", convert=to_int))
ITEM = (
    col("source", "source", "matchFrom", convert=to_obj),  # matchFrom: the SDKs' older name
    col("matches", "matches", convert=typed(load_schema("match_results")["properties"]["matches"]), default=[]),
)
RUN = (
    col("run_id", "jobId", convert=to_int),
    *SUMMARY,
    col("errors", "errors", convert=to_str_list),
)
PIPELINE_MATCH = (
    col("match_type", "matchType", convert=to_str),
    col("score", "score", convert=to_num),
    col("source", "source", convert=to_obj),
    col("target", "target", convert=to_obj),
)
SUGGESTED_RULE = (
    col("input_pattern", "inputPattern", convert=to_str),
    col("predict_pattern", "predictPattern", convert=to_str),
    col("num_matches", "numMatches", convert=to_int),
    col("avg_score", "avgScore", convert=to_num),
    col("match_index", "matchIndex", convert=to_int_list),
    col("matches", "matches", convert=typed(load_schema("suggested_rules")["properties"]["matches"])),
)
GENERATED = load_schema("generated_rules")["properties"]
GENERATED_RULE = (
    col("extractors", "extractors", convert=typed(GENERATED["extractors"])),
    col("conditions", "conditions", convert=typed(GENERATED["conditions"])),
    col("priority", "priority", convert=to_int),
    col("num_conflicts", "numConflicts", convert=to_int),
    col("num_overlaps", "numOverlaps", convert=to_int),
    col("matches", "matches", convert=typed(GENERATED["matches"])),
)
RUN_ARRAYS = ("matches", "suggestedRules", "generatedRules")


def _top(matches: list) -> dict | None:
    """The highest-scored match (the API's order is not a ranking); unscored matches never win."""
    top = None
    for match in matches:
        if not isinstance(match, dict):
            continue
        score = match.get("score")
        if isinstance(score, (int, float)) and not isinstance(score, bool) and (top is None or score > top["score"]):
            top = match
    return top


# --------------------------------------------------------------------------------------------------
# Predict jobs


class PredictJobs(JobSource):
    name = "CDF predict jobs"
    setting = "cognite"
    terminal_statuses = TERMINAL

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        configured = {
            str(job["job_id"]): job.get("job_token") for job in self.section.get("entity_matching_jobs") or []
        }
        self.jobs = {job_id: token for job_id, token in configured.items() if self.policy.owns(self.name, job_id)}

    def label(self, partition: str, job_id: str) -> str:
        return f"CDF predict job {job_id}"

    def bookmark(self, state: dict) -> Bookmark:
        return ConfiguredJobs(state, self.policy, list(self.jobs))

    def list_label(self, partition: str) -> str:
        return "reading the configured CDF predict jobs"

    def stream_refs(self, partition: str, bookmark: Bookmark, take: t.Callable[[JobRef], None]) -> None:
        # CDF documents no list endpoint for predict jobs, so job IDs come from config, in its order.
        for job_id in self.jobs:
            if not bookmark.synced(JobKey("", job_id)):
                take(JobRef(JobKey("", job_id), self.label(partition, job_id)))

    def synced_jobs(self, partition: str, bookmark: Bookmark) -> list[JobRef]:
        assert isinstance(bookmark, ConfiguredJobs)
        return [
            JobRef(JobKey("", job_id), self.label(partition, job_id))
            for job_id in self.jobs
            if bookmark.finished.get(job_id) == "finished"
        ]

    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        what = ref.label
        token = self.jobs.get(ref.key.id)
        body = self.client.get_json(
            f"{_project_path(self.section)}/context/entitymatching/jobs/{path_id(ref.key.id)}",
            what,
            headers={"X-Job-Token": token} if token else None,
            decode_as=BODY,
        )
        job, arrays = split_body("cognite", what, body, ("items",))
        record = build(job, PREDICT_JOB, drop=NEVER_LANDED)
        if record["job_id"] is None:
            raise MalformedPayload("cognite", what, "required field 'jobId' is missing")
        same_job("cognite", what, ref.key.id, record["job_id"], "jobId")
        items = arrays.get("items") or []
        finished = self.is_finished(record["status"])
        record["finished"] = finished
        record["item_count"] = len(items) if finished else None
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
            row = build(decode(raw), ITEM)
            matches = row["matches"]
            top = _top(matches)
            row["job_id"] = job_id
            row["item_index"] = index
            row["match_count"] = len(matches)
            row["top_score"] = top["score"] if top else None
            row["top_target"] = (top.get("target") or top.get("matchTo")) if top else None
            yield row


# --------------------------------------------------------------------------------------------------
# Pipeline runs


class PipelineRuns(JobSource):
    name = "CDF pipeline runs"
    setting = "cognite"
    terminal_statuses = TERMINAL
    # The order of the runs listing is documented nowhere, and runs could as well be sorted by
    # status time: stopping early could skip a run for good, so the listing is read whole
    # (summaries, 100 a page); only runs that are new, late or pending are fetched.
    early_stop = False

    def label(self, partition: str, job_id: str) -> str:
        return f"CDF pipeline {partition} run {job_id}"

    def partition_name(self, partition: str) -> str:
        return f"CDF pipeline {partition}"

    def list_label(self, partition: str) -> str:
        return f"listing runs of CDF pipeline {partition}"

    def _pipelines_path(self) -> str:
        return f"{_project_path(self.section)}/context/entitymatching/pipelines"

    def _cursor_pages(self, path: str, what: str) -> t.Iterator[list]:
        def page(cursor: str | None) -> tuple[list, str | None]:
            params: dict[str, t.Any] = {"limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            body = self.client.get_json(path, what, params=params, headers=PIPELINE_HEADERS)
            if isinstance(body, dict) and "items" not in body:
                # CDF always sends `items` on a list page: without it, an error envelope or a proxy's
                # answer, not an empty listing (which would settle nothing, but hide the failure).
                error = body["error"] if isinstance(body.get("error"), dict) else body
                message = str(error.get("message", "no 'items' field"))[:200]
                raise MalformedPayload("cognite", what, f"a list page without 'items' ({message})")
            next_cursor = body.get("nextCursor") if isinstance(body, dict) else None
            return objects("cognite", what, body, "items"), next_cursor  # JobSource.pages refuses one not a string

        return self.pages(what, page)

    def partitions(self) -> list[str]:
        configured = self.section.get("pipeline_ids")
        if configured is not None:  # an empty list means: no pipelines
            return [str(pid) for pid in dict.fromkeys(configured)]
        ids: list[str] = []
        what = "listing CDF pipelines"
        for items in self._cursor_pages(self._pipelines_path(), what):
            ids.extend(str(require("cognite", what, item, "id", int)) for item in items)
        return list(dict.fromkeys(ids))

    def walk(self, partition: str, listing: Listing, *, full: bool = False) -> None:
        what = self.list_label(partition)
        for items in self._cursor_pages(f"{self._pipelines_path()}/{path_id(partition)}/runs", what):
            for summary in items:
                run_id = require("cognite", what, summary, "jobId", int)
                listing.offer(JobKey(created_of(summary.get("createdTime")), str(run_id)), summary)

    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        what = ref.label
        has_results = ref.summary is None or self.is_finished(ref.summary.get("status"))
        arrays: dict[str, list] = {}
        if has_results:
            body = self.client.get_json(
                f"{self._pipelines_path()}/{path_id(partition)}/runs/{path_id(ref.key.id)}",
                what,
                headers=PIPELINE_HEADERS,
                decode_as=BODY,
            )
            run, arrays = split_body("cognite", what, body, RUN_ARRAYS)
        else:  # an unfinished run: the listing's summary says all there is to say
            run = ref.summary
        record = build(run, RUN, drop=NEVER_LANDED)
        if record["run_id"] is None:
            raise MalformedPayload("cognite", what, "required field 'jobId' is missing")
        same_job("cognite", what, ref.key.id, record["run_id"], "jobId")
        finished = self.is_finished(record["status"])
        counts = {field: len(arrays.get(field) or []) if has_results and finished else None for field in RUN_ARRAYS}
        record["pipeline_id"] = int(partition)
        record["finished"] = finished
        record["match_count"] = counts["matches"]
        record["suggested_rule_count"] = counts["suggestedRules"]
        record["generated_rule_count"] = counts["generatedRules"]
        if self.is_before_start(record["created_time"]):
            return FetchedJob(ref, finished=True, record=None)
        payload = arrays if has_results and finished and any(counts.values()) else None
        return FetchedJob(ref, finished=finished, record=record, payload=payload)


class PipelineRunsStream(JobStream):
    name = "pipeline_runs"
    primary_keys = ("pipeline_id", "run_id")
    source_class = PipelineRuns


class _RunResultStream(ResultStream):
    parent_stream_type = PipelineRunsStream
    field: str
    index_column: str
    columns: tuple

    def rows(self, job: FetchedJob) -> t.Iterable[dict]:
        pipeline_id, run_id = job.fields["pipeline_id"], job.fields["run_id"]
        for index, raw in enumerate(job.payload.get(self.field) or []):
            row = build(decode(raw), self.columns)
            row["pipeline_id"] = pipeline_id
            row["run_id"] = run_id
            row[self.index_column] = index
            yield row


class PipelineMatchesStream(_RunResultStream):
    name = "pipeline_matches"
    primary_keys = ("pipeline_id", "run_id", "match_index")
    field, index_column, columns = "matches", "match_index", PIPELINE_MATCH


class SuggestedRulesStream(_RunResultStream):
    name = "suggested_rules"
    primary_keys = ("pipeline_id", "run_id", "rule_index")
    field, index_column, columns = "suggestedRules", "rule_index", SUGGESTED_RULE


class GeneratedRulesStream(_RunResultStream):
    name = "generated_rules"
    primary_keys = ("pipeline_id", "run_id", "rule_index")
    field, index_column, columns = "generatedRules", "rule_index", GENERATED_RULE


STREAMS = (
    EntityMatchingJobsStream,
    MatchResultsStream,
    PipelineRunsStream,
    PipelineMatchesStream,
    SuggestedRulesStream,
    GeneratedRulesStream,
)
