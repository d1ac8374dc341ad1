"""What a vendor module provides to the shared job lifecycle (see lifecycle.py)."""

from __future__ import annotations

import abc
import logging
import typing as t
from urllib.parse import quote, unquote

import msgspec

from tap_jobresults.client import ApiClient, has_control
from tap_jobresults.errors import MalformedPayload, UnsafeId
from tap_jobresults.lifecycle import Bookmark, FetchedJob, JobKey, JobRef, Policy, iso
from tap_jobresults.scrub import escape

logger = logging.getLogger("tap-jobresults")

DEFAULT_MAX_PAGES = 5000


class JobSource(abc.ABC):
    """One kind of job of one vendor, feeding one job-level stream and its result streams."""

    name: str  # "talonic", "clavata", "cognite predict jobs", ...: names it in logs and in shard hashes
    setting: str  # the config section: "cognite", "clavata", "talonic"
    terminal_statuses: frozenset[str]
    early_stop = False  # may the listing walk stop at the bookmark (see Listing)?

    def __init__(
        self, client: ApiClient, section: t.Mapping[str, t.Any], policy: Policy, max_pages: int = DEFAULT_MAX_PAGES
    ) -> None:
        self.client = client
        self.section = section
        self.policy = policy
        self.max_pages = max_pages

    def is_finished(self, status: t.Any) -> bool:
        """Terminal statuses only; anything else, including statuses no doc lists, is unfinished."""
        return isinstance(status, str) and status in self.terminal_statuses

    # -- what to fetch -----------------------------------------------------------------------------

    def partitions(self) -> list[str]:
        """Bookmark partitions (CDF: one per pipeline). Most sources have one."""
        return ["all"]

    def partition_name(self, partition: str) -> str:
        """How logs name a partition: the source, or 'CDF pipeline 7'."""
        return self.name

    def bookmark(self, state: dict) -> Bookmark:
        return Bookmark(state, self.policy)

    def stream_refs(self, partition: str, bookmark: Bookmark, take: t.Callable[[JobRef], None]) -> None:
        """Hand each job to fetch this run (pending ones, and listed ones not yet synced) to `take` as soon
        as the listing shows it (listing and fetching overlap); `take` may block, which holds the listing
        back (memory stays bounded)."""
        listing = self._listing(partition, bookmark, early_stop=self.early_stop, take=take)
        self.walk(partition, listing)
        listing.result()

    def synced_jobs(self, partition: str, bookmark: Bookmark) -> list[JobRef]:
        """The finished jobs already synced (to backfill a newly selected result stream)."""
        listing = self._listing(partition, bookmark, early_stop=False, backfill=True)
        self.walk(partition, listing, full=True)
        return listing.result()

    def _listing(self, partition: str, bookmark: Bookmark, **options: t.Any) -> Listing:
        return Listing(
            self.list_label(partition), self.name, bookmark, lambda job_id: self.label(partition, job_id), **options
        )

    def list_label(self, partition: str) -> str:
        """How logs and errors name the listing (or, for configured jobs, reading them)."""
        raise NotImplementedError

    def walk(self, partition: str, listing: Listing, *, full: bool = False) -> None:
        """Offer every listed job of the partition to `listing` (until it says stop)."""
        raise NotImplementedError

    @abc.abstractmethod
    def label(self, partition: str, job_id: str) -> str:
        """How logs and errors name a job: 'Talonic job 4f1c...'."""

    @abc.abstractmethod
    def fetch(self, partition: str, ref: JobRef, want_results: bool) -> FetchedJob:
        """Fetch one job (at most one request per job); runs on a worker thread."""

    def is_before_start(self, created: str | None) -> bool:
        return self.policy.before_start(created)

    def pages(self, what: str, get_page: t.Callable[[str | None], tuple[list, str | None]]) -> t.Iterator[list]:
        """Walk a cursor-paged listing: `get_page(cursor)` returns (items, next cursor or None).

        A hostile or broken server cannot keep the walk going: a cursor seen before in this walk,
        or more than `max_listing_pages` pages, ends it with an error, before anything from it is
        bookmarked.
        """
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(self.max_pages):
            items, next_cursor = get_page(cursor)
            yield items
            if next_cursor is None or next_cursor == "":
                return
            if not isinstance(next_cursor, str):
                raise MalformedPayload(
                    self.setting,
                    what,
                    f"the next page cursor should be a string, got {type(next_cursor).__name__}; "
                    "nothing past it is bookmarked",
                )
            if next_cursor in seen or next_cursor == cursor:
                raise MalformedPayload(
                    self.setting,
                    what,
                    "the listing loops (a page cursor came back a second time); nothing past it is bookmarked",
                )
            seen.add(next_cursor)
            cursor = next_cursor
        raise MalformedPayload(
            self.setting,
            what,
            f"the listing did not end within {self.max_pages} pages (max_listing_pages); nothing past it is bookmarked",
        )


