"""records.conforms against an independent oracle: the jsonschema library, over every sub-schema of the
tap's own stream schemas and generated JSON values (which part of a nested object lands in its typed
column and which in extra_fields rests on it)."""

from __future__ import annotations

import contextlib
import json
import typing as t
from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_jobresults.records import conforms

SCHEMAS = Path(__file__).resolve().parent.parent / "tap_jobresults" / "schemas"


def _subschemas(schema: t.Any) -> t.Iterator[dict]:
    if not isinstance(schema, dict):
        return
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from _subschemas(sub)
    for key in ("items", "additionalProperties"):
        yield from _subschemas(schema.get(key))
    for key in ("allOf", "anyOf"):
        for sub in schema.get(key) or ():
            yield from _subschemas(sub)


# Shapes the stream schemas may grow into: alternatives, untyped and multi-typed values.
SHAPES = [
    {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": ["number"]}}]},
    {"anyOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}, "additionalProperties": False}]},
    {},
    {"type": ["string", "null", "object"], "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"a": True, "b": False}},  # boolean schemas: anything, nothing
]
SUBSCHEMAS = [
    sub
    for schema in [json.loads(path.read_text()) for path in sorted(SCHEMAS.glob("*.json"))] + SHAPES
    for sub in _subschemas(schema)
]
NAMES = sorted({name for sub in SUBSCHEMAS for name in sub.get("properties") or {}})

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0.0, 1.0, 2.5, -3.0, 1e300])
    | st.text(max_size=5)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(NAMES) | st.sampled_from(["a", "b"]) | st.text(max_size=4), children, max_size=4
        )
    ),
    max_leaves=12,
)


def test_the_schemas_use_only_what_conforms_reads():
    """So that the oracle below compares like with like: a keyword conforms ignores would make them differ."""
    read = {"type", "properties", "additionalProperties", "items", "allOf", "anyOf"}
    annotations = {"description", "format", "title", "$comment", "default", "examples", "x-sql-datatype"}
    used = {key for sub in SUBSCHEMAS for key in sub}
    assert used <= read | annotations, used - read - annotations


@settings(max_examples=600, derandomize=True, deadline=None)
@given(schema=st.sampled_from(SUBSCHEMAS), value=values)
def test_conforms_agrees_with_jsonschema(schema, value):
    expected = jsonschema.Draft7Validator(schema).is_valid(value)
    assert conforms(value, schema) == expected, (schema, value)


# -- typed nested columns: what a column holds is valid, and nothing sent is lost -----------------------------

from tap_jobresults.records import Partial, Unfit, _types, build, col, items_of, to_obj, typed  # noqa: E402
from tap_jobresults.sources.clavata import OUTCOME  # noqa: E402
from tests.test_field_properties import TABLES, _at  # noqa: E402 (a path's value, or a marker for none)


def _cells(convert: t.Callable) -> dict:
    return dict(
        zip(convert.__code__.co_freevars, (cell.cell_contents for cell in convert.__closure__ or ()), strict=True)
    )


TYPED = [
    (f"{table}.{spec.column}", _cells(spec.convert)["schema"], _cells(spec.convert)["decoders"] or {})
    for table, (cols, _) in sorted(TABLES.items())
    for spec in cols
    if spec.convert.__qualname__.startswith("typed.")
] + [
    # shapes the column schemas may take: no additionalProperties (JSON Schema's default: any), a schema for
    # them and no properties, a closed object, alternatives
    ("shape.open", {"type": ["object", "null"], "properties": {"n": {"type": "integer"}}}, {}),
    ("shape.map", {"type": ["object", "null"], "additionalProperties": {"type": ["integer", "null"]}}, {}),
    (
        "shape.closed",
        {"type": ["object", "null"], "properties": {"s": {"type": "string"}}, "additionalProperties": False},
        {},
    ),
    (  # an enum read below any key of a map: records.fitter builds that key's fit when it meets it
        "shape.enum_map",
        {
            "type": ["object", "null"],
            "properties": {"n": {"type": ["string", "null"]}},
            "additionalProperties": {
                "type": ["object", "null"],
                "properties": {"result": {"type": ["string", "null"]}},
            },
        },
        {("zz", "result"): OUTCOME, ("n",): OUTCOME},
    ),
    (
        "shape.any",
        {"anyOf": [{"type": "null"}, {"type": "string"}, {"type": "array", "items": {"type": "integer"}}]},
        {},
    ),
]


def from_schema(schema: t.Mapping, decoders: t.Mapping, path: tuple = ()) -> st.SearchStrategy:
    """Values shaped by the schema (any subset of its properties, unknown keys beside them), each of
    which may be replaced by any JSON value; enum numbers (known and unknown) where a decoder reads."""
    if path in decoders:
        return st.integers(-1, 4) | st.integers(-1, 4) | st.text(max_size=12) | values
    options = []
    types = _types(schema)
    if "object" in types or "properties" in schema:
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties", True)
        known = st.fixed_dictionaries(
            {}, optional={key: from_schema(sub, decoders, (*path, key)) for key, sub in props.items()}
        )
        unknown = st.dictionaries(
            st.sampled_from(["zz", "other"]) | st.text(max_size=3),
            from_schema(extra, decoders, (*path, "*")) if isinstance(extra, dict) else values,
            max_size=2,
        )
        options.append(st.tuples(unknown, known).map(lambda pair: {**pair[0], **pair[1]}))
    if "array" in types:
        item = items_of(schema)
        options.append(st.lists(from_schema(item, decoders, path) if item else values, max_size=3))
    for option in schema.get("anyOf") or ():
        options.append(from_schema(option, decoders, path))
    scalar = {"string": st.text(max_size=5), "integer": st.integers(-(2**40), 2**40), "null": st.none()}
    scalar |= {"number": st.sampled_from([0.5, 2.0, -1e10]), "boolean": st.booleans()}
    options += [scalar[kind] for kind in sorted(types) if kind in scalar]
    return st.one_of(*options, values) if options else values


