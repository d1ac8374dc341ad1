"""The state the tap is given: parsed and checked whole before the first record is written.

Accepted: what the tap writes (`{"bookmarks": ..., "format_version": 2}`), a state from before
format versions (version 1: bookmarks without late-job tracking, upgraded in place by
lifecycle.Bookmark), and the form `meltano state get` prints (`{"singer_state": {...}}`).
Anything else is refused with a message naming the state and the offending path, so a cron job
never syncs from a bookmark it misread.
"""

from __future__ import annotations

import json
import typing as t

from tap_jobresults.errors import StateError
from tap_jobresults.lifecycle import iso

FORMAT_VERSION = 2
JOB_STREAMS = frozenset({"entity_matching_jobs", "pipeline_runs", "clavata_jobs", "extraction_jobs"})


def parse(text: str, where: str = "state") -> dict:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise StateError(f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    return check(value, where)


def check(value: t.Any, where: str = "state") -> dict:
    """The state to load (unwrapped), or StateError naming what is wrong."""
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
    shard = value.get("shard")
    if shard is not None and not (
        isinstance(shard, list)
        and len(shard) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
    ):
        raise StateError(f"{where}.shard: expected [index, count], got {_show(shard)}")
    bookmarks = value.get("bookmarks", {})
    if not isinstance(bookmarks, dict):
        raise StateError(f"{where}.bookmarks: expected an object, got {_kind(bookmarks)}")
    for stream, stream_state in bookmarks.items():
        path = f"{where}.bookmarks.{stream}"
        if not isinstance(stream_state, dict):
            raise StateError(f"{path}: expected an object, got {_kind(stream_state)}")
        if stream not in JOB_STREAMS:
            continue
        partitions = stream_state.get("job_bookmarks", {})
        if not isinstance(partitions, dict):
            raise StateError(f"{path}.job_bookmarks: expected an object, got {_kind(partitions)}")
        for partition, bookmark in partitions.items():
            _check_bookmark(bookmark, f"{path}.job_bookmarks.{partition}")
    return value


def _check_bookmark(bookmark: t.Any, path: str) -> None:
    if not isinstance(bookmark, dict):
        raise StateError(f"{path}: expected an object, got {_kind(bookmark)}")
    for key in ("hwm", "floor"):
        if key in bookmark:
            if not _is_key(bookmark[key]):
                raise StateError(f"{path}.{key}: expected [created, id], got {_show(bookmark[key])}")
            bookmark[key][0] = _created(bookmark[key][0], f"{path}.{key}")
    for key in ("pending", "seen", "finished"):
        if key in bookmark and not (
            isinstance(bookmark[key], dict) and all(isinstance(v, str) for v in bookmark[key].values())
        ):
            raise StateError(f"{path}.{key}: expected an object of job ID -> string, got {_show(bookmark[key])}")
    for key in ("pending", "seen"):
        for job_id, created in bookmark.get(key, {}).items():
            bookmark[key][job_id] = _created(created, f"{path}.{key}.{job_id}")
    if "results" in bookmark and not (
        isinstance(bookmark["results"], list) and all(isinstance(v, str) for v in bookmark["results"])
    ):
        raise StateError(f"{path}.results: expected a list of stream names, got {_show(bookmark['results'])}")
    backfill = bookmark.get("backfill")
    if backfill is not None:
        if not isinstance(backfill, dict) or not isinstance(backfill.get("streams", []), list):
            raise StateError(f"{path}.backfill: expected {{streams, through}}, got {_show(backfill)}")
        if "through" in backfill and not _is_key(backfill["through"]):
            raise StateError(f"{path}.backfill.through: expected [created, id], got {_show(backfill['through'])}")


def _created(value: str, path: str) -> str:
    """A creation time in the one form the bookmark compares (a hand-edited state may write
    `2025-01-01T00:00:00Z`, which would sort after `2025-01-01T00:00:00.000000Z` as a string)."""
    if value == "":
        return value  # a job whose creation time the API did not tell
    try:
        return iso(value) or ""
    except ValueError:
        raise StateError(f"{path}: {value!r} is not a timestamp") from None


def _is_key(value: t.Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _kind(value: t.Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _show(value: t.Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