def path_id(job_id: t.Any) -> str:
    """A vendor ID as one URL path segment, or UnsafeId.

    IDs come from listings: '?', '#' and the like are percent-encoded, and an ID that cannot stay
    one segment whatever a server or proxy decodes or normalises (empty, '.', '..', a slash or
    backslash, a percent-encoded one of those, a control character) is refused, so that no request
    built from it reaches another resource (the client checks the built URL again)."""
    text = str(job_id)
    decoded = unquote(unquote(text))
    if (
        not text.strip()
        or decoded.strip() in (".", "..")
        or any(char in decoded for char in "/\\")
        or has_control(decoded)
    ):
        raise UnsafeId(f"the ID {escape(repr(text))[:120]} cannot be one URL path segment; no request is sent for it")
    return quote(text, safe="")


def require(
    source: str, what: str, payload: t.Any, field: str, kind: type | tuple[type, ...], *, optional: bool = False
) -> t.Any:
    """Read a field the tap cannot do without, or raise a MalformedPayload naming the job and field."""
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


def same_job(source: str, what: str, requested: str, found: t.Any, field: str) -> None:
    """A body must be about the job requested: another job's body (a caching proxy, a vendor bug)
    is a failed fetch, never that job's data under this job's bookmark."""
    if found is not None and str(found) != requested:
        raise MalformedPayload(
            source, what, f"the body is about another job ({field} {str(found)[:100]!r}, requested {requested!r})"
        )


def objects(source: str, what: str, body: t.Any, field: str) -> list:
    """An optional array of objects (absent or null: empty); anything else is malformed."""
    items = require(source, what, body, field, list, optional=True) or []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedPayload(source, what, f"{field}[{index}] should be an object, got {type(item).__name__}")
    return items


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


def created_of(value: t.Any) -> str:
    """A listed job's creation time as a bookmark key part; unparseable or absent: ''."""
    try:
        return iso(value) or ""
    except (ValueError, OverflowError):
        return ""


