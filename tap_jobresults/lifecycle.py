"""The one job lifecycle every source shares: discover, fetch once, fan out, bookmark.

A source says how to list its jobs, how to fetch one, and which statuses are terminal. This module
decides what to fetch (new jobs past the high-water mark, plus jobs seen unfinished last time),
fetches them concurrently with a bounded window, hands them out in a deterministic order, and keeps
the bookmark that makes the next run incremental.

The bookmark of a partition (a source, or one CDF pipeline) is
    {"hwm": [created, id], "pending": {id: created}}
Every job whose (created, id) is at or below `hwm` has been emitted in its final state, or is in
`pending` (seen unfinished, or its fetch failed) and is fetched again next run. Jobs are processed in
ascending (created, id) order and the bookmark is advanced only after a job's records are written,
so a STATE message emitted at any point is a correct resume point. The state holds one key and the
unfinished jobs per partition: it does not grow with the number of jobs ever synced.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone

from tap_jobresults.errors import TapJobResultsError

logger = logging.getLogger("tap-jobresults")

EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso(value: t.Any) -> str | None:
    """Normalise a vendor timestamp (ms epoch int, RFC 3339 string) to UTC ISO 8601, or None.

    Unset protobuf timestamps arrive as 1970-01-01T00:00:00Z (or 0 ms): that means "not yet".
    The fixed-width format also makes the strings sort in time order, which the bookmark relies on.
    """
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if value <= 0:
            return None
        try:
            moment = datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"not a millisecond timestamp: {value!r}") from None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            parsed = _parse_rfc3339_nanos(value)
            if parsed is None:
                raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
            moment = parsed
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        moment = moment.astimezone(timezone.utc)
        if moment <= EPOCH_ZERO:  # protobuf's unset timestamp; Go's zero time (year 1) too
            return None
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_rfc3339_nanos(value: str) -> datetime | None:
    """Go/protobuf emit up to 9 fractional digits; Python's parser accepts at most 6 before 3.11."""
    head, dot, rest = value.partition(".")
    if not dot:
        return None
    digits = "".join(ch for ch in rest if ch.isdigit())
    zone = rest[len(digits) :]
    try:
        return datetime.fromisoformat(f"{head}.{digits[:6].ljust(6, '0')}{zone.replace('Z', '+00:00')}")
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True, order=True)
class JobKey:
    """Total order of a partition's jobs: creation time, then ID as a tie-breaker."""

    created: str
    id: str

    def as_list(self) -> list[str]:
        return [self.created, self.id]


@dataclasses.dataclass
class JobRef:
    """A job known to exist (from a listing, the config or the bookmark), not yet fetched."""

    key: JobKey
    label: str  # "CDF pipeline 7 run 123": names the job in logs and errors
    summary: t.Any = None  # what the listing said about it, if anything
    pending: bool = False  # seen unfinished (or failed to fetch) by an earlier run


@dataclasses.dataclass
class FetchedJob:
    ref: JobRef
    finished: bool
    record: dict | None  # the job-level record; None: skip it (created before start_date)
    payload: t.Any = None  # what the child streams read; None: no child records this run
    missing: bool = False  # the API says the job does not exist (404)

    @property
    def fields(self) -> dict:
        """The job-level record, for result streams (which only run for jobs that have one)."""
        assert self.record is not None
        return self.record


class Bookmark:
    """High-water mark plus unfinished jobs, stored in place in the stream's state dict."""

    def __init__(self, state: dict) -> None:
        self._state = state
        state.setdefault("pending", {})

    @property
    def hwm(self) -> JobKey | None:
        value = self._state.get("hwm")
        return JobKey(*value) if value else None

    @property
    def pending(self) -> dict[str, str]:
        return self._state["pending"]

    def is_new(self, key: JobKey) -> bool:
        hwm = self.hwm
        return hwm is None or key > hwm

    def pending_refs(self, label: t.Callable[[str], str]) -> list[JobRef]:
        return [
            JobRef(JobKey(created, job_id), label(job_id), pending=True) for job_id, created in self.pending.items()
        ]

    def advance(self, key: JobKey, *, done: bool, missing: bool = False) -> None:
        if done:
            self.pending.pop(key.id, None)
        else:
            self.pending[key.id] = key.created
        if self.is_new(key):
            self._state["hwm"] = key.as_list()


class Fetcher:
    """Fetch jobs concurrently, hand them out in input order, hold at most `width` at once."""

    def __init__(self, width: int) -> None:
        self.width = max(1, width)

    def map(
        self, fetch: t.Callable[[JobRef], FetchedJob], refs: t.Iterable[JobRef]
    ) -> t.Iterator[tuple[JobRef, FetchedJob | None, TapJobResultsError | None]]:
        if self.width == 1:
            for ref in refs:
                try:
                    fetched = fetch(ref)
                except TapJobResultsError as exc:
                    if getattr(exc, "source_wide", False):
                        raise
                    yield ref, None, exc
                else:
                    yield ref, fetched, None
            return
        pool = ThreadPoolExecutor(self.width, thread_name_prefix="fetch")
        window: collections.deque[tuple[JobRef, Future]] = collections.deque()
        pending = iter(refs)
        try:
            for ref in pending:
                window.append((ref, pool.submit(fetch, ref)))
                if len(window) >= self.width:
                    break
            while window:
                ref, future = window.popleft()
                result: FetchedJob | None = None
                error: TapJobResultsError | None = None
                try:
                    result = future.result()
                except TapJobResultsError as exc:
                    if getattr(exc, "source_wide", False):  # the source's credentials: stop it
                        raise
                    error = exc
                nxt = next(pending, None)
                if nxt is not None:  # keep the window full while the caller writes this job
                    window.append((nxt, pool.submit(fetch, nxt)))
                yield ref, result, error
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class Failures:
    """Jobs this run could not finish; reported at the end and turned into a non-zero exit."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        logger.error("%s", message)
        self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)
