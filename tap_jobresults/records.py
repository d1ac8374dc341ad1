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
- A column holds a normalised value; when normalising dropped something the vendor sent (a timestamp's
  digits past the microsecond, an enum number decoded to its name, a sub-field a typed object does not
  declare), what was dropped is kept in `extra_fields`, as sent, under the API's own key (nested under
  its parent's key): `Partial(value, rest)` from a converter says so.
- Null means absent: null values are not copied into `extra_fields`. Clavata sends protobuf JSON,
  where an empty string, list or object is indistinguishable from "not set" (proto3, and the
  gateway's EmitUnpopulated), so its objects drop those too (`proto3=True`); numbers and booleans
  are kept whatever their value.
"""

from __future__ import annotations

import re
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


class Partial(t.NamedTuple):
    """A converter's answer when the column cannot hold all of the value: `value` for the column,
    `rest` (as sent; for an object, the sub-fields left out, nested as sent) for `extra_fields`."""

    value: t.Any
    rest: t.Any


_FRACTION = re.compile(r"[Tt ]\d{2}:\d{2}:\d{2}[.,](\d+)")


def finer_than_micros(value: t.Any) -> bool:
    """Does this timestamp, as sent, carry more precision than a microsecond column holds?
    RFC 3339 strings: a non-zero digit past the 6th fractional one. ms epochs: a fraction of a
    microsecond."""
    if isinstance(value, str):
        found = _FRACTION.search(value)
        return bool(found and found[1][6:].strip("0"))
    if isinstance(value, float):
        return not (value * 1000).is_integer()
    return False


def to_ts(value: t.Any) -> t.Any:
    """The instant as UTC ISO 8601 (microseconds); a timestamp finer than that is also kept as sent."""
    try:
        normalised = iso(value)
    except ValueError:
        raise Unfit from None
    return Partial(normalised, value) if normalised is not None and finer_than_micros(value) else normalised


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
    kept: dict[Path, t.Any] = {}
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
                rest: t.Any = MISSING
                if isinstance(converted, Partial):
                    converted, rest = converted
                out = spec.default if converted is None and spec.default is not None else converted
                if path == spec.paths[0]:
                    consumed.append(path)
                    rest = _pruned(rest, proto3)
                    if rest is not MISSING:
                        kept[path] = rest  # what the column could not hold, as sent
                # (an alias stays in extra_fields whole, as sent)
                # Another spelling fills the column and is also kept in extra_fields under the name
                # it was sent with: the record shows which spelling the vendor used.
        record[spec.column] = out
    extra = leftover(obj, consumed, proto3, drop)
    for path, rest in kept.items():
        place(extra, path, rest)
    record["extra_fields"] = extra or None
    return record


def _pruned(value: t.Any, proto3: bool) -> t.Any:
    """`value` without its empty sub-fields (null is absent); MISSING when nothing is left."""
    if isinstance(value, dict):
        value = {k: v for k, v in ((k, _pruned(v, proto3)) for k, v in value.items()) if v is not MISSING}
    return MISSING if value is MISSING or is_empty(value, proto3) else value


def place(extra: dict, path: Path, value: t.Any) -> None:
    """Put `value` at `path` in `extra_fields`, merging into what is already kept there."""
    node = extra
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    current = node.get(path[-1])
    if isinstance(current, dict) and isinstance(value, dict):
        for key, sub in value.items():
            place(current, (key,), sub)
    else:
        node[path[-1]] = value


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


# -- typed nested objects ------------------------------------------------------------------------------
# A nested object column whose sub-fields the vendor documents declares them in the stream's schema
# (so flattening gives real columns). The column carries exactly what the schema declares, in the
# declared types; any other sub-field, or one of the wrong type, goes to `extra_fields` under the
# object's API key, as sent. A flattening target would otherwise drop a sub-field it has no column
# for, and a sub-field of the wrong type would make the record invalid.

Decoders = t.Mapping[Path, Converter]


def _types(schema: t.Mapping) -> set[str]:
    kind = schema.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def items_of(schema: t.Mapping) -> t.Mapping | None:
    """An array's item schema: `items`, or (top-level columns) `allOf: [{items}]`, which validators honour
    and loaders ignore (target-postgres would make an `items` array a jsonb[] column)."""
    if isinstance(schema.get("items"), dict):
        return schema["items"]
    for part in schema.get("allOf") or ():
        if isinstance(part.get("items"), dict):
            return part["items"]
    return None


def conforms(value: t.Any, schema: t.Mapping) -> bool:
    """`value` is valid against `schema` (types, properties, items, additionalProperties schemas)."""
    return checker(schema)(value)


Check = t.Callable[[t.Any], bool]
Fit = t.Callable[[t.Any], tuple[t.Any, t.Any]]


def checker(schema: t.Any) -> Check:
    """`conforms` for one schema, which is read once: what each node allows is decided here, not
    again for every value of every record (typed columns check all their nested values)."""
    if not isinstance(schema, t.Mapping):  # a boolean schema: true allows anything, false nothing
        return (lambda value: True) if schema is not False else (lambda value: False)
    options = [checker(option) for option in schema["anyOf"]] if "anyOf" in schema else None
    types = _types(schema)
    props = {key: checker(sub) for key, sub in (schema.get("properties") or {}).items()}
    extra = schema.get("additionalProperties", True)
    other = checker(extra) if isinstance(extra, dict) else None
    closed = extra is False
    items = items_of(schema)
    each = checker(items) if items is not None else None
    objects, arrays = not types or "object" in types, not types or "array" in types
    nulls, untyped = "null" in types or not types, not types
    booleans, integers = "boolean" in types, bool(types & {"integer", "number"})
    numbers, whole, strings = "number" in types, "integer" in types, "string" in types

    def check(value: t.Any) -> bool:
        if options is not None and not any(option(value) for option in options):
            return False
        if isinstance(value, dict):
            if not objects:
                return False
            for key, sub in value.items():
                rule = props.get(key, other)
                if rule is None:
                    if closed:
                        return False
                    continue
                if not rule(sub):
                    return False
            return True
        if isinstance(value, list):
            return arrays and (each is None or all(map(each, value)))
        if value is None:
            return nulls
        if untyped:
            return True
        if isinstance(value, bool):
            return booleans
        if isinstance(value, int):
            return integers
        if isinstance(value, float):
            return numbers or (whole and value.is_integer())
        return strings and isinstance(value, str)

    return check


def fitter(schema: t.Mapping, decoders: Decoders, path: tuple[str | None, ...] = ()) -> Fit:
    """The function of a value giving (what the column holds, what goes to extra_fields as sent),
    MISSING for none, for the column declared by `schema` at `path` (see `typed`)."""
    if path in decoders:
        decode = decoders[path]  # type: ignore[index]

        def fit_decoded(value: t.Any) -> tuple[t.Any, t.Any]:
            try:
                name = decode(value)
            except Unfit:
                return MISSING, value
            if isinstance(name, Partial):
                return name.value, name.rest
            return name, MISSING

        return fit_decoded
    check = checker(schema)

    def fit_value(value: t.Any) -> tuple[t.Any, t.Any]:
        return (value, MISSING) if check(value) else (MISSING, value)

    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    if "object" not in _types(schema) or (props is None and not isinstance(extra, dict)):
        return fit_value
    fits = {key: fitter(sub, decoders, (*path, key)) for key, sub in (props or {}).items()}
    other: Fit | None = None
    if isinstance(extra, dict):
        depth = len(path)
        if any(len(p) > depth and p[:depth] == path and p[depth] not in fits for p in decoders):
            other = None  # a decoder below some undeclared key: built for each key met (see below)
        else:
            other = fitter(extra, decoders, (*path, None))  # no decoder path holds None: none applies below
    by_key = isinstance(extra, dict) and other is None

    def fit_object(value: t.Any) -> tuple[t.Any, t.Any]:
        if not isinstance(value, dict):
            return fit_value(value)
        out: dict = {}
        rest: dict = {}
        for key, sub in value.items():
            fit = fits.get(key, other)
            if fit is None:
                if not by_key:
                    rest[key] = sub  # a sub-field the schema does not declare
                    continue
                fit = fitter(t.cast("t.Mapping", extra), decoders, (*path, key))
            fitted, left = fit(sub)
            if fitted is not MISSING:
                out[key] = fitted
            if left is not MISSING:
                rest[key] = left
        return out, (rest or MISSING)

    return fit_object


def typed(schema: t.Mapping, decoders: Decoders | None = None) -> Converter:
    """A converter for a column declared by `schema` (an object with properties, or an array of
    typed items): see above. `decoders`: sub-paths holding an enum a vendor may send as a number
    (the column gets the name, `extra_fields` the number as sent). The schema is compiled
    (`fitter`) when the first value is converted, once the streams are set up."""
    compiled: list[Fit] = []

    def convert(value: t.Any) -> t.Any:
        if value is None:
            return None
        if not compiled:
            compiled.append(fitter(schema, decoders or {}))
        fitted, rest = compiled[0](value)
        if fitted is MISSING:
            raise Unfit
        return fitted if rest is MISSING else Partial(fitted, rest)

    return convert
