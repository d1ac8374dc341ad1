"""Records as declarations: per vendor object, the map column <- API field(s), with a converter.

One function turns an API object into a record and its `extra_fields`: everything the object holds
that no column carries, keyed (and nested) as the API sent it. So a field a vendor adds next month
lands in `extra_fields` without a release, a new column is one line, and the declarations document
where each column comes from.

Rules, the same for every vendor:
- Spellings the vendors disagree on are aliases of one column: the first spelling present fills it.
  Only the column's own (first-listed) spelling is taken out of `extra_fields`; any other spelling
  stays there as sent, so nothing depends on knowing the alias to find it.
- A value of the wrong type for its column is never emitted in that column: it is coerced where
  that loses nothing (5.0 -> 5, 7 -> "7"), otherwise the column is null and the value goes to
  `extra_fields` as sent. An unparseable timestamp likewise.
- Null means absent: null values are not copied into `extra_fields`. Clavata sends protobuf JSON,
  where an empty string, list or object is indistinguishable from "not set" (proto3, and the
  gateway's EmitUnpopulated), so its objects drop those too (`proto3=True`); numbers and booleans
  are kept whatever their value.
"""

from __future__ import annotations

import typing as t

from tap_jobresults.lifecycle import iso

MISSING: t.Any = object()
Path = tuple[str, ...]


class Unfit(Exception):
    """The value does not fit the column's type."""


Converter = t.Callable[[t.Any], t.Any]


def to_str(value: t.Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Unfit


def to_int(value: t.Any) -> int:
    if isinstance(value, bool):
        raise Unfit
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise Unfit


def to_num(value: t.Any) -> float | int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise Unfit


def to_obj(value: t.Any) -> dict:
    if isinstance(value, dict):
        return value
    raise Unfit


def to_list(value: t.Any) -> list:
    if isinstance(value, list):
        return value
    raise Unfit


def to_str_list(value: t.Any) -> list:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise Unfit


def to_int_list(value: t.Any) -> list:
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    raise Unfit


def to_ts(value: t.Any) -> str | None:
    try:
        return iso(value)
    except ValueError:
        raise Unfit from None


def as_is(value: t.Any) -> t.Any:
    return value


class Col(t.NamedTuple):
    """One column: its name, the API field paths it reads (aliases, in order), a converter."""

    column: str
    paths: tuple[Path, ...]
    convert: Converter
    default: t.Any = None


def col(column: str, *fields: str, convert: Converter = as_is, default: t.Any = None) -> Col:
    """`col("document_count", "document_count", "total_documents", convert=to_int)`; dotted names
    reach into nested objects (`schema.id`)."""
    return Col(column, tuple(tuple(f.split(".")) for f in fields), convert, default)


def _get(obj: t.Any, path: Path) -> t.Any:
    for key in path:
        if not isinstance(obj, dict):
            return MISSING
        obj = obj.get(key, MISSING)
        if obj is MISSING:
            return MISSING
    return obj


def is_empty(value: t.Any, proto3: bool) -> bool:
    if value is None:
        return True
    if proto3:
        return value == "" or value == [] or value == {}
    return False


def build(obj: dict, cols: t.Sequence[Col], *, proto3: bool = False, drop: frozenset[str] = frozenset()) -> dict:
    """The record for `obj` (columns in declaration order) plus `extra_fields`.

    `drop`: top-level fields deliberately not landed anywhere (credentials a vendor echoes back).
    """
    record: dict[str, t.Any] = {}
    consumed: list[Path] = []
    for spec in cols:
        out = spec.default
        chosen: t.Any = MISSING
        for path in spec.paths:
            value = _get(obj, path)
            if value is MISSING or value is None:
                if value is None:
                    consumed.append(path)  # null is absent
                continue
            if chosen is MISSING:
                try:
                    converted = spec.convert(value)
                except Unfit:
                    continue  # stays in extra_fields, as sent; a later alias may still fit
                chosen = value
                out = spec.default if converted is None and spec.default is not None else converted
                if path == spec.paths[0]:
                    consumed.append(path)
                # Another spelling fills the column and is also kept in extra_fields under the name
                # it was sent with: the record shows which spelling the vendor used.
        record[spec.column] = out
    record["extra_fields"] = leftover(obj, consumed, proto3, drop) or None
    return record


def leftover(obj: dict, consumed: t.Iterable[Path], proto3: bool, drop: frozenset[str] = frozenset()) -> dict:
    """`obj` minus the consumed paths (and empty values), nested as sent."""
    top: set[str] = set()
    nested: dict[str, list[Path]] = {}
    for path in consumed:
        if len(path) == 1:
            top.add(path[0])
        else:
            nested.setdefault(path[0], []).append(path[1:])
    rest: dict[str, t.Any] = {}
    for key, value in obj.items():
        if key in top or key in drop or is_empty(value, proto3):
            continue
        if key in nested and isinstance(value, dict):
            sub = leftover(value, nested[key], proto3)
            if sub:
                rest[key] = sub
            continue
        rest[key] = value
    return rest
