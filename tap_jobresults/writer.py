"""Singer output: msgspec serialisation, stdout flushed at each STATE, records encoded directly.

A STATE line reaches the target only after every record before it, so a resume point is never ahead
of the data; flushing per record (the SDK default) costs a syscall per message in a pipe. STATE
messages are encoded from their value (`state_line`). Result records, when nothing transforms them (no stream maps, no
flattening, every property selected), are encoded straight from the record dict.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import typing as t
from datetime import datetime, timezone

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter, enc_hook
from singer_sdk.singerlib import StateMessage

if t.TYPE_CHECKING:
    from singer_sdk.singerlib import Message

    from tap_jobresults.guard import Lines

_encoder = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")


def state_line(value: t.Any) -> bytes:
    """The STATE message of `value`, as the line written (encoded from the value: the SDK's generic
    path deep-copies the whole state through `dataclasses.asdict` first)."""
    return _encoder.encode({"type": "STATE", "value": value}) + b"\n"


class SingerWriter(MsgSpecWriter):
    """Messages are gathered in a buffer of our own and written to stdout in blocks of at least
    BLOCK bytes, and whole at each STATE (then flushed): whatever stdout's own buffering (it is
    none at all under PYTHONUNBUFFERED, which some runners set), a message costs no system call."""

    BLOCK = 1 << 16

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._line = bytearray(256)
        self._out = bytearray()
        # STATE volume (engine.Engine.maybe_write_state): bytes of records since the last STATE, and its size.
        self.record_bytes_since_state = 0
        self.last_state_bytes = 0
        # Signals: stdout must end on a whole message. While bytes go out (`_busy`), a SIGTERM/SIGINT
        # handler only notes the signal; `on_signal` runs once the write is complete.
        self._busy = 0
        self.pending_signal: int | None = None
        self.on_signal: t.Callable[[int], None] | None = None
        # Runs that end without a last STATE (`--test`) still deliver what they wrote.
        atexit.register(self._flush_at_exit)

    def write_message(self, message: Message) -> None:
        if isinstance(message, StateMessage):
            self.write_state_line(state_line(message.value))
            return
        line = self.format_message(message)
        self._out += line
        self.record_bytes_since_state += len(line)
        if len(self._out) >= self.BLOCK:
            self._drain()

    def write_state_line(self, line: bytes) -> None:
        """A STATE message, encoded (`state_line`): out to the reader with everything before it."""
        self._out += line
        self.last_state_bytes = len(line)
        self.record_bytes_since_state = 0
        self.flush()

    def write_lines(self, lines: bytes | bytearray | Lines) -> None:
        """Whole Singer lines, encoded elsewhere (the records of one job, see engine.py). A block of
        them is written as it is, not copied into the buffer: a big job's records would be held twice."""
        self.record_bytes_since_state += len(lines)
        if not isinstance(lines, (bytes, bytearray)) and not lines.spilled:
            lines = lines.tail  # all in memory: buffered like any other small block
        if isinstance(lines, (bytes, bytearray)) and len(lines) < self.BLOCK:
            self._out += lines
            if len(self._out) >= self.BLOCK:
                self._drain()
            return
        self._drain(lines)

    def write_records(self, stream: str, records: t.Iterable[dict]) -> int:
        """RECORD messages of one stream, as the SDK would write them untransformed."""
        line, out = self._line, self._out
        extracted = datetime.now(timezone.utc).isoformat()
        envelope: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": None, "time_extracted": extracted}
        count = 0
        for record in records:
            envelope["record"] = record
            _encoder.encode_into(envelope, line)
            line.extend(b"\n")
            out += line
            self.record_bytes_since_state += len(line)
            count += 1
            if len(out) >= self.BLOCK:
                self._drain()
        return count

    def _drain(self, then: bytes | bytearray | Lines = b"") -> None:
        """The buffer out to stdout, then `then` (whole lines): a signal waits for all of it."""
        self._busy += 1
        try:
            out = sys.stdout.buffer
            if self._out:
                out.write(self._out)
                self._out.clear()
            if isinstance(then, (bytes, bytearray)):
                if then:
                    out.write(then)
            else:
                then.write_to(out)
        finally:
            self._busy -= 1
        self._after_busy()

    def _after_busy(self) -> None:
        if self.pending_signal is not None and not self._busy and self.on_signal is not None:
            signum, self.pending_signal = self.pending_signal, None
            self.on_signal(signum)

    @property
    def busy(self) -> bool:
        """Bytes are on their way to stdout: a signal handler must not write now."""
        return self._busy > 0

    def _flush_at_exit(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.flush()

    def flush(self) -> None:
        """Everything written so far, out to the reader."""
        if self._out:
            self._drain()
        self._busy += 1
        try:
            sys.stdout.buffer.flush()
        finally:
            self._busy -= 1
        self._after_busy()
