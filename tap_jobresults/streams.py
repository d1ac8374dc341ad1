"""SDK streams over the shared job lifecycle.

A JobStream (one per kind of job) drives discovery, concurrent fetching and the bookmark. Its
result streams are SDK child streams: for each fetched job the SDK syncs them with the job's
payload before the job's own record is written; only then is the job bookmarked. So one fetch per
job feeds every stream that reads it, and a STATE message never runs ahead of the records.
"""

from __future__ import annotations

import functools
import json
import logging
import typing as t
from pathlib import Path

from singer_sdk import Stream
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_jobresults.errors import AuthError, NotFoundError, TapJobResultsError
from tap_jobresults.lifecycle import Failures, FetchedJob, Fetcher

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

    from tap_jobresults.sources.base import JobSource

SCHEMAS = Path(__file__).parent / "schemas"
MAX_REFUSED_IN_A_ROW = 3
logger = logging.getLogger("tap-jobresults")


def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


class _JobResultsStream(Stream):
    # Records are built here to match the schemas exactly, so the SDK's per-value type
    # conformance (half of its per-record time, measured) has nothing to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: t.Any) -> None:
        super().__init__(tap, schema=load_schema(self.name), name=self.name)


class JobStream(_JobResultsStream):
    """One record per job; owns the job lifecycle of its source."""

    source_class: type[JobSource]

    def __init__(self, tap: t.Any, source: JobSource, failures: Failures, width: int) -> None:
        super().__init__(tap)
        self.source = source
        self.failures = failures
        self.fetcher = Fetcher(width)
        self.current: FetchedJob | None = None

    @property
    def _wants_results(self) -> bool:
        return any(c.selected or c.has_selected_descendents for c in self.child_streams)

    def get_records(self, context: Context | None) -> t.Iterable[Record]:
        source = self.source
        batching = self.get_batch_config(self.config) is not None
        partitions_state: dict = self.stream_state.setdefault("job_bookmarks", {})
        try:
            partitions = source.partitions()
        except TapJobResultsError as exc:
            self.failures.add(f"{exc} (stream {self.name}: nothing synced)")
            return
        for stale in set(partitions_state) - set(partitions):
            # A pipeline no longer configured or listed: forget it, so state stays bounded.
            del partitions_state[stale]
        want_results = self._wants_results
        deferred: list[t.Callable[[], None]] = []
        refused = 0  # consecutive 401/403 answers: one is a job's problem, several the source's
        for partition in partitions:
            bookmark = source.bookmark(partitions_state.setdefault(partition, {}))
            try:
                refs = source.discover(partition, bookmark)
            except TapJobResultsError as exc:
                if getattr(exc, "source_wide", False):
                    self.failures.add(str(exc))
                    return
                self.failures.add(f"{exc}; this partition is retried next run")
                continue
            fetched = self.fetcher.map(functools.partial(_fetch, source, partition, want_results), refs)
            try:
                for ref, job, error in fetched:
                    refused = refused + 1 if isinstance(error, AuthError) else 0
                    if refused >= MAX_REFUSED_IN_A_ROW:
                        self.failures.add(
                            f"{error}; {refused} requests in a row were refused: stopping stream {self.name} "
                            "(are the credentials right?)"
                        )
                        return
                    if error is not None:
                        commit = self._on_fetch_error(bookmark, ref, error)
                    else:
                        assert job is not None
                        if job.record is not None:
                            self.current = job
                            yield job.record  # the SDK writes the result streams, then this record
                            self.current = None
                        commit = functools.partial(bookmark.advance, ref.key, done=job.finished)
                    if batching:
                        # BATCH files are written after this generator moves on: bookmark at the end.
                        deferred.append(commit)
                    else:
                        commit()
                        self._write_state_now()
            except AuthError as exc:
                self.failures.add(str(exc))
                return
            finally:
                self.current = None
        for commit in deferred:
            commit()

    def _on_fetch_error(self, bookmark: t.Any, ref: t.Any, error: TapJobResultsError) -> t.Callable[[], None]:
        if isinstance(error, NotFoundError):
            logger.warning("%s: %s no longer exists (404); it will not be fetched again", self.name, ref.label)
            return lambda: bookmark.advance(ref.key, done=True, missing=True)
        self.failures.add(f"{error} (stream {self.name}; {ref.label} stays unsynced and is fetched again next run)")
        return lambda: bookmark.advance(ref.key, done=False)

    def _write_state_now(self) -> None:
        self.state_manager.is_flushed = False
        self._write_state_message()

    def generate_child_contexts(self, record: Record, context: Context | None) -> t.Iterable[Context | None]:
        job = self.current
        if job is not None and job.payload is not None:
            yield {"job": job.ref.label}


def _fetch(source: JobSource, partition: str, want_results: bool, ref: t.Any) -> FetchedJob:
    return source.fetch(partition, ref, want_results)


class ResultStream(_JobResultsStream):
    """Records fanned out of a job's payload; the parent JobStream fetched it."""

    state_partitioning_keys: t.ClassVar[list[str]] = []  # one small state entry, not one per job
    parent: JobStream

    _schema_sent = False

    def rows(self, job: FetchedJob) -> t.Iterable[Record]:
        raise NotImplementedError

    def get_records(self, context: Context | None) -> t.Iterable[Record]:
        job = self.parent.current
        if job is not None and job.payload is not None:
            yield from self.rows(job)

    def _write_state_message(self) -> None:
        # The SDK writes the whole tap state after every child sync (once per job and result
        # stream). A result stream has no state of its own: the parent writes STATE once the job's
        # records are all out, which is the only point where the bookmark moves.
        self.state_manager.is_flushed = True

    def _write_schema_message(self) -> None:
        # The SDK re-sends SCHEMA on every child sync, i.e. once per job; once per run is enough.
        if not self._schema_sent:
            super()._write_schema_message()
            self._schema_sent = True
