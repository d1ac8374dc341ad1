"""Singer output: msgspec serialisation, stdout flushed at each STATE, records encoded directly.

A STATE line reaches the target only after every record before it, so a resume point is never ahead
of the data; flushing per record (the SDK default) costs a syscall per message in a pipe. STATE
messages are encoded from their value (the SDK's generic path deep-copies the whole state through
`dataclasses.asdict` first). Result records, when nothing transforms them (no stream maps, no
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

_encoder = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")


class SingerWriter(MsgSpecWriter):
    """Messages are gathered in a buffer of our own and written to stdout in blocks of at least
    BLOCK bytes, and whole at each STATE (then flushed): whatever stdout's own buffering (it is
    none at all under PYTHONUNBUFFERED, which some runners set), a message costs no system call."""

    BLOCK = 1 << 16

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._line = bytearray(256)
        self._out = bytearray()
        # Runs that end without a last STATE (`--test`) still deliver what they wrote.
        atexit.register(self._flush_at_exit)

    def write_message(self, message: Message) -> None:
        if isinstance(message, StateMessage):
            _encoder.encode_into({"type": "STATE", "value": message.value}, self._line)
            self._line.extend(b"\n")
            self._out += self._line
            self.flush()
            return
        self._out += self.format_message(message)
        if len(self._out) >= self.BLOCK:
            self._drain()

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
            count += 1
            if len(out) >= self.BLOCK:
                self._drain()
        return count

    def _drain(self) -> None:
        sys.stdout.buffer.write(self._out)
        self._out.clear()

    def _flush_at_exit(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.flush()

    def flush(self) -> None:
        """Everything written so far, out to the reader."""
        if self._out:
            self._drain()
        sys.stdout.buffer.flush()
