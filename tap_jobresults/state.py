"""The state the tap is given: parsed and checked whole before the first record is written.

Accepted: what the tap writes (`{"bookmarks": ..., "format_version": 3}`), the states of earlier
releases (format 2: job collections as {id: value} objects; format 1: bookmarks without late-job
tracking), read without a re-sync, and the form `meltano state get` prints (`{"singer_state": {...}}`).
Anything else is refused with a message naming the state and the offending path, so a cron job
never syncs from a bookmark it misread.

What is read is rebuilt from what the tap owns: keys it never writes (another tool's, a hand edit's)
are dropped with a warning naming them, never carried into the STATE it writes.
"""

from __future__ import annotations

import json
import typing as t

from tap_jobresults.errors import StateError
from tap_jobresults.lifecycle import UnrepresentableTime, iso

FORMAT_VERSION = 3
JOB_STREAMS = frozenset({"entity_matching_jobs", "pipeline_runs", "clavata_jobs", "extraction_jobs"})
# Streams with no state of their own (the SDK writes an empty object for some).
STATELESS_STREAMS = frozenset(
    {
        "match_results",
        "pipeline_matches",
        "suggested_rules",
        "generated_rules",
        "clavata_reports",
        "extraction_rows",
        "sync_runs",
    }
)
# Written by singer-sdk itself while a stream syncs (no meaning for this tap's bookmark): dropped quietly.
SDK_MARKERS = frozenset({"starting_replication_value", "progress_markers", "replication_key_signpost"})
BOOKMARK_KEYS = ("hwm", "floor", "pending", "seen", "finished", "results", "backfill")
MAX_NAMED = 10  # dropped keys named in the warning; the rest are counted


