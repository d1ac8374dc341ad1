"""The one job lifecycle every source shares: discover, fetch once, fan out, bookmark.

A source says how to list its jobs, how to fetch one, and which statuses are terminal. This module
decides what to fetch (new jobs past the high-water mark, plus jobs seen unfinished last time),
fetches them concurrently with a bounded window, hands them out in a deterministic order, and keeps
the bookmark that makes the next run incremental.

The bookmark of a partition (a source, or one CDF pipeline) is

    {"hwm": [created, id], "floor": [created, id], "pending": [[id, created], ...],
     "seen": [[id, created], ...], "results": [result streams], "backfill": null}

- `floor`: every job at or below it was synced in its final state, or is in `pending`.
- `seen`: the finished jobs synced above the floor. A job above the floor that is neither seen nor
  pending has not been synced yet, whenever it shows up: that is how a job that becomes visible late
  (an eventually consistent listing, a job committed late) is still synced, once.
- `hwm`: the newest job synced, never later than the run's own start (a job dated in the future is
  synced and remembered in `seen`, but cannot hide the jobs created after it).
- At the end of each run the floor rises to `hwm - lookback_window` and `seen` drops what fell below
  it, so the state holds the unfinished jobs and the jobs of one window, never the history.
- `pending`: jobs seen unfinished, or whose fetch failed: fetched again next run.
- `results`: the result streams selected when the jobs were bookmarked (a newly selected one is
  backfilled from the jobs already synced).

Survives Meltano's state merges (format 3): Meltano may deep-merge an older state of this tap under
a newer one (`meltano.core.utils.merge`: objects unioned key by key, lists and scalars replaced), so
a key that the newer state no longer has would come back from the older one. Hence every collection
keyed by job ID is a list of pairs (replaced whole by the newer state), and no key of a bookmark is
ever removed: an empty one is written as null or []. The merge of two states of this tap is then the
later state.

The bookmark is advanced only after a job's records are written, so a STATE message emitted at any
point is a correct resume point. The order in which jobs are advanced does not matter (the engine
writes them as their fetches complete): a job above the floor is synced only if `seen` says so,
and the floor rises only in `close()`, once every job the run took on is advanced (finished, or
pending). Only a backfill's progress mark (`through`) needs creation order, and backfills run one
job at a time, in order.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import hashlib
import logging
import typing as t
from datetime import datetime, timedelta, timezone

logger = logging.getLogger("tap-jobresults")

EPOCH_ZERO = datetime(1970, 1, 1, tzinfo=timezone.utc)


class UnrepresentableTime(ValueError):
    """A valid timestamp with no UTC equivalent (year 1 or 9999 with an offset)."""


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
        try:
            moment = moment.astimezone(timezone.utc)
        except (OverflowError, ValueError):  # year 1 or 9999 with an offset: no such UTC time
            raise UnrepresentableTime(f"not a representable UTC time: {value!r}") from None
        if moment <= EPOCH_ZERO:  # protobuf's unset timestamp; Go's zero time (year 1) too
            return None
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # strftime's format, at half the cost


def _parse_rfc3339_nanos(value: str) -> datetime | None:
    """Go/protobuf emit up to 9 fractional digits; Python's parser accepts at most 6 before 3.11."""
    head, dot, rest = value.partition(".")
    if not dot:
        return None
    zone = rest.lstrip("0123456789")  # the fraction's digits, then the zone (whose digits are not the fraction's)
    digits = rest[: len(rest) - len(zone)]
    try:
        return datetime.fromisoformat(
            f"{head}.{digits[:6].ljust(6, '0')}{zone.replace('Z', '+00:00').replace('z', '+00:00')}"
        )
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
    payload: t.Any = None  # what the result streams read; None: no result records this run

    @property
    def fields(self) -> dict:
        """The job-level record, for result streams (which only run for jobs that have one)."""
        assert self.record is not None
        return self.record


