"""What a vendor module provides to the shared job lifecycle (see lifecycle.py)."""

from __future__ import annotations

import abc
import logging
import typing as t

from tap_jobresults.errors import MalformedPayload
from tap_jobresults.http import ApiClient
from tap_jobresults.lifecycle import Bookmark, FetchedJob, JobKey, JobRef, iso

logger = logging.getLogger("tap-jobresults")


class JobSource(abc.ABC):
    """One kind of job of one vendor, feeding one job-level stream and its result streams."""

    vendor: str  # config section: "cognite", "clavata", "talonic"
    terminal_statuses: frozenset[str]

    def __init__(self, client: ApiClient, section: t.Mapping[str, t.Any], start_date: str | None) -> None:
        self.client = client
        self.section = section
        self.start_date = iso(start_date) if start_date else None

    def is_finished(self, status: t.Any) -> bool:
        """Terminal statuses only; anything else, including statuses no doc lists, is unfinished."""
        return isinstance(status, str) and status in self.terminal_statuses

    # -- what to fetch -----------------------------------------------------------------------------

    def partitions(self) -> list[str]:
        """Bookmark partitions (CDF: one per pipeline). Most sources have one."""
        return ["all"]

    def bookmark(self, state: dict) -> Bookmark:
        return Bookmark(state)

    @abc.abstractmethod
    def discover(self, partition: str, bookmark: Bookmark) -> list[JobRef]:
        """Jobs of the partition that are new since the bookmark (not the pending ones)."""

    @abc.abstractmethod
    def label(self, partition: str, job_id: str) -> str:
        """How logs and errors name a job: 'Talonic job 4f1c...'."""

    @abc.abstractmethod
    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        """Fetch one job (at most one request per job); runs on a worker thread."""

    def is_before_start(self, created: str | None) -> bool:
        return bool(self.start_date and created and created < self.start_date)


def require(
    source: str, what: str, payload: t.Any, field: str, kind: type | tuple[type, ...], *, optional: bool = False
) -> t.Any:
    """Read a documented field, or raise a MalformedPayload that names the job and the field."""
    if not isinstance(payload, dict):
        raise MalformedPayload(source, what, f"expected a JSON object, got {type(payload).__name__}")
    value = payload.get(field)
    if value is None:
        if optional:
            return None
        raise MalformedPayload(source, what, f"required field '{field}' is missing")
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise MalformedPayload(
            source, what, f"field '{field}' should be {_kind_name(kind)}, got {type(value).__name__}"
        )
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
    }
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in _as_tuple(kind)))


def timestamp(source: str, what: str, value: t.Any, field: str) -> str | None:
    try:
        return iso(value)
    except ValueError as exc:
        raise MalformedPayload(source, what, f"field '{field}': {exc}") from None


class NewestFirstListing:
    """Walks a paged job listing and decides when the rest of it cannot hold jobs we need.

    Needed: jobs past the high-water mark, and the pending jobs (whose listed summary saves a fetch
    while they are still unfinished). No vendor documents the order of its listing, so stopping
    early is a bet on it: with `early_stop`, once the jobs seen came newest first, a page that ends
    below everything needed ends the walk; any job out of creation order (a listing sorted by
    status time, say) cancels the bet and the listing is read to the end. Without `early_stop` it
    is always read to the end. Pending jobs the listing did not show are fetched by ID.
    """

    def __init__(
        self,
        label: str,
        bookmark: Bookmark,
        start_date: str | None,
        make_label: t.Callable[[str], str],
        *,
        early_stop: bool = True,
    ) -> None:
        self.label = label
        self.early_stop = early_stop
        self.hwm = bookmark.hwm
        self.pending = dict(bookmark.pending)
        self.start_date = start_date
        self.make_label = make_label
        self.previous: JobKey | None = None
        self.ordered = True
        self.descending = False  # evidence, not assumption: stop only after seeing a newer-to-older step
        self.refs: dict[str, JobRef] = {}

    @property
    def floor(self) -> JobKey | None:
        """Oldest key still needed: below it, a newest-first listing holds nothing for us."""
        keys = [JobKey(created, job_id) for job_id, created in self.pending.items() if job_id not in self.refs]
        if self.hwm is not None:
            keys.append(self.hwm)
        if self.start_date and (not keys or self.hwm is None):
            keys.append(JobKey(self.start_date, ""))
        return min(keys) if keys else None

    def offer(self, key: JobKey, summary: t.Any) -> bool:
        """Take one listed job; return False when paging can stop."""
        if self.previous is not None:
            if key > self.previous and self.ordered:
                self.ordered = False
                logger.info("%s: the listing is not newest-first; reading all of it", self.label)
            elif key < self.previous:
                self.descending = True
        self.previous = key
        if key.id in self.pending:
            self.refs[key.id] = JobRef(key, self.make_label(key.id), summary=summary, pending=True)
        elif (self.hwm is None or key > self.hwm) and not (self.start_date and key.created < self.start_date):
            self.refs[key.id] = JobRef(key, self.make_label(key.id), summary=summary)
        floor = self.floor
        return not (self.early_stop and self.ordered and self.descending and floor is not None and key < floor)

    def result(self) -> list[JobRef]:
        """Everything to process, in bookmark order; unseen pending jobs are fetched by ID."""
        for job_id, created in self.pending.items():
            if job_id not in self.refs:
                self.refs[job_id] = JobRef(JobKey(created, job_id), self.make_label(job_id), pending=True)
        return sorted(self.refs.values(), key=lambda ref: ref.key)
