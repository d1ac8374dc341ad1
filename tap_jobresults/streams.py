"""SDK streams over the shared job lifecycle.

A JobStream (one per kind of job) drives discovery, concurrent fetching and the bookmark of its
source. For each fetched job it writes the records of its selected result streams, then the job's
own record, and only then advances the bookmark: one fetch per job feeds every stream that reads
it, and a STATE message never runs ahead of the records.

Why result records are written here and not by the SDK's parent/child mechanism: the SDK runs a
whole child sync per job (a log line, SCHEMA, two METRIC lines and a STATE each), which for many
small jobs costs more than the jobs themselves and floods the log. Result streams stay SDK streams
(catalog, selection, stream maps, SCHEMA), and their records go through the SDK's own record path
(see sdk_hooks.py). With BATCH output the SDK's child syncs are kept: they write the batch files.
"""

from __future__ import annotations

import json
import logging
import time
import typing as t
from pathlib import Path

from singer_sdk import Stream
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_jobresults import sdk_hooks
from tap_jobresults.errors import AuthError, NotFoundError, TapJobResultsError
from tap_jobresults.lifecycle import Bookmark, ConfiguredJobs, Failures, FetchedJob, Fetcher, JobRef
from tap_jobresults.report import Reporter, SourceRun

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

    from tap_jobresults.sources.base import JobSource

SCHEMAS = Path(__file__).parent / "schemas"
MAX_REFUSED_IN_A_ROW = 3
STATE_EVERY_JOB_BELOW = 200  # bookmark entries; above this, STATE is written at most once a second
STATE_INTERVAL = 1.0
logger = logging.getLogger("tap-jobresults")


def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


class _JobResultsStream(Stream):
    # Records are built here to match the schemas exactly, so the SDK's per-value type
    # conformance (half of its per-record time, measured) has nothing to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: t.Any) -> None:
        super().__init__(tap, schema=load_schema(self.name), name=self.name)
        # Incremental on the tap's own job bookmark (there is no replication key column): say so in
        # the catalog and the logs rather than the SDK's default "full_table".
        self.forced_replication_method = "INCREMENTAL"
        self._schema_sent = False
        self._typed_objects: list[str] | None = None

    def _increment_stream_state(self, latest_record: t.Any, *, context: t.Any = None) -> None:
        """The bookmark is the job lifecycle's (lifecycle.Bookmark), not a replication key value."""

    def _write_state_message(self) -> None:
        # `--test` syncs one record per stream: a STATE from it could bookmark a job whose records
        # were not all written, so test mode writes none.
        if not sdk_hooks.is_dry_run(self):
            super()._write_state_message()
        else:
            sdk_hooks.flush_output(self)

    def _write_record_message(self, record: Record) -> None:
        if not sdk_hooks.write_one_fast(self, record):
            super()._write_record_message(self._flattenable(record))

    def _flattenable(self, record: Record) -> Record:
        """With flattening on, a typed object column that is null goes out as {}: the SDK flattens {}
        to its (absent, so null) sub-columns, but would pass a null through under the object's own
        name, a property the flattened schema no longer has (and the loader rejects the record)."""
        if self._typed_objects is None:
            maps = self._tap.mapper.stream_maps.get(self.name) or []
            flat = any(getattr(m, "flattening_enabled", False) for m in maps)
            self._typed_objects = (
                [k for k, v in self.schema["properties"].items() if "properties" in v and "object" in v["type"]]
                if flat
                else []
            )
        if not self._typed_objects:
            return record
        return {**record, **{k: {} for k in self._typed_objects if record.get(k) is None}}

    def _write_schema_message(self) -> None:
        # Once per run is enough (the SDK would re-send it on every child sync).
        if not self._schema_sent:
            super()._write_schema_message()
            self._schema_sent = True