@dataclasses.dataclass(frozen=True)
class Shard:
    """This instance syncs the jobs whose stable hash falls in shard `index` of `count`."""

    index: int
    count: int

    def owns(self, source: str, job_id: str) -> bool:
        digest = hashlib.sha256(f"{source}/{job_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


@dataclasses.dataclass(frozen=True)
class Policy:
    """What every bookmark of a run needs to know: the run's clock, the window, the shard."""

    run_started: str  # ISO, UTC, as iso() writes it
    lookback: float = 600.0  # seconds
    shard: Shard | None = None
    start_date: str | None = None

    def owns(self, source: str, job_id: str) -> bool:
        return self.shard is None or self.shard.owns(source, job_id)

    def before_start(self, created: str | None) -> bool:
        return bool(self.start_date and created and created < self.start_date)


def shift(created: str, seconds: float) -> str:
    """An iso() timestamp moved by `seconds` (negative: earlier)."""
    moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    try:
        moved = moment + timedelta(seconds=seconds)
    except OverflowError:
        moved = moment
    return moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JobMap(collections.abc.MutableMapping[str, str]):
    """Job ID -> value, stored in the state as a list of [id, value] pairs (kept in place).

    Meltano's merge replaces lists whole, where it would union objects key by key: a job removed
    from `pending` since the older state stays removed. Removal swaps the last pair into the gap,
    so every operation is O(1) whatever the size; `rebuild` sorts (once per run, in close()).
    """

    def __init__(self, pairs: list) -> None:
        self._pairs = pairs
        self._index = {pair[0]: i for i, pair in enumerate(pairs)}

    @staticmethod
    def stored(value: t.Any) -> list:
        """The stored form of a collection read from a state: format 2's {id: value} objects become pairs."""
        if isinstance(value, dict):
            return [[job_id, item] for job_id, item in value.items()]
        return value if isinstance(value, list) else []

    def __getitem__(self, job_id: str) -> str:
        return self._pairs[self._index[job_id]][1]

    def __setitem__(self, job_id: str, value: str) -> None:
        at = self._index.get(job_id)
        if at is None:
            self._index[job_id] = len(self._pairs)
            self._pairs.append([job_id, value])
        else:
            self._pairs[at] = [job_id, value]

    def __delitem__(self, job_id: str) -> None:
        at = self._index.pop(job_id)
        last = self._pairs.pop()
        if at < len(self._pairs):
            self._pairs[at] = last
            self._index[last[0]] = at

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._index

    def __iter__(self) -> t.Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._pairs)

    def items(self) -> t.ItemsView[str, str]:
        return dict(self._pairs).items()  # type: ignore[arg-type]

    def rebuild(self, pairs: t.Iterable[tuple[str, str]]) -> None:
        """Replace the contents (in place, so the state holds the same list), in (value, id) order."""
        self._pairs[:] = sorted(([job_id, value] for job_id, value in pairs), key=lambda p: (p[1], p[0]))
        self._index = {pair[0]: i for i, pair in enumerate(self._pairs)}


