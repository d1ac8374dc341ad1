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
import typing as t
from pathlib import Path

from singer_sdk import Stream
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_jobresults import guard, sdk_hooks

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

    from tap_jobresults.engine import Engine, JobUnit
    from tap_jobresults.lifecycle import Bookmark, Failures, FetchedJob
    from tap_jobresults.report import Reporter
    from tap_jobresults.sources.base import JobSource

SCHEMAS = Path(__file__).parent / "schemas"
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
        # Also under a record limit (`--test`, the SDK's standard tests): the SDK stops before writing
        # the record over the limit, and a job is bookmarked only after its records were all written,
        # so the STATE holds what was fully emitted (or the input bookmark). No result-stream limit
        # applies outside BATCH output, where bookmarks are committed only at the end of a partition.
        super()._write_state_message()

    def _write_record_message(self, record: Record) -> None:
        if not sdk_hooks.write_one_fast(self, record):
            super()._write_record_message(record)

    def _generate_record_messages(self, record: Record) -> t.Generator[t.Any, None, None]:
        # The SDK's record path, also taken by the engine's encoder on a fetch worker (sdk_hooks.RecordEncoder).
        yield from super()._generate_record_messages(self._flattenable(record))

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
    """One record per job; owns the job lifecycle of its source (run by engine.Engine)."""

    source_class: type[JobSource]
    result_streams: list[ResultStream]

    def __init__(
        self, tap: t.Any, source: JobSource, failures: Failures, width: int, reporter: Reporter, engine: Engine
    ) -> None:
        super().__init__(tap)
        self.source = source
        self.failures = failures
        self.width = max(1, width)
        self.reporter = reporter
        self.engine = engine
        self.current: JobUnit | None = None
        self.result_streams = []

    @property
    def batching(self) -> bool:
        return self.get_batch_config(self.config) is not None

    def _write_state_message(self) -> None:
        if self.engine.done and not self.hands_records_to_sdk:
            # The engine wrote the last STATE of every source; another copy per stream would add
            # a whole state per job stream to the output.
            sdk_hooks.mark_state_flushed(self)
            sdk_hooks.flush_output(self)
            return
        super()._write_state_message()

    @property
    def hands_records_to_sdk(self) -> bool:
        """BATCH output and `--test` take the SDK's own record path, one stream at a time."""
        return self.batching or sdk_hooks.is_dry_run(self)

    def get_records(self, context: Context | None) -> t.Iterable[Record]:
        for stream in self.result_streams:
            if stream.selected:
                # Every selected table exists after the first run, even one that has no record yet (a
                # quiet account): loaders create a table on its SCHEMA, and dbt's sources need them.
                sdk_hooks.write_schema(stream)
        if self.hands_records_to_sdk:
            for job in self.engine.drive([self], yield_records=True):
                yield job.record  # type: ignore[misc]
            return
        if self.engine.done:
            return  # the first job stream synced every source at once
        streams = [s for s in self._tap.streams.values() if isinstance(s, JobStream) and s.active]
        for job_stream in streams:
            for result_stream in job_stream.result_streams:
                if result_stream.selected:
                    sdk_hooks.write_schema(result_stream)
        self.engine.run(streams)
        yield from ()

    @property
    def active(self) -> bool:
        return self.selected or self.has_selected_descendents

    def open_partitions(self, partitions: list[str]) -> dict[str, Bookmark]:
        """The bookmarks of this run's partitions (on the writer: state changes there only)."""
        state: dict = self.stream_state.setdefault("job_bookmarks", {})
        for stale in set(state) - set(partitions):
            # A pipeline no longer configured or listed: forget it, so state stays bounded (null, not
            # removed: Meltano's merge would bring a removed key back from an older state).
            state[stale] = None
        for partition in partitions:
            if state.get(partition) is None:
                state[partition] = {}
        return {partition: self.source.bookmark(state[partition]) for partition in partitions}

    def build_output(
        self, job: FetchedJob, streams: list[ResultStream], *, job_record: bool, as_objects: bool
    ) -> guard.Output:
        """Every record of a fetched job, built, encoded and checked (guard.Output) on the fetch
        worker, before the first of them is written: the result records, then the job's own."""
        encode = sdk_hooks.RecordEncoder()
        output = guard.Output((lambda stream, record: None) if as_objects else encode)
        if job.record is not None:
            if job.payload is not None:
                for stream in streams:
                    for row in stream.rows(job):
                        output.add(stream, row)
            if job_record and self.selected:
                output.add(self, job.record)
        output.finish()
        job.payload = None  # what the records were built from: not needed any more
        return output

    def generate_child_contexts(self, record: Record, context: Context | None) -> t.Iterable[Context | None]:
        # Result records are written by the engine; only BATCH output uses the SDK's child syncs.
        unit = self.current
        if self.batching and unit is not None and unit.objects_of_any():
            yield {"job": unit.ref.label}


class ResultStream(_JobResultsStream):
    """Records fanned out of a job's payload; the parent JobStream fetched it."""

    state_partitioning_keys: t.ClassVar[list[str]] = []  # one small state entry, not one per job
    parent: JobStream

    def rows(self, job: FetchedJob) -> t.Iterable[Record]:
        raise NotImplementedError

    def get_records(self, context: Context | None) -> t.Iterable[Record]:
        unit = self.parent.current  # BATCH output only (see JobStream.generate_child_contexts)
        if unit is not None:
            yield from unit.objects(self)

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
