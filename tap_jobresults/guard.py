"""The one place every record passes through before it is written: value sanity and secrets.

A job's records are built and encoded on a fetch worker (engine.py), into one buffer of Singer
lines, before the first of them is written. `Output.finish` then checks the whole buffer:

- every value is representable: no number outside the float range (a 400-digit integer), no
  nesting deeper than MAX_DEPTH levels; strings are valid Unicode (the encoder refuses lone
  surrogates). Anything else raises `Unrepresentable`, which fails that job alone.
- no configured secret and no issued token (the secret registry) appears anywhere in a record,
  as a value or a key, at any depth: it is replaced by `***`;
- no credential a vendor echoes back (a job token under any spelling, an API key, ...) is landed:
  such keys are dropped, at any depth of the job's envelope (the record's own fields and
  `extra_fields`). Inside the fields that hold the user's own data (CONTENT_FIELDS: extracted
  document values, entities, content metadata) only protocol credential names (`jobToken`, `access_token`, `X-API-Key`,
  ...) are dropped: a document field named `password` or `token` is data, and a configured secret
  in it is still replaced by the registry check above.

Each replacement or drop is logged once per stream and field, never per record. The checks run
over the encoded bytes first (a few searches per job, in windows of whole lines), and only a job
that may hold something is decoded again and walked. The key check is exact, not a guess on
suffixes (a vendor's `policyKey` or `tokenUsage` is not walked): lower-cased, with JSON escapes and
every byte but `[a-z0-9"]` removed, the encoded bytes show a key as `"` + `key_name(key)` + `"`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import tempfile
import threading
import typing as t
from datetime import datetime, timezone

import msgspec

from tap_jobresults.scrub import SECRETS

logger = logging.getLogger("tap-jobresults")

MAX_DEPTH = 100  # nesting levels inside one record; deeper is not data any loader will take
_FLOAT_MAX = int(sys.float_info.max)
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_LONG_NUMBER = b"0" * len(str(_FLOAT_MAX))  # a number this long may be out of the float range
# Keys that hold a credential, compared lower-case with separators removed ("X-Job-Token", "job_token").
CREDENTIAL_KEYS = frozenset(
    {
        "jobtoken",
        "xjobtoken",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "bearertoken",
        "sessiontoken",
        "apitoken",
        "apikey",
        "xapikey",
        "clientsecret",
        "secret",
        "password",
        "authorization",
    }
)
# Cheap pre-filter on the lower-cased bytes: every credential key above ends with one of these.
# The names no document or entity uses for its own data: dropped inside CONTENT_FIELDS too.
PROTOCOL_CREDENTIAL_KEYS = frozenset(
    {"jobtoken", "xjobtoken", "accesstoken", "refreshtoken", "idtoken", "bearertoken", "xapikey", "clientsecret"}
)
# Per stream, the fields that hold the user's own data (documents' extracted values, CDF entities, Clavata
# content): credential-named keys inside them are the user's field names, kept (secrets are still replaced).
CONTENT_FIELDS: dict[str, frozenset[str]] = {
    "extraction_rows": frozenset({"values", "confidence", "validation_flags"}),
    "match_results": frozenset({"source", "matches", "top_target"}),
    "pipeline_matches": frozenset({"source", "target"}),
    "suggested_rules": frozenset({"matches"}),
    "generated_rules": frozenset({"matches"}),
    "clavata_jobs": frozenset({"content_data"}),
    "clavata_reports": frozenset({"content_metadata"}),
}
_SEPARATORS = re.compile(r"[^a-z0-9]")
# The key pre-filter (`may_hold_credential_key`). In the projection of encoded JSON (lower case, escapes
# removed, only [a-z0-9"] kept), a key whose `key_name` is a credential name reads '"<name>"'.
_CREDENTIAL_KEY = re.compile(b'"(?:' + b"|".join(k.encode() for k in sorted(CREDENTIAL_KEYS)) + b')"')
_CREDENTIAL_ENDINGS = (b'token"', b'key"', b'secret"', b'password"', b'authorization"')  # of every name above
_NOT_KEY_BYTES = bytes(b for b in range(256) if not (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b == 34))
_LOWER = bytes(b + 32 if 65 <= b <= 90 else b for b in range(256))
_ESCAPE = re.compile(rb"\\(?:u[0-9a-f]{4}|.)", re.DOTALL)  # each stands for a control character, '"' or '\\'
_OTHER_ESCAPE = re.compile(rb"\\u(?!00[01])")  # msgspec escapes no other character: another encoder did
# The only characters outside ASCII whose lower case holds an ASCII letter or digit (tests check it
# over all of Unicode): KELVIN SIGN (k) and LATIN CAPITAL LETTER I WITH DOT ABOVE (i + a combining dot).
_FOLDS_TO_ASCII = ("\u212a".encode(), "\u0130".encode())

_WINDOW = 1 << 20
_encoder = msgspec.json.Encoder(decimal_format="number")
_decoder = msgspec.json.Decoder()
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


class Unrepresentable(ValueError):
    """A record holds a value that cannot be written faithfully: that job fails."""


def key_name(key: str) -> str:
    """A key as the credential lists spell it: lower case, no separators ("X-Job-Token" -> "xjobtoken")."""
    return _SEPARATORS.sub("", key.lower())


def _secret_needles() -> tuple[tuple[str, bytes], ...]:
    """Each secret as text and as it appears inside an encoded JSON string."""
    secrets: t.Iterable[str] = getattr(SECRETS, "_ordered", ())
    return tuple((secret, _encoder.encode(secret)[1:-1]) for secret in secrets)


def depth(value: t.Any) -> int:
    """Levels of nesting (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def out_of_range(value: t.Any, path: str = "") -> str | None:
    """The path of the first integer outside the float range, or None."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, bool):
            continue
        if isinstance(node, int):
            if abs(node) > _FLOAT_MAX:
                return where or "(value)"
        elif isinstance(node, dict):
            stack.extend((child, f"{where}.{key}" if where else str(key)) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, f"{where}[]") for child in node)
    return None


def scrub(
    value: t.Any,
    secrets: t.Sequence[str],
    path: str,
    found: set[str],
    content: t.AbstractSet[str] = frozenset(),
    dropped: t.AbstractSet[str] = CREDENTIAL_KEYS,
) -> t.Any:
    """`value` with every secret replaced by `***` and every key in `dropped` (by `key_name`)
    removed; below the top-level keys in `content` (the user's own data) only the unmistakable
    credential names (PROTOCOL_CREDENTIAL_KEYS) are. The paths touched are added to `found`."""
    if isinstance(value, str):
        replaced = value
        for secret in secrets:
            if secret in replaced:
                replaced = replaced.replace(secret, "***")
        if replaced != value:
            found.add(path or "(record)")
        return replaced
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            name = str(key)
            where = f"{path}.{name}" if path else name
            if child is not None and key_name(name) in dropped:
                found.add(where)
                continue
            clean_key = scrub(name, secrets, where, found)
            below = PROTOCOL_CREDENTIAL_KEYS if not path and name in content else dropped
            out[clean_key] = scrub(child, secrets, where, found, dropped=below)
        return out
    if isinstance(value, list):
        return [scrub(child, secrets, f"{path}[]", found, dropped=dropped) for child in value]
    return value


def _warn(stream: str, fields: t.Iterable[str]) -> None:
    for field in sorted(fields):
        with _warned_lock:
            if (stream, field) in _warned:
                continue
            _warned.add((stream, field))
        logger.warning(
            "%s: field %s held a credential (a configured secret, an issued token or a credential key the "
            "vendor echoed); it was removed before writing (logged once per stream and field)",
            stream,
            field,
        )


def windows(buffer: bytes | bytearray) -> t.Iterator[bytes | bytearray]:
    """`buffer` (Singer lines) in copies of whole lines, about _WINDOW bytes each (a longer line alone):
    a big job costs no full-size copies, and no key, string or number is cut at a window's edge."""
    start, size = 0, len(buffer)
    while start < size:
        end = buffer.find(b"\n", start + _WINDOW - 1)  # the line holding the window's last byte ends it
        end = size if end < 0 else end + 1
        yield buffer[start:end]
        start = end


def may_hold_credential_key(encoded: bytes | bytearray) -> bool:
    """False only when no key in `encoded` (whole lines of JSON) has a `key_name` in CREDENTIAL_KEYS."""
    if not encoded.isascii() and any(char in encoded for char in _FOLDS_TO_ASCII):
        return True
    projection: bytes | bytearray
    if b"\\" in encoded:
        lowered = encoded.lower()
        if _OTHER_ESCAPE.search(lowered):
            return True
        projection = _ESCAPE.sub(b"", lowered).translate(None, _NOT_KEY_BYTES)
    else:
        projection = encoded.translate(_LOWER, _NOT_KEY_BYTES)  # one pass: deleted, then lower-cased
    # A few substring searches settle most jobs; the exact names only where one of their endings shows.
    return any(end in projection for end in _CREDENTIAL_ENDINGS) and _CREDENTIAL_KEY.search(projection) is not None


class Lines:
    """Whole Singer lines of one job: in memory up to SPILL bytes at a time, the rest in an anonymous
    temporary file. A job of a million records is held until it is checked as a whole (Output), and
    then written; in memory it would sit beside the response body it was built from, doubling the
    job's footprint. Each block that leaves memory is handed to `on_spill` first (the checks)."""

    SPILL = 8 << 20
    READ = 1 << 20

    def __init__(self, on_spill: t.Callable[[bytearray], None] | None = None) -> None:
        self.tail = bytearray()
        self.spilled = 0
        self._file: t.Any = None
        self._on_spill = on_spill

    def __iadd__(self, data: bytes | bytearray) -> Lines:
        self.tail += data
        if len(self.tail) >= self.SPILL:
            self._spill()
        return self

    def _spill(self) -> None:
        if self._on_spill is not None:
            self._on_spill(self.tail)
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="tap-jobresults-")
        self._file.write(self.tail)
        self.spilled += len(self.tail)
        self.tail = bytearray()

    def __len__(self) -> int:
        return self.spilled + len(self.tail)

    @property
    def in_memory(self) -> int:
        return len(self.tail)

    def spilled_blocks(self) -> t.Iterator[bytes]:
        """What went to the file, in blocks of whole lines (for the checks)."""
        if not self.spilled:
            return
        if self._file is None:
            raise ValueError("the records of this job were closed")
        self._file.flush()
        fd, offset, carry = self._file.fileno(), 0, b""
        while offset < self.spilled:
            block = os.pread(fd, min(self.READ, self.spilled - offset), offset)
            if not block:
                raise OSError(f"the temporary file of a job's records ended at {offset} of {self.spilled} bytes")
            offset += len(block)
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut:
                yield block[:cut]
            carry = block[cut:]
        if carry:
            yield carry

    def blocks(self) -> t.Iterator[bytes | bytearray]:
        """Everything, in order, in blocks (the last one is the in-memory tail)."""
        yield from self.spilled_blocks()
        if self.tail:
            yield self.tail

    def write_to(self, out: t.BinaryIO) -> None:
        """Everything, in order, to `out`: what went to the file is copied by the kernel (sendfile)
        where `out` is a file descriptor that takes it, else read back in blocks."""
        if self.spilled:
            if self._file is None:
                raise ValueError("the records of this job were closed")
            self._file.flush()
            out.flush()
            if not self._sendfile(out):
                for block in self.spilled_blocks():
                    out.write(block)
        if self.tail:
            out.write(self.tail)

    def _sendfile(self, out: t.BinaryIO) -> bool:
        try:
            target = out.fileno()
        except (AttributeError, OSError, ValueError):  # an in-memory stream (tests)
            return False
        offset = 0
        while offset < self.spilled:
            try:
                sent = os.sendfile(target, self._file.fileno(), offset, self.spilled - offset)
            except OSError as exc:
                if offset == 0 and exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    return False  # this descriptor does not take sendfile: nothing was sent yet
                raise
            if sent == 0:
                raise OSError(f"the temporary file of a job's records ended at {offset} of {self.spilled} bytes")
            offset += sent
        return True

    def lines(self) -> t.Iterator[bytes]:
        for block in self.blocks():
            yield from bytes(block).splitlines()

    def __bytes__(self) -> bytes:
        return b"".join(self.blocks())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Output:
    """The encoded records of one job, checked as a whole before any of them is written.

    `encode(stream, record)` returns the record's Singer lines (the stream's own record path:
    untransformed records encoded directly, others through the SDK's stream maps), or None to keep
    the record as an object (BATCH output, `--test`: the SDK writes those). The lines are held in a
    `Lines` spool; blocks that leave memory are checked on their way out with the secrets known
    then, and checked again at `finish` if a secret was registered since.
    """

    def __init__(self, encode: t.Callable[[t.Any, dict], bytes | None]) -> None:
        self._encode = encode
        self.lines = Lines(self._check_spilled)
        self.objects: list[tuple[t.Any, dict]] = []
        self.counts: dict[t.Any, int] = {}
        self._probe = bytearray()  # objects' records encoded, only to check them
        self._spilled_found = [False, False]  # long number, suspect: in what was spilled
        self._spilled_needles: tuple[bytes, ...] | None = None  # the secrets it was checked for

    def add(self, stream: t.Any, record: dict) -> None:
        encoded = self._encode(stream, record)
        if encoded is None:
            line = _encoder.encode(record)
            self._probe += line
            self._probe += b"\n"
            self.objects.append((stream, record))
        else:
            line = encoded
            self.lines += encoded
        if line.count(b"{") + line.count(b"[") > MAX_DEPTH and depth(record) > MAX_DEPTH:
            raise Unrepresentable(f"stream {stream.name}: a value is nested more than {MAX_DEPTH} levels deep")
        self.counts[stream] = self.counts.get(stream, 0) + 1

    @property
    def size(self) -> int:
        """Bytes held in memory until the writer has written them."""
        return self.lines.in_memory + 4 * len(self._probe)

    def _check_spilled(self, block: bytearray) -> None:
        needles = tuple(needle for _, needle in _secret_needles())
        if self._spilled_needles is None:
            self._spilled_needles = needles
        elif needles != self._spilled_needles:
            return  # a secret came since the first block (the registry only grows): finish checks all again
        long_number, suspect = _scan(block, needles)
        self._spilled_found[0] |= long_number
        self._spilled_found[1] |= suspect

    def finish(self) -> None:
        """Check the job's records as a whole (see the module docstring)."""
        secrets = _secret_needles()
        needles = tuple(needle for _, needle in secrets)
        long_number, suspect = self._spilled_found
        if self.lines.spilled and self._spilled_needles != needles:  # a secret came since a block was checked
            for block in self.lines.spilled_blocks():
                found = _scan(block, needles)
                long_number, suspect = long_number or found[0], suspect or found[1]
        found = _scan(self.lines.tail, needles)
        self._act(long_number or found[0], suspect or found[1], False, secrets)
        self._act(*_scan(self._probe, needles), True, secrets)
        self._probe = bytearray()

    def _act(self, long_number: bool, suspect: bool, objects: bool, secrets: tuple[tuple[str, bytes], ...]) -> None:
        if long_number:
            self._check_numbers(objects)
        if suspect:
            self._scrub(objects, tuple(secret for secret, _ in secrets))

    def _records(self, objects: bool) -> t.Iterator[tuple[str, dict]]:
        if objects:
            for stream, record in self.objects:
                yield stream.name, record
            return
        for line in self.lines.lines():
            message = _decoder.decode(line)
            if isinstance(message, dict) and isinstance(message.get("record"), dict):
                yield str(message.get("stream")), message["record"]

    def _check_numbers(self, objects: bool) -> None:
        for stream, record in self._records(objects):
            where = out_of_range(record)
            if where is not None:
                raise Unrepresentable(f"stream {stream} field {where}: a number outside the range of a float")

    def _scrub(self, objects: bool, secrets: tuple[str, ...]) -> None:
        if objects:
            for index, (stream, record) in enumerate(self.objects):
                found: set[str] = set()
                clean = scrub(record, secrets, "", found, CONTENT_FIELDS.get(stream.name, frozenset()))
                if found:
                    record.clear()
                    record.update(clean)
                    _warn(stream.name, found)
                    self.objects[index] = (stream, record)
            return
        out = Lines()  # scrubbed already: nothing more to check on the way out
        for line in self.lines.lines():
            message = _decoder.decode(line)
            if isinstance(message, dict) and message.get("type") == "RECORD":
                found = set()
                stream = str(message.get("stream"))
                message["record"] = scrub(
                    message.get("record"), secrets, "", found, CONTENT_FIELDS.get(stream, frozenset())
                )
                if found:
                    _warn(stream, found)
                    line = _encoder.encode(message)
            out += line + b"\n"
        self.lines.close()
        self.lines = out

    def close(self) -> None:
        """The spool's file, if any, is gone (the records are written or the job failed)."""
        self.lines.close()


def _scan(buffer: bytes | bytearray, needles: tuple[bytes, ...]) -> tuple[bool, bool]:
    """(may hold a number outside the float range, may hold a secret or a credential key)."""
    long_number = suspect = False
    for window in windows(buffer):
        long_number = long_number or _LONG_NUMBER in window.translate(_DIGITS)
        suspect = suspect or any(needle in window for needle in needles) or may_hold_credential_key(window)
    return long_number, suspect


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()
