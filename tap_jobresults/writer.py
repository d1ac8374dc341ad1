"""Singer output: msgspec serialisation, stdout flushed at each STATE, records encoded directly.

A STATE line reaches the target only after every record before it, so a resume point is never ahead
of the data; flushing per record (the SDK default) costs a syscall per message in a pipe. STATE
messages are encoded from their value (the SDK's generic path deep-copies the whole state through
`dataclasses.asdict` first). Result records, when nothing transforms them (no stream maps, no
flattening, every property selected), are encoded straight from the record dict.
"""

from __future__ import annotations

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
    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer = bytearray(256)

    def write_message(self, message: Message) -> None:
        out = sys.stdout.buffer
        if isinstance(message, StateMessage):
            _encoder.encode_into({"type": "STATE", "value": message.value}, self._buffer)
            self._buffer.extend(b"\n")
            out.write(self._buffer)
            out.flush()
            return
        out.write(self.format_message(message))

    def write_records(self, stream: str, records: t.Iterable[dict]) -> int:
        """RECORD messages of one stream, as the SDK would write them untransformed."""
        out = sys.stdout.buffer
        buffer = self._buffer
        extracted = datetime.now(timezone.utc).isoformat()
        envelope: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": None, "time_extracted": extracted}
        count = 0
        for record in records:
            envelope["record"] = record
            _encoder.encode_into(envelope, buffer)
            buffer.extend(b"\n")
            out.write(buffer)
            count += 1
        return count
