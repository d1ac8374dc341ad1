"""JSON text with raw fragments: values no JSON library writes on purpose (1e400, bytes that are not
UTF-8, nesting past a decoder's depth limit, a lone surrogate escape)."""

from __future__ import annotations

import dataclasses
import json
import typing as t


@dataclasses.dataclass(frozen=True)
class Raw:
    """A fragment spliced into the JSON text as is."""

    data: bytes
    label: str = ""  # how reports show it (the bytes may be huge or not text)

    def __repr__(self) -> str:
        if self.label:
            return f"Raw({self.label})"
        return f"Raw({self.data[:60]!r}{'...' if len(self.data) > 60 else ''})"


def dumps(value: t.Any) -> bytes:
    out: list[bytes] = []
    _write(value, out)
    return b"".join(out)


def _write(value: t.Any, out: list[bytes]) -> None:
    # Iterative enough for our bodies: nesting comes in as Raw, never as deep Python structures.
    if isinstance(value, Raw):
        out.append(value.data)
    elif isinstance(value, dict):
        out.append(b"{")
        for n, (key, item) in enumerate(value.items()):
            if n:
                out.append(b",")
            out.append(key.data if isinstance(key, Raw) else json.dumps(str(key)).encode())
            out.append(b":")
            _write(item, out)
        out.append(b"}")
    elif isinstance(value, (list, tuple)):
        out.append(b"[")
        for n, item in enumerate(value):
            if n:
                out.append(b",")
            _write(item, out)
        out.append(b"]")
    else:
        out.append(json.dumps(value, allow_nan=False).encode())


def loads_lenient(data: bytes) -> t.Any:
    """What a forgiving reader makes of a body (for the test's own bookkeeping, never the tap's)."""
    return json.loads(data.decode("utf-8", errors="replace"))