class JobStream(_JobResultsStream):
    """One record per job; owns the job lifecycle of its source."""

    source_class: type[JobSource]
    result_streams: list[ResultStream]

    def __init__(self, tap: t.Any, source: JobSource, failures: Failures, width: int, reporter: Reporter) -> None:
        super().__init__(tap)
        self.source = source
        self.failures = failures
        self.fetcher = Fetcher(width)
        self.reporter = reporter
        self.current: FetchedJob | None = None
        self.result_streams = []
        self._last_state = 0.0

    @property
    def batching(self) -> bool:
        return self.get_batch_config(self.config) is not None

    def get_records(self, context: Context | None) -> t.Iterable[Record]:
        source = self.source
        partitions_state: dict = self.stream_state.setdefault("job_bookmarks", {})
        run = self.reporter.start(self.name, source)
        selected = [rs for rs in self.result_streams if rs.selected]
        for stream in selected:
            # Every selected table exists after the first run, even one that has no record yet (a
            # quiet account): loaders create a table on its SCHEMA, and dbt's sources need them.
            sdk_hooks.write_schema(stream)
        try:
            try:
                partitions = source.partitions()
            except TapJobResultsError as exc:
                self.failures.add(f"{exc} (stream {self.name}: nothing synced)")
                run.failed_source(exc)
                return
            for stale in set(partitions_state) - set(partitions):
                # A pipeline no longer configured or listed: forget it, so state stays bounded.
                del partitions_state[stale]
            for partition in partitions:
                bookmark = source.bookmark(partitions_state.setdefault(partition, {}))
                if not (yield from self._sync_partition(source, partition, bookmark, selected, run)):
                    return
        finally:
            self.current = None
            self.reporter.finish(run)

    def _sync_partition(
        self, source: JobSource, partition: str, bookmark: Bookmark, selected: list[ResultStream], run: SourceRun
    ) -> t.Generator[Record, None, bool]:
        """Sync one partition; returns False when the whole source must stop."""
        where = source.partition_name(partition)
        backfill = backfill_streams(bookmark, selected)
        if backfill:
            if not (yield from self._backfill(source, partition, bookmark, backfill, run)):
                return False
        try:
            refs = source.discover(partition, bookmark)
        except TapJobResultsError as exc:
            if getattr(exc, "source_wide", False):
                self.failures.add(str(exc))
                run.failed_source(exc)
                return False
            self.failures.add(f"{exc}; {where} is retried next run")
            run.failed_listing()
            return True
        run.listed(len(refs))
        logger.info("%s: %d jobs to sync (new, late or unfinished)", where, len(refs))
        not_yet = set(bookmark.state.get("backfill", {}).get("streams", []))
        bookmark.state["results"] = sorted({rs.name for rs in selected} - not_yet)
        fetched = self.fetcher.map(lambda ref: source.fetch(partition, ref, bool(selected)), refs)
        deferred: list[t.Callable[[], None]] = []
        refused = 0  # consecutive 401/403 answers: one is a job's problem, several the source's
        try:
            for ref, job, error in fetched:
                refused = refused + 1 if isinstance(error, AuthError) else 0
                if refused >= MAX_REFUSED_IN_A_ROW:
                    self.failures.add(
                        f"{error}; {refused} requests in a row were refused: stopping {source.name} "
                        "(are the credentials right?)"
                    )
                    run.failed_source(error)
                    return False
                if error is not None:
                    commit = self._on_fetch_error(bookmark, ref, error, run)
                else:
                    assert job is not None
                    if job.record is not None:
                        yield from self._emit(job, selected, run)
                    commit = self._committer(bookmark, ref, job, run)
                if self.batching:
                    # BATCH files are written after this generator moves on: bookmark at the end.
                    deferred.append(commit)
                else:
                    commit()
                    self._maybe_write_state(bookmark)
                run.progress()
        except AuthError as exc:
            self.failures.add(str(exc))
            run.failed_source(exc)
            return False
        for commit in deferred:
            commit()
        bookmark.close()
        return True

    def _emit(self, job: FetchedJob, streams: list[ResultStream], run: SourceRun) -> t.Iterator[Record]:
        """The job's result records, then (through the SDK) its own record."""
        if job.payload is not None and not self.batching:
            for stream in streams:
                run.records(stream.name, sdk_hooks.write_records(stream, stream.rows(job)))
        self.current = job
        if self.selected:
            run.records(self.name, 1)
        yield job.record  # type: ignore[misc]
        self.current = None

    def _committer(self, bookmark: Bookmark, ref: JobRef, job: FetchedJob, run: SourceRun) -> t.Callable[[], None]:
        def commit() -> None:
            bookmark.advance(ref.key, done=job.finished)
            run.job_done(job.finished)

        return commit

    def _backfill(
        self, source: JobSource, partition: str, bookmark: Bookmark, streams: list[ResultStream], run: SourceRun
    ) -> t.Generator[Record, None, bool]:
        """Newly selected result streams: re-read the jobs already bookmarked, for those streams only."""
        names = ", ".join(s.name for s in streams)
        where = source.partition_name(partition)
        logger.info("%s: %s newly selected: reading the jobs already synced for it", where, names)
        try:
            refs = source.synced_jobs(partition, bookmark)
        except TapJobResultsError as exc:
            self.failures.add(f"{exc}; backfill of {names} for {where} is retried next run")
            return not getattr(exc, "source_wide", False)
        state = bookmark.state.setdefault("backfill", {"streams": sorted(s.name for s in streams)})
        through = state.get("through")
        refs = [ref for ref in refs if through is None or ref.key.as_list() > through]
        failed = False
        for ref, job, error in self.fetcher.map(lambda ref: source.fetch(partition, ref, True), refs):
            if error is not None:
                self.failures.add(f"{error} (backfill of {names}; retried next run)")
                failed = True
                break
            assert job is not None
            if job.record is not None and job.payload is not None:
                for stream in streams:
                    run.records(stream.name, sdk_hooks.write_records(stream, stream.rows(job)))
            state["through"] = ref.key.as_list()
            self._maybe_write_state(bookmark)
        if not failed:
            bookmark.state.pop("backfill", None)
            bookmark.state["results"] = sorted({*bookmark.state.get("results", []), *(s.name for s in streams)})
            logger.info("%s: backfill of %s done (%d jobs)", where, names, len(refs))
        yield from ()
        return True

    def _on_fetch_error(
        self, bookmark: Bookmark, ref: JobRef, error: TapJobResultsError, run: SourceRun
    ) -> t.Callable[[], None]:
        if isinstance(error, NotFoundError):
            # A configured job is the user's word, so its absence is worth a warning; a pending job
            # the server forgot is counted in the summary (thousands of them must not flood the log).
            log = logger.warning if isinstance(bookmark, ConfiguredJobs) else logger.debug
            log("%s no longer exists (404); it will not be fetched again", ref.label)

            def forget() -> None:
                bookmark.advance(ref.key, done=True, missing=True)
                run.job_missing()

            return forget
        self.failures.add(f"{error} ({ref.label} stays unsynced and is fetched again next run)")

        def keep() -> None:
            bookmark.advance(ref.key, done=False)
            run.job_failed()

        return keep

    def _maybe_write_state(self, bookmark: Bookmark) -> None:
        """STATE after each job while the state is small; at most once a second when it is large,
        so the STATE bytes of a run grow with the jobs, not with jobs x pending."""
        now = time.monotonic()
        if bookmark.entries() < STATE_EVERY_JOB_BELOW or now - self._last_state >= STATE_INTERVAL:
            self._last_state = now
            sdk_hooks.write_state_now(self)

    def generate_child_contexts(self, record: Record, context: Context | None) -> t.Iterable[Context | None]:
        # Result records are written in _emit; only BATCH output uses the SDK's child syncs.
        job = self.current
        if self.batching and job is not None and job.payload is not None:
            yield {"job": job.ref.label}