class Dropped:
    """Paths of the input state the tap does not own, for one warning."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def add(self, path: str, key: t.Any) -> None:
        self.paths.append(f"{path}.{_name(key)}" if path else _name(key))

    def message(self, where: str) -> str | None:
        if not self.paths:
            return None
        named = ", ".join(self.paths[:MAX_NAMED])
        more = len(self.paths) - MAX_NAMED
        return (
            f"{where}: dropped {len(self.paths)} key(s) this tap does not write, not carried into its state: "
            f"{named}{f' and {more} more' if more > 0 else ''}"
        )


def parse(text: str | bytes, where: str = "state", dropped: Dropped | None = None) -> dict:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise StateError(f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise StateError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise StateError(f"{where}: nested too deep to be a state of this tap") from None
    return check(value, where, dropped)


def check(value: t.Any, where: str = "state", dropped: Dropped | None = None) -> dict:
    """The state to load (unwrapped, in the current format, only what the tap owns), or StateError
    naming what is wrong. Whatever is dropped is listed in `dropped`."""
    dropped = dropped if dropped is not None else Dropped()
    if not isinstance(value, dict):
        raise StateError(f"{where}: expected a JSON object, got {_kind(value)}")
    if "singer_state" in value and "bookmarks" not in value:
        value = value["singer_state"]  # as `meltano state get` prints it
        where = f"{where}.singer_state"
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise StateError(f"{where}: expected a JSON object, got {_kind(value)}")
    version = value.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise StateError(f"{where}.format_version: expected an integer, got {_kind(version)}")
    if version > FORMAT_VERSION:
        raise StateError(
            f"{where}: written by a newer tap-jobresults (state format {version}; this one reads up to "
            f"{FORMAT_VERSION}): upgrade the tap, or reset the state"
        )
    for key in value:
        if key not in ("format_version", "shard", "bookmarks"):
            dropped.add("", key)
    out: dict[str, t.Any] = {}
    shard = value.get("shard")
    if shard is not None and not (
        isinstance(shard, list)
        and len(shard) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
    ):
        raise StateError(f"{where}.shard: expected [index, count], got {_show(shard)}")
    if "shard" in value:
        out["shard"] = shard
    bookmarks = value.get("bookmarks", {})
    if bookmarks is None:
        bookmarks = {}
    if not isinstance(bookmarks, dict):
        raise StateError(f"{where}.bookmarks: expected an object, got {_kind(bookmarks)}")
    out["bookmarks"] = {}
    for stream, stream_state in bookmarks.items():
        path = f"{where}.bookmarks.{_name(stream)}"
        if stream not in JOB_STREAMS and stream not in STATELESS_STREAMS:
            dropped.add("bookmarks", stream)
            continue
        if stream_state is None:
            continue
        if not isinstance(stream_state, dict):
            raise StateError(f"{path}: expected an object, got {_kind(stream_state)}")
        kept: dict[str, t.Any] = {}
        for key in stream_state:
            if key in SDK_MARKERS:
                continue
            if key != "job_bookmarks" or stream not in JOB_STREAMS:
                dropped.add(f"bookmarks.{_name(stream)}", key)
        out["bookmarks"][stream] = kept
        if stream not in JOB_STREAMS:
            continue
        partitions = stream_state.get("job_bookmarks", {})
        if partitions is None:
            partitions = {}
        if not isinstance(partitions, dict):
            raise StateError(f"{path}.job_bookmarks: expected an object, got {_kind(partitions)}")
        kept["job_bookmarks"] = {
            partition: _check_bookmark(
                bookmark, f"{path}.job_bookmarks.{_name(partition)}", stream, dropped, partition_path(stream, partition)
            )
            for partition, bookmark in partitions.items()
            if bookmark is not None  # a partition forgotten by the run that wrote the state
        }
    return out


def partition_path(stream: str, partition: str) -> str:
    return f"bookmarks.{_name(stream)}.job_bookmarks.{_name(partition)}"


def _check_bookmark(bookmark: t.Any, path: str, stream: str, dropped: Dropped, short: str) -> dict:
    if not isinstance(bookmark, dict):
        raise StateError(f"{path}: expected an object, got {_kind(bookmark)}")
    out: dict[str, t.Any] = {}
    for key in bookmark:
        if key not in BOOKMARK_KEYS:
            dropped.add(short, key)
    for key in ("hwm", "floor"):
        if key in bookmark:
            value = bookmark[key]
            if value is not None and not _is_key(value):
                raise StateError(f"{path}.{key}: expected [created, id], got {_show(value)}")
            out[key] = None if value is None else [_created(value[0], f"{path}.{key}"), value[1]]
    for key in ("pending", "seen", "finished"):
        if key in bookmark:
            out[key] = _job_pairs(bookmark[key], f"{path}.{key}", timestamps=key != "finished")
    if "results" in bookmark:
        results = bookmark["results"]
        if not (isinstance(results, list) and all(isinstance(v, str) for v in results)):
            raise StateError(f"{path}.results: expected a list of stream names, got {_show(results)}")
        out["results"] = list(results)
    if "backfill" in bookmark:
        out["backfill"] = _check_backfill(bookmark["backfill"], f"{path}.backfill", dropped, f"{short}.backfill")
    return out


def _job_pairs(value: t.Any, path: str, *, timestamps: bool) -> list[list[str]]:
    """A collection keyed by job ID: [[id, value], ...] (format 3), or {id: value} (formats 1 and 2)."""
    if isinstance(value, dict):
        for job_id, item in value.items():
            if not isinstance(item, str):
                raise StateError(f"{path}.{_name(job_id)}: expected a string, got {_show(item)}")
        pairs: list[t.Any] = [[job_id, item] for job_id, item in value.items()]
    elif isinstance(value, list):
        pairs = value
        for number, pair in enumerate(pairs):
            if not _is_key(pair):
                raise StateError(f"{path}[{number}]: expected [job ID, string], got {_show(pair)}")
    else:
        raise StateError(f"{path}: expected a list of [job ID, string] pairs, got {_show(value)}")
    out: list[list[str]] = []
    ids: set[str] = set()
    for number, (job_id, item) in enumerate(pairs):
        if job_id in ids:
            raise StateError(f"{path}[{number}]: job ID {_show(job_id)} is listed twice")
        ids.add(job_id)
        out.append([job_id, _created(item, f"{path}.{_name(job_id)}") if timestamps else item])
    return out


def _check_backfill(backfill: t.Any, path: str, dropped: Dropped, short: str) -> dict | None:
    if backfill is None:
        return None
    if not isinstance(backfill, dict) or not isinstance(backfill.get("streams", []), list):
        raise StateError(f"{path}: expected {{streams, through}}, got {_show(backfill)}")
    for key in backfill:
        if key not in ("streams", "through"):
            dropped.add(short, key)
    streams = backfill.get("streams", [])
    if not all(isinstance(v, str) for v in streams):
        raise StateError(f"{path}.streams: expected a list of stream names, got {_show(streams)}")
    through = backfill.get("through")
    if through is not None and not _is_key(through):
        raise StateError(f"{path}.through: expected [created, id], got {_show(through)}")
    return {"streams": list(streams), "through": None if through is None else list(through)}


def _created(value: str, path: str) -> str:
    """A creation time in the one form the bookmark compares (a hand-edited state may write
    `2025-01-01T00:00:00Z`, which would sort after `2025-01-01T00:00:00.000000Z` as a string)."""
    if value == "":
        return value  # a job whose creation time the API did not tell
    try:
        return iso(value) or ""
    except (UnrepresentableTime, OverflowError):
        # a year-9999 time whose offset takes it past year 9999 in UTC (or year 1 before it)
        raise StateError(f"{path}: {_quote(value)} is not a timestamp (out of range in UTC)") from None
    except ValueError:
        raise StateError(f"{path}: {_quote(value)} is not a timestamp") from None


def _quote(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57]) + "..."


def _is_key(value: t.Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _kind(value: t.Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _name(key: t.Any) -> str:
    """A key as it can appear in a log line: control characters escaped, long ones cut."""
    text = json.dumps(key) if not (isinstance(key, str) and key.isprintable() and key.strip() == key) else key
    return text if len(text) <= 60 else text[:57] + "..."


def _show(value: t.Any) -> str:
    try:
        text = json.dumps(value)
    except (RecursionError, ValueError):
        text = f"(an {_kind(value)} nested too deep to show)"
    return text if len(text) <= 80 else text[:77] + "..."
