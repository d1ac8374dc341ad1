"""Every singer-sdk internal the tap relies on, in one place.

singer-sdk is pinned (`~=0.54.9`, pyproject.toml) because of this module: the names below are
private SDK API, or SDK behaviour no document promises, that a minor release may change.
tests/test_sdk_hooks.py checks every one of them (it exists, its signature, and the behaviour
relied on), so an SDK upgrade that breaks one fails a named test instead of silently changing
what the tap writes.

Called from here (nowhere else in the package):
- `Stream._write_record_message`, `Stream._write_schema_message`: result records are written by their
  job stream, outside the SDK's per-child sync (see streams.py); these are the SDK's own record path
  (stream maps, flattening, selection), so nothing is bypassed but the per-job child sync. Records
  nothing transforms (`SameRecordTransform` alone, no flattening, every property selected) go
  straight to the tap's message writer (`Stream._tap.message_writer`, writer.py), job records too
  (`write_one_fast`, from the `_write_record_message` override); `flush_output` delivers what the
  writer holds when no STATE will (`--test`).
- `Stream.get_record_counter()`: one METRIC line per result stream per run.
- `Stream._write_state_message` + `state_manager.is_flushed`: the SDK writes STATE only when
  `is_flushed` is False; STATE after a job's records, none from result streams.
- `Stream.ABORT_AT_RECORD_COUNT`: set by `Tap.run_sync_dry_run` (`--test`, the SDK's standard tests): the SDK stops
  before writing the record over the limit, so the STATE then written holds what was fully emitted.
- `Tap.state_writer.write_state`: the STATE written when the tap is interrupted.
- `Tap._state_writer`, `singer_sdk.helpers._state.StateWriter` (`_message_writer`): replaced by a
  subclass whose duplicate check compares encoded lines instead of deep copies (`install_state_writer`).
- `Tap.append_builtin_config` + `singer_sdk.plugin_base.JSONSchemaValidator` over `Tap._config`: the
  SDK's config validation (built-in settings, defaults filled in), with the tap's own messages.

Overrides that must stay where they are (same names and parameters as the SDK's; checked too):
- streams.py: `_write_record_message` (job records nothing transforms are encoded directly),
  `_increment_stream_state` (the bookmark is the job lifecycle's, not a replication
  key value), `_write_state_message` (none in `--test`, none from result streams or sync_runs),
  `_write_schema_message` (once per run), `generate_child_contexts` (the SDK calls it once per
  record in `Stream.sync`; only BATCH output uses child syncs).
- tap.py: `_validate_config` (shape errors the SDK's validator would crash on, secrets never quoted,
  checks a JSON schema cannot express; the SDK calls it from `__init__`), `_handle_termination`
  (the SDK's SIGTERM/SIGINT handler exits 0; a cron user needs 143/130), `sync_all` (marked
  `@final` by the SDK; extended, not replaced, to turn failed jobs into exit code 1).
- writer.py: `MsgSpecWriter.write_message` / `format_message` (STATE flushed, records encoded directly).

Behaviour relied on: `Tap.sync_all` syncs streams in name order (`sync_runs` runs after every job
stream and reports them); `Tap.run_sync_dry_run` sets `ABORT_AT_RECORD_COUNT` on every stream;
with no stream maps configured a stream's only map is a `SameRecordTransform` returning the record.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

import msgspec
from singer_sdk import Stream, Tap
from singer_sdk.contrib.msgspec import enc_hook
from singer_sdk.helpers._state import StateWriter
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.plugin_base import JSONSchemaValidator

from tap_jobresults.writer import state_line

if t.TYPE_CHECKING:
    import jsonschema
    from singer_sdk import metrics

    from tap_jobresults.guard import Lines


_counters: dict[int, metrics.Counter] = {}
_fast: dict[int, bool] = {}
_encoder = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")


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
        fast = _fast[id(stream)] = untransformed(stream) and hasattr(message_writer(stream), "write_records")
    if fast:
        count = message_writer(stream).write_records(stream.name, records)
    else:
        count = 0
        write = stream._write_record_message
        for record in records:
            write(record)
            count += 1
    counter.increment(count)
    return count


def is_fast(stream: Stream) -> bool:
    fast = _fast.get(id(stream))
    if fast is None:
        fast = _fast[id(stream)] = untransformed(stream) and hasattr(message_writer(stream), "write_records")
    return fast


class RecordEncoder:
    """Records of one job as Singer lines, on a fetch worker (thread-safe: one per job).

    Untransformed records are encoded as the SDK would write them; others go through the SDK's
    own record path (`Stream._generate_record_messages`: property selection, stream maps,
    flattening) and are encoded here, not by the SDK's writer, whose encoding buffer is shared.
    """

    def __init__(self) -> None:
        self.extracted = datetime.now(timezone.utc).isoformat()
        self._line = bytearray(256)
        self._envelope: dict[str, t.Any] = {
            "type": "RECORD",
            "stream": None,
            "record": None,
            "time_extracted": self.extracted,
        }

    def __call__(self, stream: Stream, record: dict) -> bytes:
        if is_fast(stream):
            envelope = self._envelope
            envelope["stream"] = stream.name
            envelope["record"] = record
            _encoder.encode_into(envelope, self._line)
            self._line.extend(b"\n")
            return bytes(self._line)
        out = bytearray()
        for message in stream._generate_record_messages(record):
            out += _encoder.encode(message.to_dict())
            out += b"\n"
        return bytes(out)


def write_lines(stream: Stream, lines: bytes | bytearray | Lines) -> None:
    """Encoded RECORD lines (RecordEncoder) out through the tap's writer."""
    if lines:
        message_writer(stream).write_lines(lines)
        stream.state_manager.is_flushed = False