class Bookmark:
    """The bookmark of one listing partition (see the module docstring), kept in place in the state."""

    def __init__(self, state: dict, policy: Policy) -> None:
        self._state = state
        self.policy = policy
        legacy = "seen" not in state
        for key in ("pending", "seen"):
            state[key] = JobMap.stored(state.get(key))
        self._pending = JobMap(state["pending"])
        self._seen = JobMap(state["seen"])
        if legacy and state.get("hwm") and not state.get("floor"):
            # A bookmark from before late-job tracking: everything at or below its mark is synced.
            state["floor"] = list(state["hwm"])
        _every_key(state, ("hwm", "floor", "backfill"))
        if not self.has_synced():
            state.setdefault("results", [])  # absent only in a bookmark from before results were tracked

    @property
    def state(self) -> dict:
        return self._state

    @property
    def hwm(self) -> JobKey | None:
        value = self._state.get("hwm")
        return JobKey(*value) if value else None

    @property
    def floor(self) -> JobKey | None:
        value = self._state.get("floor")
        return JobKey(*value) if value else None

    @property
    def pending(self) -> JobMap:
        return self._pending

    @property
    def seen(self) -> JobMap:
        return self._seen

    def has_synced(self) -> bool:
        return bool(self._state.get("hwm") or self._state.get("seen"))

    def synced(self, key: JobKey) -> bool:
        """Finished and emitted in a run before: never fetched or emitted again."""
        if key.id in self.seen:
            return True
        floor = self.floor
        # A job without a creation time cannot be placed below the floor: only `seen` knows it.
        return floor is not None and key.created != "" and key <= floor

    def wanted(self, source: str, key: JobKey) -> bool:
        """A listed job this run should fetch (pending jobs aside)."""
        return self.policy.owns(source, key.id) and not self.synced(key) and not self.policy.before_start(key.created)

    def advance(self, key: JobKey, *, done: bool, missing: bool = False) -> None:
        """Record a job's outcome, after its records are written."""
        if done:
            self.pending.pop(key.id, None)
            floor = self.floor
            if floor is None or key.created == "" or key > floor:
                self.seen[key.id] = key.created
        else:
            self.pending[key.id] = key.created
            self.seen.pop(key.id, None)
        # The mark never passes the run's own clock: a job dated in the future hides nothing.
        capped = min(key, JobKey(self.policy.run_started, "")) if key.created else None
        hwm = self.hwm
        if capped is not None and (hwm is None or capped > hwm):
            self._state["hwm"] = capped.as_list()

    def close(self) -> None:
        """End of a run over this partition: raise the floor to the window's start, forget below it."""
        hwm = self.hwm
        if hwm is None:
            return
        window_start = JobKey(shift(hwm.created, -self.policy.lookback), "")
        floor = self.floor
        if floor is None or window_start > floor:
            self._state["floor"] = window_start.as_list()
            floor = window_start
        self.seen.rebuild(
            (job_id, created) for job_id, created in self.seen.items() if not created or JobKey(created, job_id) > floor
        )
        self.pending.rebuild(self.pending.items())


class ConfiguredJobs(Bookmark):
    """Jobs that come from config, not a listing (CDF predict jobs): remember which are finished.

    {"finished": [[job_id, "finished" | "missing"], ...]}; bounded by the configured list (pruned to it).
    """

    def __init__(self, state: dict, policy: Policy, configured: t.Iterable[str]) -> None:
        self._state = state
        self.policy = policy
        state["finished"] = JobMap.stored(state.get("finished"))
        self._finished = JobMap(state["finished"])
        wanted = set(configured)
        if set(self._finished) - wanted:
            self._finished.rebuild((job_id, status) for job_id, status in self._finished.items() if job_id in wanted)
        for key in ("pending", "seen", "hwm", "floor"):
            state.pop(key, None)  # never written for configured jobs (a hand-made state might)
        _every_key(state, ("backfill",))
        if not self.has_synced():
            state.setdefault("results", [])

    @property
    def pending(self) -> JobMap:
        return JobMap([])

    @property
    def seen(self) -> JobMap:
        return JobMap([])

    @property
    def finished(self) -> JobMap:
        return self._finished

    def has_synced(self) -> bool:
        return any(status == "finished" for status in self.finished.values())

    def synced(self, key: JobKey) -> bool:
        return key.id in self.finished

    def advance(self, key: JobKey, *, done: bool, missing: bool = False) -> None:
        if done:
            self.finished[key.id] = "missing" if missing else "finished"

    def close(self) -> None:
        pass


def _every_key(state: dict, keys: t.Iterable[str]) -> None:
    """Keys a bookmark may hold are always written (null when empty): a key that disappeared between
    two states would come back from the older one when Meltano merges them."""
    for key in keys:
        state.setdefault(key, None)


class Failures:
    """Jobs this run could not finish; reported at the end and turned into a non-zero exit."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        logger.error("%s", message)
        self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)