def _leaves(value: t.Any, path: tuple = ()) -> t.Iterator[tuple[tuple, t.Any]]:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, (*path, key))
    else:
        yield path, value


def _declared(schema: t.Mapping, path: tuple) -> t.Mapping | None:
    """The sub-schema an object schema declares at `path` (through properties, or a schema for any other
    key), or None where some step is not declared."""
    for key in path:
        if "object" not in _types(schema):
            return None
        extra = schema.get("additionalProperties")
        schema = (schema.get("properties") or {}).get(key, extra if isinstance(extra, dict) else None)
        if schema is None:
            return None
    return schema


def _same(a: t.Any, b: t.Any) -> bool:
    return type(a) is type(b) and a == b


@settings(max_examples=800, derandomize=True, deadline=None)
@given(data=st.data(), column=st.sampled_from(TYPED))
def test_a_typed_column_holds_valid_values_and_extra_fields_the_rest_as_sent(data, column):
    """For any value of a typed nested column (shaped by its schema, perturbed anywhere): the column holds a
    value valid against the column's schema, and every leaf sent is in the column as sent, or in what goes
    to extra_fields as sent (an enum number: its name in the column, the number in extra_fields)."""
    name, schema, decoders = column
    sent = data.draw(from_schema(schema, decoders))
    convert = typed(schema, decoders)  # as the column tables build their converters
    try:
        held = convert(sent)
    except Unfit:
        assert not jsonschema.Draft7Validator(schema).is_valid(sent)  # the whole value goes to extra_fields
        fitted, rest = Unfit, sent
    else:
        fitted, rest = (held.value, held.rest) if isinstance(held, Partial) else (held, Unfit)
        assert jsonschema.Draft7Validator(schema).is_valid(fitted), (name, sent, fitted)
    if sent is None:
        assert fitted is None
        return
    for path, leaf in _leaves(sent):
        in_rest = rest is not Unfit and _same(_at(rest, path), leaf)
        if path in decoders and leaf == "":
            assert _at(fitted, path) is None, (name, path, fitted)  # proto3: the empty name is unset
            continue
        if path in decoders and isinstance(leaf, int) and not isinstance(leaf, bool):
            with contextlib.suppress(Unfit):  # a number the vendor's table names: the name in the column
                assert _same(_at(fitted, path), decoders[path](leaf).value), (name, path, leaf, fitted)
        elif (sub := _declared(schema, path)) is not None and jsonschema.Draft7Validator(sub).is_valid(leaf):
            # what fits its declared place is held by the column, not left to extra_fields
            assert _same(_at(fitted, path), leaf), (name, path, leaf, fitted, rest)
        assert in_rest or _same(_at(fitted, path), leaf), (name, path, leaf, fitted, rest)


def test_an_enum_below_a_map_key_is_decoded_under_that_key_only():
    """Worked by hand: the decoder at ("zz", "result") applies below the key "zz" alone; "q" is another key
    of the same map, whose result (a number, where the schema declares a string) goes to extra_fields, as does
    its undeclared x (the map's value schema declares result only)."""
    (schema, decoders) = next((s, d) for name, s, d in TYPED if name == "shape.enum_map")
    held = typed(schema, decoders)({"zz": {"result": 2}, "q": {"result": 2, "x": 1}, "n": 1})
    assert held == Partial(
        {"zz": {"result": "OUTCOME_TRUE"}, "q": {}, "n": "OUTCOME_FALSE"},
        {"zz": {"result": 2}, "q": {"result": 2, "x": 1}, "n": 1},
    )
    assert typed(schema, decoders)({"zz": {"result": None}}) == {"zz": {"result": None}}  # a null enum is unset


def test_boolean_schemas_allow_anything_or_nothing():
    """JSON Schema's `true` and `false` as sub-schemas (worked by hand, not by the oracle)."""
    shape = {"type": "object", "properties": {"a": True, "b": False}}
    assert conforms({"a": [1, {"x": None}]}, shape)
    assert not conforms({"b": None}, shape)
    assert conforms({"c": "other keys are open"}, shape)


def test_an_object_column_sent_something_else_keeps_it_in_extra_fields():
    """`to_obj`: CDF's source/target and Talonic's values are objects; anything else stays as sent."""
    cols = [col("source", "source", convert=to_obj)]
    assert build({"source": "not an object"}, cols) == {"source": None, "extra_fields": {"source": "not an object"}}
    assert build({"source": {"id": 1}}, cols) == {"source": {"id": 1}, "extra_fields": None}