def count_records(stream: Stream, count: int) -> None:
    """The stream's record counter (one METRIC line per stream per run, see close_counters)."""
    counter = _counters.get(id(stream))
    if counter is None:
        counter = _counters[id(stream)] = stream.get_record_counter()
        counter.__enter__()
    counter.increment(count)


def message_writer(stream: Stream) -> t.Any:
    """The tap's message writer (writer.SingerWriter), which the stream's own messages go through."""
    return stream._tap.message_writer


def write_one_fast(stream: Stream, record: dict) -> bool:
    """A job record the SDK hands to `_write_record_message`: encoded straight to stdout when nothing
    would transform it (see write_records). False: take the SDK's own path."""
    fast = _fast.get(id(stream))
    if fast is None:
        fast = _fast[id(stream)] = untransformed(stream) and hasattr(message_writer(stream), "write_records")
    if fast:
        message_writer(stream).write_records(stream.name, (record,))
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
    flush = getattr(message_writer(stream), "flush", None)
    if flush is not None:
        flush()


def write_tap_state(tap: Tap) -> None:
    tap.state_writer.write_state(tap.state)


class StateLineWriter(StateWriter):
    """The SDK's StateWriter with its duplicate check on the encoded line.

    The SDK's writes a STATE only when it differs from the last one, which it keeps as a deep copy:
    a copy of the whole state after every job (9% of the time of a sync of many small jobs).
    Comparing the line to be written costs one encode, which writing it needs anyway."""

    def __init__(self, message_writer: t.Any) -> None:
        super().__init__(message_writer)
        self._last_line: bytes | None = None

    def write_state(self, state: t.Any) -> None:
        line = state_line(state)
        if line != self._last_line:
            t.cast("t.Any", self._message_writer).write_state_line(line)
            self._last_line = line


def install_state_writer(tap: Tap) -> None:
    """Every STATE the SDK writes (streams' and the tap's own) goes through `StateLineWriter`."""
    if hasattr(tap.message_writer, "write_state_line"):
        tap._state_writer = StateLineWriter(tap.message_writer)


def config_schema_errors(tap: Tap) -> list[jsonschema.ValidationError]:
    """What the SDK's `_validate_config` checks: the config schema with the SDK's built-in settings
    (stream_maps, batch_config, ...) appended, defaults filled in, the raw config validated."""
    schema = tap.config_jsonschema
    tap.append_builtin_config(schema)
    return list(JSONSchemaValidator(schema).iter_errors(tap._config))