class ResultStream(_JobResultsStream):
    """Records fanned out of a job's payload; the parent JobStream fetched it."""

    state_partitioning_keys: t.ClassVar[list[str]] = []  # one small state entry, not one per job
    parent: JobStream

    def rows(self, job: FetchedJob) -> t.Iterable[Record]:
        raise NotImplementedError

    def get_records(self, context: Context | None) -> t.Iterable[Record]:
        job = self.parent.current  # BATCH output only (see JobStream.generate_child_contexts)
        if job is not None and job.payload is not None:
            yield from self.rows(job)

    def _write_state_message(self) -> None:
        # A result stream has no state of its own: the parent writes STATE once the job's records
        # are all out, which is the only point where the bookmark moves.
        sdk_hooks.mark_state_flushed(self)


class SyncRunsStream(_JobResultsStream):
    """One record per job-level stream per run: a heartbeat for monitoring and `meltano config test`.

    The SDK syncs streams in name order, so this one runs after every job stream and reports them.
    A job stream whose source could not be reached at all (wrong credentials, no answer) has no
    heartbeat: "the source answered" is what the heartbeat means.
    """

    name = "sync_runs"
    primary_keys = ("run_id", "job_stream")

    def __init__(self, tap: t.Any, reporter: Reporter) -> None:
        super().__init__(tap)
        self.reporter = reporter

    def get_records(self, context: Context | None) -> t.Iterable[Record]:
        for run in self.reporter.runs:
            if run.reached_source:
                yield run.heartbeat()

    def _write_state_message(self) -> None:
        # No state of its own; what it wrote goes out now (it may be the last stream of the run).
        sdk_hooks.mark_state_flushed(self)
        sdk_hooks.flush_output(self)


def backfill_streams(bookmark: Bookmark, selected: list[ResultStream]) -> list[ResultStream]:
    """Selected result streams the bookmarked jobs were synced without."""
    if bookmark.state.get("backfill"):
        names = set(bookmark.state["backfill"].get("streams", []))
        return [rs for rs in selected if rs.name in names]
    if "results" not in bookmark.state or not bookmark.has_synced():
        return []  # a new bookmark, or one from before results were tracked: nothing to backfill
    before = set(bookmark.state["results"])
    return [rs for rs in selected if rs.name not in before]