class Listing:
    """Takes the jobs of a paged listing and decides which to fetch, and when paging can stop.

    Fetched: the pending jobs (their listed summary saves a fetch while they are unfinished) and the
    listed jobs the bookmark has not synced (new ones, and late ones inside the lookback window),
    of this instance's shard. No vendor documents the order of its listing, so stopping early is a
    bet on it: with `early_stop`, once the jobs seen came newest first, a page that ends below
    everything needed ends the walk; any job out of creation order (a listing sorted by status
    time, say) cancels the bet and the listing is read to the end. Pending jobs the listing did not
    show are fetched by ID.
    """

    def __init__(
        self,
        label: str,
        source: str,
        bookmark: Bookmark,
        make_label: t.Callable[[str], str],
        *,
        early_stop: bool = True,
        backfill: bool = False,
        take: t.Callable[[JobRef], None] | None = None,
    ) -> None:
        self.label = label
        self.take = take
        self.backfill = backfill
        self.source = source
        self.bookmark = bookmark
        self.early_stop = early_stop
        self.pending = dict(bookmark.pending)
        self.make_label = make_label
        self.previous: JobKey | None = None
        self.ordered = True
        self.descending = False  # evidence, not assumption: stop only after seeing a newer-to-older step
        self.refs: dict[str, JobRef | None] = {}

    @property
    def floor(self) -> JobKey | None:
        """Oldest key still needed: below it, a newest-first listing holds nothing for us."""
        keys = [JobKey(created, job_id) for job_id, created in self.pending.items() if job_id not in self.refs]
        floor = self.bookmark.floor
        start = self.bookmark.policy.start_date
        if floor is not None:
            keys.append(floor)
        elif start:
            keys.append(JobKey(start, ""))
        else:
            return None  # no floor yet: every job is needed
        return min(keys)

    def offer(self, key: JobKey, summary: t.Any) -> bool:
        """Take one listed job; return False when paging can stop."""
        if self.previous is not None:
            if key > self.previous and self.ordered:
                self.ordered = False
                logger.debug("%s: the listing is not newest-first; reading all of it", self.label)
            elif key < self.previous:
                self.descending = True
        self.previous = key
        if self.backfill:
            policy = self.bookmark.policy
            if (
                key.id not in self.pending
                and self.bookmark.synced(key)
                and policy.owns(self.source, key.id)
                and not policy.before_start(key.created)
            ):
                self.refs[key.id] = JobRef(key, self.make_label(key.id), summary=summary)
            return True
        if key.id in self.pending:
            if key.id not in self.refs:
                self._add(JobRef(key, self.make_label(key.id), summary=summary, pending=True))
        elif key.id not in self.refs and self.bookmark.wanted(self.source, key):
            self._add(JobRef(key, self.make_label(key.id), summary=summary))
        floor = self.floor
        return not (
            self.early_stop and self.ordered and self.descending and floor is not None and key.created and key < floor
        )

    def _add(self, ref: JobRef) -> None:
        if self.take is None:
            self.refs[ref.key.id] = ref
            return
        # Handed out at once: only the ID is kept (to take each job once), not the listed summary.
        self.refs[ref.key.id] = None
        self.take(ref)

    def result(self) -> list[JobRef]:
        """Everything to process, in bookmark order; unseen pending jobs are fetched by ID."""
        for job_id, created in {} if self.backfill else self.pending.items():
            if job_id not in self.refs:
                self._add(JobRef(JobKey(created, job_id), self.make_label(job_id), pending=True))
        return sorted((ref for ref in self.refs.values() if ref is not None), key=lambda ref: ref.key)


_ANY = msgspec.json.Decoder()
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw] | None)
BODY = dict[str, msgspec.Raw]  # decode_as for job bodies: top-level fields, each still raw JSON


def split_body(source: str, what: str, body: dict[str, msgspec.Raw], arrays: t.Iterable[str]) -> tuple[dict, dict]:
    """A job body decoded to its small fields, plus its big arrays as raw JSON objects, one per element.

    Big arrays (CDF items, run matches, Talonic rows) stay undecoded slices of the body until they
    are written, so a 100k-item job costs its body's bytes in memory, not several times that in
    Python objects. Every element is checked to be an object before the first record is written.
    """
    big = set(arrays)
    small = {key: _ANY.decode(raw) for key, raw in body.items() if key not in big}
    parts: dict[str, list[msgspec.Raw]] = {}
    for key in big:
        if key not in body:
            continue
        try:
            elements = _ARRAY.decode(body[key])
        except msgspec.ValidationError:
            raise MalformedPayload(source, what, f"field '{key}' should be an array") from None
        for index, element in enumerate(elements or ()):
            if bytes(memoryview(element)[:1]) != b"{":
                raise MalformedPayload(source, what, f"{key}[{index}] should be an object")
        parts[key] = elements or []
    return small, parts


def decode(raw: msgspec.Raw) -> dict:
    return _ANY.decode(raw)
