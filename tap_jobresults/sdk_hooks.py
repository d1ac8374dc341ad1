"""Every private singer-sdk hook the tap relies on, in one place.

singer-sdk is pinned (`~=0.54.9`, pyproject.toml) because of this module: each name below is private
SDK API that a minor release may change. tests/test_sdk_hooks.py checks every one of them (it exists,
its signature, and the behaviour relied on), so an SDK upgrade that breaks one fails a named test
instead of silently changing what the tap writes.

Why each is needed:
- `Stream._write_record_message`, `_write_schema_message`: result records are written by their job
  stream, outside the SDK's per-child sync (see streams.py); these are the SDK's own record path
  (stream maps, flattening, selection), so nothing is bypassed but the per-job child sync.
- `Stream._write_state_message` + `state_manager.is_flushed`: STATE after a job's records, and none
  from result streams or in `--test` mode.
- `Stream._increment_stream_state`: the SDK would look for a replication key in every record of an
  INCREMENTAL stream; the bookmark here is the job lifecycle's.
- `Tap._validate_config`: config shape errors the SDK's validator would crash on, secrets never
  quoted, checks a JSON schema cannot express.
- `Tap._handle_termination` / `_state_writer`: the SDK exits 0 on SIGTERM; a cron user needs 143.
- `Tap.sync_all` (marked @final): extended, not replaced, to turn failed jobs into exit code 1.
"""

from __future__ import annotations

import typing as t

from singer_sdk import Stream, Tap
from singer_sdk.mapper import SameRecordTransform

if t.TYPE_CHECKING:
    from singer_sdk import metrics

PRIVATE_STREAM_HOOKS = (
    "_write_record_message",
    "_write_schema_message",
    "_write_state_message",
    "_increment_stream_state",
)
PRIVATE_TAP_HOOKS = ("_validate_config", "_handle_termination", "_state_writer")

_counters: dict[int, metrics.Counter] = {}
_fast: dict[int, bool] = {}


def is_dry_run(stream: Stream) -> bool:
    """`--test`: the SDK caps every stream at a record count (public attribute)."""
    return stream.ABORT_AT_RECORD_COUNT is not None


def untransformed(stream: Stream) -> bool:
    """Nothing would change its records on the way out: no stream map, no flattening, every property selected."""
    maps = stream.stream_maps
    return (
        len(maps) == 1
        and isinstance(maps[0], SameRecordTransform)
        and not maps[0].flattening_enabled
        and all(stream.mask.values())
    )


def write_schema(stream: Stream) -> None:
    stream._write_schema_message()


def write_records(stream: Stream, records: t.Iterable[dict]) -> int:
    """Write records of `stream`; its SCHEMA first, once. Records nothing transforms are encoded
    straight to stdout (writer.py); otherwise they take the SDK's record path (maps, flattening,
    property selection)."""
    stream._write_schema_message()
    counter = _counters.get(id(stream))
    if counter is None:
        counter = _counters[id(stream)] = stream.get_record_counter()
        counter.__enter__()
    fast = _fast.get(id(stream))
    if fast is None:
        fast = _fast[id(stream)] = untransformed(stream) and hasattr(stream._tap.message_writer, "write_records")
    if fast:
        count = t.cast("t.Any", stream._tap.message_writer).write_records(stream.name, records)
    else:
        count = 0
        write = stream._write_record_message
        for record in records:
            write(record)
            count += 1
    counter.increment(count)
    return count


def write_one_fast(stream: Stream, record: dict) -> bool:
    """A job record the SDK hands to `_write_record_message`: encoded straight to stdout when nothing
    would transform it (see write_records). False: take the SDK's own path."""
    fast = _fast.get(id(stream))
    if fast is None:
        fast = _fast[id(stream)] = untransformed(stream) and hasattr(stream._tap.message_writer, "write_records")
    if fast:
        t.cast("t.Any", stream._tap.message_writer).write_records(stream.name, (record,))
        stream.state_manager.is_flushed = False
    return fast


def close_counters() -> None:
    """One METRIC line per result stream per run (the SDK would log one per job)."""
    for counter in _counters.values():
        counter.__exit__(None, None, None)
    _counters.clear()


def write_state_now(stream: Stream) -> None:
    stream.state_manager.is_flushed = False
    stream._write_state_message()


def mark_state_flushed(stream: Stream) -> None:
    stream.state_manager.is_flushed = True


def flush_output(stream: Stream) -> None:
    """Deliver what the tap's writer holds (it flushes at STATE; some endings write none)."""
    flush = getattr(stream._tap.message_writer, "flush", None)
    if flush is not None:
        flush()


def write_tap_state(tap: Tap) -> None:
    tap._state_writer.write_state(tap.state)


def sdk_validate_config(tap: Tap) -> list[str]:
    return Tap._validate_config(tap, raise_errors=False)
