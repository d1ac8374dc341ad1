"""Unit tests of the record guard, log scrubbing, SDK hooks, the writer and the transport watchdog.

In-process and fast: every expected value below is worked out by hand from the modules' contracts
(tap_jobresults/guard.py, scrub.py, sdk_hooks.py, writer.py, transport.py), never computed with the
function under test. Global state the modules keep (the secret registry, the warned-once set, the
logging record factory and filters, sdk_hooks' per-stream caches) is saved and restored per test.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import sys
import threading
import time
import typing as t
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.metrics import Metric, Point
from singer_sdk.singerlib import RecordMessage, StateMessage

from tap_jobresults import guard, scrub, sdk_hooks, transport
from tap_jobresults import writer as writer_module
from tap_jobresults.guard import Output, Unrepresentable
from tap_jobresults.scrub import SECRETS, SecretRegistry

# The largest finite double, (2 - 2**-52) * 2**1023, as an integer: the edge of "representable".
FLOAT_MAX = 2**1024 - 2**971
WINDOW = 1 << 20


# -- shared plumbing -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_globals() -> t.Iterator[None]:
    """The process-wide registries these modules keep, emptied for the test and put back after."""
    secrets, ordered = set(SECRETS._secrets), SECRETS._ordered
    warned = set(guard._warned)
    counters, fast = dict(sdk_hooks._counters), dict(sdk_hooks._fast)
    SECRETS.clear()
    guard._warned.clear()
    sdk_hooks._counters.clear()
    sdk_hooks._fast.clear()
    yield
    SECRETS.clear()
    SECRETS._secrets.update(secrets)
    SECRETS._ordered = ordered
    guard._warned.clear()
    guard._warned.update(warned)
    sdk_hooks._counters.clear()
    sdk_hooks._counters.update(counters)
    sdk_hooks._fast.clear()
    sdk_hooks._fast.update(fast)


class S:
    """A stream as Output sees it: something with a name."""

    def __init__(self, name: str) -> None:
        self.name = name


def compact(value: t.Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def line_encoder(stream: S, record: dict) -> bytes:
    """A stream's record path that writes Singer lines (what RecordEncoder does, reduced)."""
    return compact({"type": "RECORD", "stream": stream.name, "record": record}) + b"\n"


def object_encoder(stream: S, record: dict) -> None:
    """A stream's record path that keeps records as objects (BATCH output, `--test`)."""
    return None


def nest(levels: int) -> list:
    """`levels` lists, one inside the other: nest(1) == [], nest(3) == [[[]]]."""
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def records_of(lines: bytes | bytearray) -> list[dict]:
    return [json.loads(line) for line in bytes(lines).splitlines()]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tap-jobresults" and r.levelno == logging.WARNING]


# -- guard: key_name, depth, out_of_range ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [("X-Job-Token", "xjobtoken"), ("job_token", "jobtoken"), ("Api Key 2", "apikey2"), ("ÄccessToken", "ccesstoken")],
)
def test_key_name_is_lower_case_without_separators(key: str, expected: str) -> None:
    assert guard.key_name(key) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 0),
        (None, 0),
        ("a string is a scalar", 0),
        ([], 1),
        ({}, 1),
        ([1, "x", None], 1),
        ({"a": 1}, 1),
        ([[]], 2),
        ({"a": {"b": {}}, "c": []}, 3),  # the deepest branch counts, not the last one walked
        ([[], [[[]]], []], 4),
        ({"a": [1, {"b": [2]}]}, 4),
        (nest(100), 100),
        (nest(101), 101),  # one over the limit: reported as such
        (nest(150), 101),  # far over: the walk stops one level past MAX_DEPTH
    ],
)
def test_depth_counts_levels_of_nesting(value: t.Any, expected: int) -> None:
    assert guard.depth(value) == expected


def test_max_depth_is_one_hundred() -> None:
    assert guard.MAX_DEPTH == 100


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3),
    max_leaves=25,
)


def depth_oracle(value: t.Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_oracle(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_oracle(v) for v in value), default=0)
    return 0


@settings(max_examples=150, derandomize=True, deadline=None)
@given(json_values)
def test_depth_matches_a_recursive_count(value: t.Any) -> None:
    assert guard.depth(value) == depth_oracle(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (FLOAT_MAX, None),  # the largest double is representable
        (-FLOAT_MAX, None),
        (FLOAT_MAX + 1, "(value)"),
        (-(FLOAT_MAX + 1), "(value)"),
        (10**400, "(value)"),
        (True, None),
        (1e308, None),
        ("9" * 400, None),  # a string of digits is a string
        ({"a": {"b": 10**400}}, "a.b"),
        ({"a": [1, 10**400]}, "a[]"),
        ([10**400], "[]"),
        ([[1], [2, [-(10**400)]]], "[][][]"),
        ({"a": [{"b": [10**400]}]}, "a[].b[]"),
        ({"a": [1, 2], "b": {"c": FLOAT_MAX}}, None),
        ({1: 10**400}, "1"),
    ],
)
def test_out_of_range_names_the_path_of_an_integer_beyond_a_double(value: t.Any, expected: str | None) -> None:
    assert guard.out_of_range(value) == expected


def test_out_of_range_paths_start_at_the_given_path() -> None:
    assert guard.out_of_range({"x": [10**400]}, "rec") == "rec.x[]"
    assert guard.out_of_range(10**400, "rec") == "rec"
    assert guard.out_of_range({"x": 1}, "rec") is None


def has_big(value: t.Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > FLOAT_MAX or value < -FLOAT_MAX
    if isinstance(value, dict):
        return any(has_big(v) for v in value.values())
    if isinstance(value, list):
        return any(has_big(v) for v in value)
    return False


big_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**1100), max_value=2**1100) | st.text(max_size=2),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from("abc"), children, max_size=3),
    max_leaves=15,
)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(big_values)
def test_out_of_range_finds_a_big_integer_at_any_depth(value: t.Any) -> None:
    assert (guard.out_of_range(value) is not None) == has_big(value)


def test_digit_table_maps_digits_to_zero_and_everything_else_to_space() -> None:
    assert b"0123456789/:a -+.eE".translate(guard._DIGITS) == b"0000000000" + b" " * 9
    assert bytes(range(256)).translate(guard._DIGITS) == b" " * 48 + b"0" * 10 + b" " * 198
    assert guard._LONG_NUMBER == b"0" * 309  # as many digits as the largest double has


# -- guard: scrub ------------------------------------------------------------------------------------


def test_scrub_replaces_secrets_in_strings_and_records_the_path() -> None:
    found: set[str] = set()
    assert guard.scrub("a-SECRET1-b-SECRET1", ["SECRET1"], "f", found) == "a-***-b-***"
    assert found == {"f"}
    found = set()
    assert guard.scrub("xSECRET1", ["SECRET1"], "", found) == "x***"
    assert found == {"(record)"}
    found = set()
    assert guard.scrub("nothing here", ["SECRET1"], "f", found) == "nothing here"
    assert found == set()


def test_scrub_applies_every_secret_in_order() -> None:
    found: set[str] = set()
    assert guard.scrub("longsecret and long", ["longsecret", "long"], "p", found) == "*** and ***"
    assert found == {"p"}


@pytest.mark.parametrize("value", [5, 2.5, None, True, 10**400])
def test_scrub_returns_other_scalars_as_they_are(value: t.Any) -> None:
    found: set[str] = set()
    assert guard.scrub(value, ["SECRET1"], "p", found) is value
    assert found == set()


def test_scrub_drops_credential_keys_at_any_depth_and_keeps_null_ones() -> None:
    record = {
        "id": "r1",
        "X-Job-Token": "tok",
        "token": None,  # nothing to leak: kept
        "nested": {"api_key": "k", "keep": 1, "deeper": [{"Authorization": "Bearer x", "n": 2}]},
        "password": 0,
    }
    found: set[str] = set()
    assert guard.scrub(record, [], "", found) == {
        "id": "r1",
        "token": None,
        "nested": {"keep": 1, "deeper": [{"n": 2}]},
    }
    assert found == {"X-Job-Token", "nested.api_key", "nested.deeper[].Authorization", "password"}


def test_scrub_paths_below_a_given_path() -> None:
    found: set[str] = set()
    assert guard.scrub({"a": {"secret": "s", "b": "SECRET1"}}, ["SECRET1"], "rec", found) == {"a": {"b": "***"}}
    assert found == {"rec.a.secret", "rec.a.b"}


def test_scrub_replaces_a_secret_in_a_key() -> None:
    found: set[str] = set()
    assert guard.scrub({"k-SECRET1": 1, "plain": "v"}, ["SECRET1"], "", found) == {"k-***": 1, "plain": "v"}
    assert found == {"k-SECRET1"}


def test_scrub_in_lists_at_the_top() -> None:
    found: set[str] = set()
    assert guard.scrub(["SECRET1", {"token": "t"}, 3], ["SECRET1"], "", found) == ["***", {}, 3]
    assert found == {"[]", "[].token"}


def test_content_fields_keep_user_field_names_but_drop_protocol_credentials() -> None:
    record = {
        "values": {
            "password": "pw",
            "token": "user data",
            "jobToken": "j",
            "rows": [{"accessToken": "a", "secret": 1}],
        },
        "confidence": {"client_secret": "c", "apiKey": "k"},
        "password": "top-level is the envelope",
        "other": {"password": "dropped", "values": {"password": "dropped too"}},
    }
    found: set[str] = set()
    out = guard.scrub(record, ["user data"], "", found, guard.CONTENT_FIELDS["extraction_rows"])
    assert out == {
        "values": {"password": "pw", "token": "***", "rows": [{"secret": 1}]},
        "confidence": {"apiKey": "k"},
        "other": {"values": {}},
    }
    assert found == {
        "values.token",
        "values.jobToken",
        "values.rows[].accessToken",
        "confidence.client_secret",
        "password",
        "other.password",
        "other.values.password",
    }


def test_a_content_field_name_counts_only_at_the_top_of_the_record() -> None:
    found: set[str] = set()
    out = guard.scrub({"wrap": {"values": {"password": "p"}}}, [], "", found, frozenset({"values"}))
    assert out == {"wrap": {"values": {}}}
    assert found == {"wrap.values.password"}


def test_scrub_with_an_explicit_dropped_set() -> None:
    found: set[str] = set()
    assert guard.scrub({"a": {"password": 1, "xApiKey": 2}}, [], "", found, dropped=guard.PROTOCOL_CREDENTIAL_KEYS) == {
        "a": {"password": 1}
    }
    assert found == {"a.xApiKey"}


credential_names = st.sampled_from([*sorted(guard.CREDENTIAL_KEYS), "Job-Token", "X_API_KEY", "Client.Secret"])
plain_names = st.sampled_from(["id", "name", "values2", "count", "tokens", "keys", "secretary"])
scrub_values = st.recursive(
    st.none() | st.integers() | st.sampled_from(["plain", "has SECRET9 inside", "SECRET9", "x"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(plain_names | credential_names, children, max_size=4)
    ),
    max_leaves=20,
)


def leaks(value: t.Any) -> bool:
    """A secret anywhere, or a credential key holding a value (the oracle)."""
    if isinstance(value, str):
        return "SECRET9" in value
    if isinstance(value, dict):
        for key, child in value.items():
            name = "".join(c for c in key.lower() if c.isalnum())
            if "SECRET9" in key or (child is not None and name in guard.CREDENTIAL_KEYS) or leaks(child):
                return True
    if isinstance(value, list):
        return any(leaks(v) for v in value)
    return False


@settings(max_examples=200, derandomize=True, deadline=None)
@given(scrub_values)
def test_scrub_leaves_no_secret_and_no_credential_key(value: t.Any) -> None:
    found: set[str] = set()
    out = guard.scrub(value, ["SECRET9"], "", found)
    assert not leaks(out)
    assert bool(found) == leaks(value)


# -- guard: Output ---------------------------------------------------------------------------------


def test_output_add_keeps_lines_and_objects_and_counts_per_stream() -> None:
    a, b = S("a"), S("b")
    lines = Output(line_encoder)
    lines.add(a, {"x": 1})
    lines.add(a, {"x": 2})
    lines.add(b, {"y": 3})
    assert bytes(lines.lines) == (
        b'{"type":"RECORD","stream":"a","record":{"x":1}}\n'
        b'{"type":"RECORD","stream":"a","record":{"x":2}}\n'
        b'{"type":"RECORD","stream":"b","record":{"y":3}}\n'
    )
    assert lines.objects == []
    assert lines.counts == {a: 2, b: 1}
    assert lines.size == 3 * 48
    objects = Output(object_encoder)
    first, second = {"a": 1}, {"bb": [True]}
    objects.add(a, first)
    objects.add(b, second)
    assert objects.objects == [(a, first), (b, second)] and objects.objects[0][1] is first
    assert bytes(objects.lines) == b""
    assert objects.counts == {a: 1, b: 1}
    # Records kept as objects weigh four times their encoded size: b'{"a":1}\n' and b'{"bb":[true]}\n'.
    assert objects.size == 4 * (8 + 14)
    objects.finish()
    assert objects.size == 0  # the probe is dropped once checked
    assert objects.objects == [(a, first), (b, second)]


def test_output_passes_the_stream_then_the_record_to_its_encoder() -> None:
    seen: list[tuple] = []

    def encode(stream: t.Any, record: dict) -> bytes:
        seen.append((stream, record))
        return b"{}\n"

    stream, record = S("s"), {"k": 1}
    Output(encode).add(stream, record)
    assert seen == [(stream, record)] and seen[0][0] is stream


@pytest.mark.parametrize("encode", [line_encoder, object_encoder], ids=["lines", "objects"])
def test_output_accepts_one_hundred_levels_and_refuses_more(encode: t.Callable) -> None:
    stream = S("deep")
    out = Output(encode)
    out.add(stream, {"a": nest(99)})  # 100 levels: the record and 99 lists
    out.add(stream, {"a": [{"b": nest(97)}]})  # 100 levels, mixing objects and lists
    out.add(stream, {"wide": [[] for _ in range(150)], "more": [{} for _ in range(50)]})  # many brackets, 3 levels
    assert out.counts == {stream: 3}
    for record in ({"a": nest(100)}, {"a": [{"b": nest(98)}]}, {"a": nest(300)}):
        with pytest.raises(Unrepresentable) as raised:
            out.add(stream, record)
        assert str(raised.value) == "stream deep: a value is nested more than 100 levels deep"
    assert out.counts == {stream: 3}  # a refused record is not counted


@pytest.mark.parametrize("encode", [line_encoder, object_encoder], ids=["lines", "objects"])
def test_finish_refuses_an_integer_beyond_a_double(encode: t.Callable) -> None:
    for record, where in (
        ({"id": 1, "a": {"b": 10**400}}, "a.b"),
        ({"id": 1, "n": [7, -(9 * 10**330)]}, "n[]"),
        ({"id": 1, "n": int("9" * 400)}, "n"),
    ):
        out = Output(encode)
        out.add(S("ok"), {"id": 0, "n": FLOAT_MAX})
        out.add(S("bad"), record)
        with pytest.raises(Unrepresentable) as raised:
            out.finish()
        assert str(raised.value) == f"stream bad field {where}: a number outside the range of a float"


@pytest.mark.parametrize("encode", [line_encoder, object_encoder], ids=["lines", "objects"])
def test_finish_accepts_the_largest_double_and_long_digit_strings(encode: t.Callable) -> None:
    out = Output(encode)
    record = {"n": FLOAT_MAX, "m": -FLOAT_MAX, "s": "1" * 500, "f": 1.5e308}
    out.add(S("s"), record)
    out.finish()
    if encode is line_encoder:
        assert records_of(out.lines) == [{"type": "RECORD", "stream": "s", "record": record}]
    else:
        assert out.objects[0][1] == record


def test_finish_replaces_a_secret_in_lines_and_warns_once_per_stream_and_field(caplog) -> None:
    SECRETS.add("sk-live-0123456789")
    out = Output(line_encoder)
    stream = S("match_results")
    out.add(stream, {"id": 1, "note": "key sk-live-0123456789 echoed"})
    out.add(stream, {"id": 2, "note": "clean"})
    out.add(stream, {"id": 3, "note": "again sk-live-0123456789"})
    with caplog.at_level(logging.WARNING, logger="tap-jobresults"):
        out.finish()
    assert bytes(out.lines) == (
        b'{"type":"RECORD","stream":"match_results","record":{"id":1,"note":"key *** echoed"}}\n'
        b'{"type":"RECORD","stream":"match_results","record":{"id":2,"note":"clean"}}\n'
        b'{"type":"RECORD","stream":"match_results","record":{"id":3,"note":"again ***"}}\n'
    )
    assert warnings_of(caplog) == [
        "match_results: field note held a credential (a configured secret, an issued token or a credential key the "
        "vendor echoed); it was removed before writing (logged once per stream and field)"
    ]


def test_finish_drops_credential_keys_a_vendor_echoed_without_any_secret(caplog) -> None:
    out = Output(line_encoder)
    out.add(S("extraction_rows"), {"id": "r", "values": {"password": "p", "accessToken": "a"}, "jobToken": "j"})
    with caplog.at_level(logging.WARNING, logger="tap-jobresults"):
        out.finish()
    assert records_of(out.lines) == [
        {"type": "RECORD", "stream": "extraction_rows", "record": {"id": "r", "values": {"password": "p"}}}
    ]
    assert [m.split(" held ")[0] for m in warnings_of(caplog)] == [
        "extraction_rows: field jobToken",
        "extraction_rows: field values.accessToken",
    ]


def test_finish_scrubs_records_kept_as_objects_in_place(caplog) -> None:
    SECRETS.add("tok-abcdefgh")
    out = Output(object_encoder)
    stream = S("clavata_reports")
    record = {"id": 1, "content_metadata": {"token": "user", "idToken": "i"}, "t": "tok-abcdefgh", "apiKey": "k"}
    clean = {"id": 2, "v": "fine"}
    out.add(stream, record)
    out.add(stream, clean)
    with caplog.at_level(logging.WARNING, logger="tap-jobresults"):
        out.finish()
    assert out.objects[0] == (stream, {"id": 1, "content_metadata": {"token": "user"}, "t": "***"})
    assert out.objects[0][1] is record  # the very dict the SDK will write
    assert out.objects[1] == (stream, {"id": 2, "v": "fine"})
    assert [m.split(" held ")[0] for m in warnings_of(caplog)] == [
        "clavata_reports: field apiKey",
        "clavata_reports: field content_metadata.idToken",
        "clavata_reports: field t",
    ]


def test_finish_finds_a_secret_as_it_is_escaped_in_json() -> None:
    SECRETS.add('ab"c\\d-x')
    assert dict(guard._secret_needles()) == {
        'ab"c\\d-x': b'ab\\"c\\\\d-x',
        'ab"c\\\\d-x': b'ab\\"c\\\\\\\\d-x',  # the repr form, its backslash doubled, as JSON escapes it
    }
    out = Output(line_encoder)
    out.add(S("s"), {"v": 'pre ab"c\\d-x post'})
    out.finish()
    assert records_of(out.lines)[0]["record"] == {"v": "pre *** post"}


def test_finish_leaves_other_messages_alone_and_keeps_order() -> None:
    SECRETS.add("SECRET-abc")
    out = Output(line_encoder)
    out.add(S("s"), {"v": "SECRET-abc"})
    out.lines += b'{"type":"STATE","value":{"bookmarks":{}}}\n'
    out.add(S("s"), {"v": "ok"})
    out.finish()
    assert bytes(out.lines) == (
        b'{"type":"RECORD","stream":"s","record":{"v":"***"}}\n'
        b'{"type":"STATE","value":{"bookmarks":{}}}\n'
        b'{"type":"RECORD","stream":"s","record":{"v":"ok"}}\n'
    )


def test_a_clean_job_is_not_decoded_again(monkeypatch) -> None:
    """The byte pre-filter: a job with no secret, no credential-like key and no long number is not walked."""
    SECRETS.add("never-appears-123")
    calls: list[str] = []
    real_scrub, real_range = guard.scrub, guard.out_of_range
    monkeypatch.setattr(guard, "scrub", lambda *a, **k: calls.append("scrub") or real_scrub(*a, **k))
    monkeypatch.setattr(guard, "out_of_range", lambda *a, **k: calls.append("range") or real_range(*a, **k))
    for encode in (line_encoder, object_encoder):
        out = Output(encode)
        out.add(S("s"), {"id": 1, "tokens": 3, "keys": ["a"], "n": 10**300, "s": "x" * 400, "slash": "/" * 400})
        out.finish()
    assert calls == []
    out = Output(line_encoder)
    out.add(S("s"), {"digits": "7" * 309})  # may be a long number: checked, not scrubbed
    out.finish()
    assert calls == ["range"]
    calls.clear()
    out = Output(object_encoder)
    out.add(S("s"), {"a": "never-appears-123"})  # holds a secret: scrubbed, numbers not checked
    out.finish()
    assert calls and set(calls) == {"scrub"}
    calls.clear()
    out = Output(line_encoder)
    out.add(S("s"), {"Session_Token": None})  # a credential-like key: walked
    out.finish()
    assert calls and set(calls) == {"scrub"}


def test_only_two_characters_outside_ascii_lower_to_an_ascii_letter_or_digit() -> None:
    """The key pre-filter deletes every byte outside [a-z0-9"]; it may only do so because no other
    character's lower case holds one (key_name lower-cases first): checked over all of Unicode."""
    folding = [
        chr(cp)
        for cp in range(0x80, 0x110000)
        if not 0xD800 <= cp < 0xE000 and any("a" <= c <= "z" or "0" <= c <= "9" for c in chr(cp).lower())
    ]
    assert [char.encode() for char in folding] == sorted(guard._FOLDS_TO_ASCII)


NAMES = [*sorted(guard.CREDENTIAL_KEYS), "policykey", "tokenusage", "monkey", "keys", "apikeyid"]
SEPARATORS = st.text(alphabet=st.sampled_from(["-", "_", " ", ".", '"', "\\", "\n", "\x00", "\u00e9", "/"]), max_size=3)


@st.composite
def spelled_keys(draw: t.Callable) -> str:
    """A credential-like name as a vendor might spell a key with that key_name: any case, separators
    anywhere, characters that lower to its letters (KELVIN SIGN for k, I WITH DOT ABOVE for i)."""
    out = []
    for char in draw(st.sampled_from(NAMES)):
        out.append(draw(SEPARATORS))
        choices = [char, char.upper(), *(["\u212a"] if char == "k" else []), *(["\u0130"] if char == "i" else [])]
        out.append(draw(st.sampled_from(choices)))
    out.append(draw(SEPARATORS))
    return "".join(out)


KEYS = st.one_of(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=6), spelled_keys())
KEYED_RECORDS = st.dictionaries(
    KEYS,
    st.recursive(
        st.one_of(st.none(), st.integers(), st.text(max_size=5), st.sampled_from(NAMES)),
        lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=3)),
        max_leaves=12,
    ),
    max_size=4,
)


ENCODERS = {
    "msgspec": lambda record: guard._encoder.encode({"type": "RECORD", "stream": "s", "record": record}) + b"\n",
    "json ascii": lambda record: compact({"type": "RECORD", "stream": "s", "record": record}) + b"\n",
    "json utf-8": lambda record: json.dumps({"record": record}, ensure_ascii=False).encode() + b"\n",
}


@settings(max_examples=400, derandomize=True, deadline=None)
@given(KEYED_RECORDS, st.sampled_from(sorted(ENCODERS)))
def test_the_key_pre_filter_misses_no_key_the_scrub_would_drop(record: dict, encoder: str) -> None:
    """Clean by the pre-filter implies clean by the walk, however the key is spelled or encoded."""
    found: set[str] = set()
    guard.scrub(record, (), "", found)
    if found:
        assert guard.may_hold_credential_key(ENCODERS[encoder](record)), record


@pytest.mark.parametrize("key", ["policyKey", "tokenUsage", "monkey", "keys", "apiKeyId", "secretary", "TOKENS"])
def test_vendor_keys_that_only_end_like_a_credential_are_not_suspect(key: str) -> None:
    """Clavata's report has policyKey (clavataai/gosdk), tokenUsage: such jobs are not decoded again, whatever
    else they hold (text outside ASCII, escapes; an encoder that escapes every non-ASCII character as \\uXXXX
    is judged conservatively, msgspec's output and UTF-8 JSON exactly)."""
    for name, encode in ENCODERS.items():
        assert not guard.may_hold_credential_key(encode({key: "v", "nested": [{key: {"k": 1}}]}))
        if name != "json ascii":
            assert not guard.may_hold_credential_key(encode({key: 'Zoë été \\ "q"\n\x01', "größe": 1}))


@pytest.mark.parametrize(
    "key",
    ["token", "Job-Token", "job_token_", "X-API-KEY ", "a\nuthorization", "PASS-WORD", "ap\u0130key", "jobto\u212aen"],
)
def test_credential_keys_under_any_spelling_are_suspect(key: str) -> None:
    for encode in ENCODERS.values():
        assert guard.may_hold_credential_key(encode({"deep": [{key: "v"}]}))


def _first_windows(windows: t.Iterator[bytes | bytearray], limit: int = 100) -> list[bytes | bytearray]:
    """At most `limit` windows: a windowing that never ends (or goes back) fails the test, not hangs it."""
    return list(itertools.islice(windows, limit))


def test_windows_are_whole_lines_of_about_a_window_each() -> None:
    line = b"x" * 1000 + b"\n"
    buffer = bytearray(line * 3000)  # 3,003,000 bytes
    parts = _first_windows(guard.windows(buffer))
    assert b"".join(parts) == buffer
    assert all(part.endswith(b"\n") for part in parts)
    assert [len(part) for part in parts[:-1]] == [1048 * 1001] * (len(parts) - 1)  # 1 MiB, rounded up to whole lines
    exact = b"y" * 1023 + b"\n"  # 1,024 of these fill a window exactly: its last byte is a line's end
    assert [len(part) for part in _first_windows(guard.windows(bytearray(exact * 2049)))] == [WINDOW, WINDOW, 1024]
    long_line = b"y" * (3 * WINDOW) + b"\n"
    assert _first_windows(guard.windows(bytearray(line + long_line + line))) == [line + long_line, line]
    assert _first_windows(guard.windows(bytearray())) == []
    assert _first_windows(guard.windows(bytearray(b"no newline"))) == [b"no newline"]


def padded_job(needle_text: str, needle_at: int) -> Output:
    """A job over one window long whose second record holds `needle_text` starting at byte `needle_at`."""
    out = Output(line_encoder)
    head = b'{"type":"RECORD","stream":"s","record":{"pad":"'
    tail = b'"}}\n'
    second_prefix = b'{"type":"RECORD","stream":"s","record":{"v":"'
    pad = needle_at - len(head) - len(tail) - len(second_prefix)
    out.add(S("s"), {"pad": "x" * pad})
    out.add(S("s"), {"v": needle_text})
    assert bytes(out.lines).index(needle_text.encode()) == needle_at
    return out


def test_a_secret_across_the_window_boundary_is_found() -> None:
    SECRETS.add("0123456789abcdef")
    out = padded_job("0123456789abcdef", WINDOW - 8)
    out.finish()
    assert records_of(out.lines)[1]["record"] == {"v": "***"}


def test_a_long_number_across_the_window_boundary_is_found() -> None:
    out = Output(line_encoder)
    head = b'{"type":"RECORD","stream":"s","record":{"pad":"'
    tail = b'"}}\n'
    second_prefix = b'{"type":"RECORD","stream":"s","record":{"n":'
    out.add(S("s"), {"pad": "x" * (WINDOW - 200 - len(head) - len(tail) - len(second_prefix))})
    out.add(S("s"), {"n": 10**399})
    assert bytes(out.lines).index(b"1" + b"0" * 399) == WINDOW - 200
    with pytest.raises(Unrepresentable, match="field n:"):
        out.finish()


def test_a_secret_at_the_very_start_of_a_job_is_found() -> None:
    SECRETS.add("abcd-efgh")
    out = Output(object_encoder)
    record = {"abcd-efgh": 1}
    out.add(S("s"), record)
    out.finish()
    assert record == {"***": 1}


def test_warn_logs_each_stream_and_field_once_in_field_order(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tap-jobresults"):
        guard._warn("s1", {"b", "a"})
        guard._warn("s1", {"a", "c"})
        guard._warn("s2", ["a"])
    assert [m.split(" held ")[0] for m in warnings_of(caplog)] == [
        "s1: field a",
        "s1: field b",
        "s1: field c",
        "s2: field a",
    ]
    assert guard._warned == {("s1", "a"), ("s1", "b"), ("s1", "c"), ("s2", "a")}


def test_now_iso_is_the_current_utc_time() -> None:
    before = datetime.now(timezone.utc)
    stamp = guard.now_iso()
    after = datetime.now(timezone.utc)
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset().total_seconds() == 0 and stamp.endswith("+00:00")
    assert before <= parsed <= after


# -- scrub: SecretRegistry -------------------------------------------------------------------------


def test_registry_adds_a_secret_and_its_trimmed_repr_and_escaped_forms() -> None:
    registry = SecretRegistry()
    registry.add("  abcd  ")
    registry.add("ab\\cd")
    registry.add("tab\there")
    assert set(registry._ordered) == {
        "  abcd  ",
        "abcd",
        "ab\\cd",
        "ab\\\\cd",  # the repr form: the backslash doubled
        "tab\there",
        "tab\\there",  # as repr and escape() render it
    }
    assert [len(s) for s in registry._ordered] == sorted((len(s) for s in registry._ordered), reverse=True)
    assert registry.scrub("x abcd y") == "x *** y"
    assert registry.scrub("log: 'ab\\\\cd'") == "log: '***'"
    assert registry.scrub("[  abcd  ]") == "[***]"
    assert registry.scrub("tab\\there") == "***"


def test_registry_ignores_short_values_and_non_strings() -> None:
    registry = SecretRegistry()
    for value in ("abc", "ab\n", "", None, 12345678, ["abcdef"], b"bytes-secret"):
        registry.add(value)
    registry.add("   xyz   ")  # long enough, but trimmed it is three characters: only the padded form
    assert registry._ordered == ("   xyz   ",)
    assert registry.scrub("abc 12345678 xyz bytes-secret") == "abc 12345678 xyz bytes-secret"
    registry.add("wxyz")
    assert registry.scrub("wxyz") == "***"
    assert "a wxyz b" in registry and "wxy" not in registry


def test_registry_replaces_the_longest_secret_first() -> None:
    registry = SecretRegistry()
    registry.add("abcd")
    registry.add("abcdXYZ")
    assert registry.scrub("abcdXYZ and abcd") == "*** and ***"
    assert registry.scrub("nothing") == "nothing"


def test_registry_clear_forgets_every_secret() -> None:
    registry = SecretRegistry()
    registry.add("first-secret")
    assert "the first-secret" in registry
    registry.clear()
    assert "the first-secret" not in registry
    assert registry.scrub("first-secret") == "first-secret"
    registry.add("second-secret")
    assert registry.scrub("first-secret second-secret") == "first-secret ***"


# -- scrub: escaping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x01\x1b[31m\x1f", "\\x00\\x01\\x1b[31m\\x1f"),
        ("\x7f\x80\x9b\x9f\xa0é", "\\x7f\\x80\\x9b\\x9f\xa0é"),
        ("\u2028\u2029\u200e\u200f", "\\u2028\\u2029\\u200e\\u200f"),
        ("\u202a\u202e\u2066\u2069\u202f", "\\u202a\\u202e\\u2066\\u2069\u202f"),
    ],
)
def test_escape_renders_control_characters_as_escapes(text: str, expected: str) -> None:
    assert scrub.escape(text) == expected


def test_escape_template_keeps_newlines_only() -> None:
    assert scrub._escape_template("a\nb\rc\td\x1b\u202e") == "a\nb\\rc\\td\\x1b\\u202e"


def escape_oracle(char: str) -> str:
    code = ord(char)
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"\\x{code:02x}"
    if code in (0x2028, 0x2029, 0x200E, 0x200F) or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return f"\\u{code:04x}"
    return char


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x206F), max_size=20))
def test_escape_matches_a_per_character_oracle(text: str) -> None:
    assert scrub.escape(text) == "".join(escape_oracle(c) for c in text)


class Shouty:
    def __str__(self) -> str:
        return "str\x1bvalue"

    def __repr__(self) -> str:
        return "repr\nvalue"


def test_printable_arguments_render_escaped_with_s_and_r() -> None:
    arg = scrub._printable(Shouty())
    assert str(arg) == "str\\x1bvalue"
    assert repr(arg) == "repr\\nvalue"
    rendered = "%s|%r" % (arg, arg)  # noqa: UP031 (how logging renders its arguments)
    assert rendered == "str\\x1bvalue|repr\\nvalue"
    assert str(scrub._printable("a\nb")) == "a\\nb"


@pytest.mark.parametrize("value", [None, True, False, 0, 7, 2.5])
def test_numbers_and_none_stay_themselves_as_log_arguments(value: t.Any) -> None:
    assert scrub._printable(value) is value


# -- scrub: URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@api.example.com:8443/v1/jobs?key=abc#frag", "https://api.example.com:8443/v1/jobs"),
        ("http://example.com/path", "http://example.com/path"),
        ("https://Example.COM", "https://example.com"),
        ("http://[::1]:8080/x?y", "http://[::1]:8080/x"),
        ("http://[::1]/x", "http://[::1]/x"),
        ("http://:80/x", "http://?:80/x"),
        ("http://example.com:99999/", "<an invalid URL>"),
        ("http://[::1/x", "<an invalid URL>"),
        ("example.com/path?q=1#f", "example.com/path"),
        ("/only/a/path#frag?x", "/only/a/path"),
        ("a?b?c", "a"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
        ("//example.com/p?q", "//example.com/p"),
    ],
)
def test_safe_url_keeps_scheme_host_port_and_path_only(url: str, expected: str) -> None:
    assert scrub.safe_url(url) == expected


def test_safe_url_clips_at_two_hundred_characters() -> None:
    assert scrub.safe_url("p" * 200) == "p" * 200
    assert scrub.safe_url("p" * 201) == "p" * 200 + "..."
    base = "https://h.io/"  # 13 characters
    assert scrub.safe_url(base + "a" * 187) == base + "a" * 187
    assert scrub.safe_url(base + "a" * 188) == base + "a" * 187 + "..."


def test_safe_url_scrubs_secrets_before_clipping() -> None:
    SECRETS.add("topsecretvalue")
    assert scrub.safe_url("https://h.io/topsecretvalue/x") == "https://h.io/***/x"
    assert scrub.clip("ab-topsecretvalue", 6) == "ab-***"
    assert scrub.clip("abcdef", 6) == "abcdef"
    assert scrub.clip("abcdefg", 6) == "abcdef..."


# -- scrub: log records ----------------------------------------------------------------------------


def make_record(msg: t.Any, args: t.Any = (), exc_info: t.Any = None, name: str = "x") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, exc_info)


def test_clean_record_escapes_arguments_keeps_template_newlines_and_scrubs() -> None:
    SECRETS.add("hunter2hunter2")
    record = make_record("summary:\n- %s\n- %r %d%%", ("vendor\ntext hunter2hunter2", "x\x1b", 5))
    scrub.clean_record(record)
    assert record.msg == "summary:\n- vendor\\ntext ***\n- 'x\\x1b' 5%"
    assert record.args is None
    assert record.tap_jobresults_clean is True
    assert record.getMessage() == record.msg


def test_clean_record_with_mapping_arguments() -> None:
    record = make_record("%(a)s-%(b)d", ({"a": "x\ny", "b": 3},))
    assert isinstance(record.args, dict)
    scrub.clean_record(record)
    assert (record.msg, record.args) == ("x\\ny-3", None)


def test_clean_record_without_arguments_keeps_a_percent_sign() -> None:
    record = make_record("100% done\n\x1b")
    scrub.clean_record(record)
    assert (record.msg, record.args) == ("100% done\n\\x1b", None)


def test_clean_record_renders_a_message_that_is_not_a_string() -> None:
    record = make_record(ValueError("bad\nthing"))
    scrub.clean_record(record)
    assert (record.msg, record.args) == ("bad\\nthing", None)


def test_clean_record_leaves_a_malformed_call_to_logging() -> None:
    record = make_record("%d items", ("many",))
    scrub.clean_record(record)
    assert (record.msg, record.args) == ("%d items", ("many",))
    assert record.tap_jobresults_clean is True


def test_clean_record_runs_once_per_record() -> None:
    record = make_record("a %s", ("\x1b",))
    record.tap_jobresults_clean = True
    scrub.clean_record(record)
    assert (record.msg, record.args) == ("a %s", ("\x1b",))


def test_clean_record_renders_an_exception_escaped_and_scrubbed() -> None:
    SECRETS.add("key-0123456789")
    error = ValueError("bad\nline key-0123456789")
    record = make_record("failed", exc_info=(ValueError, error, None))
    scrub.clean_record(record)
    assert record.exc_text == "ValueError: bad\\nline ***"
    assert record.exc_info is None
    assert record.msg == "failed"


def test_clean_record_renders_a_raised_exception_with_its_traceback() -> None:
    try:
        raise RuntimeError("x\x1by")
    except RuntimeError:
        record = make_record("failed", exc_info=sys.exc_info())
    scrub.clean_record(record)
    assert record.exc_text.startswith("Traceback (most recent call last):\n")
    assert record.exc_text.endswith("\nRuntimeError: x\\x1by")
    assert record.exc_info is None


def test_clean_record_without_an_exception_keeps_exc_info() -> None:
    record = make_record("no error", exc_info=(None, None, None))
    scrub.clean_record(record)
    assert record.exc_info == (None, None, None)
    assert record.exc_text is None


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_clean_record_names_an_exception_it_cannot_render() -> None:
    record = make_record("failed", exc_info=(Unprintable, Unprintable(), None))
    scrub.clean_record(record)
    assert record.exc_text == "Unprintable (traceback not rendered)"
    assert record.exc_info is None


def test_one_line_messages_escapes_each_message_of_a_chain() -> None:
    root = KeyError("root")
    cause = OSError("cause\x1b[2J")
    cause.__context__ = root
    error = ValueError("top\nmessage")
    error.__cause__ = cause
    text = "top\nmessage | cause\x1b[2J | root | plain\nline"
    assert scrub._one_line_messages(text, error) == "top\\nmessage | cause\\x1b[2J | root | plain\nline"


def test_one_line_messages_stops_at_a_cycle() -> None:
    a, b = ValueError("a\ra"), ValueError("b\rb")
    a.__context__, b.__context__ = b, a
    assert scrub._one_line_messages("a\ra b\rb", a) == "a\\ra b\\rb"


def test_one_line_messages_walks_at_most_twenty_exceptions() -> None:
    chain = [ValueError(f"<{i:02d}>\n") for i in range(25)]
    for outer, inner in itertools.pairwise(chain):
        outer.__cause__ = inner
    text = "".join(f"<{i:02d}>\n" for i in range(25))
    expected = "".join(f"<{i:02d}>\\n" for i in range(20)) + "".join(f"<{i:02d}>\n" for i in range(20, 25))
    assert scrub._one_line_messages(text, chain[0]) == expected


def test_one_line_messages_of_an_empty_message() -> None:
    assert scrub._one_line_messages("Err\n", ValueError("")) == "Err\n"


def metric_record(point: t.Any, msg: str = "METRIC: %s") -> logging.LogRecord:
    return make_record(msg, (point,), name="singer_sdk.metrics")


def test_a_metric_line_is_left_as_the_sdk_made_it() -> None:
    point = Point("counter", Metric.RECORD_COUNT, 5, {"stream": "s\n"})
    record = metric_record(point)
    scrub.clean_record(record)
    assert record.msg == "METRIC: %s" and record.args == (point,)
    assert (
        record.getMessage() == 'METRIC: {"type":"counter","metric":"record_count","value":5,"tags":{"stream":"s\\n"}}'
    )


def test_a_metric_line_holding_a_secret_is_cleaned() -> None:
    SECRETS.add("jobs-secret-1")
    record = metric_record(Point("counter", Metric.RECORD_COUNT, 5, {"url": "jobs-secret-1"}))
    scrub.clean_record(record)
    assert record.args is None
    assert record.msg == 'METRIC: {"type":"counter","metric":"record_count","value":5,"tags":{"url":"***"}}'


@pytest.mark.parametrize(
    "record",
    [
        make_record("METRIC: %s", ("not\na point",)),
        make_record("metric %s", (Point("counter", Metric.RECORD_COUNT, 1, {}),)),
        make_record("METRIC: %s", (Point("counter", Metric.RECORD_COUNT, 1, {}), "\n")),
        make_record("METRIC: %s", ({"a": "x\ny"},)),
    ],
    ids=["not-a-point", "other-template", "two-args", "mapping"],
)
def test_is_metric_only_for_the_sdk_template_with_one_point(record: logging.LogRecord) -> None:
    assert scrub._is_metric(record) is False


def test_is_metric_for_a_point() -> None:
    assert scrub._is_metric(metric_record(Point("counter", Metric.RECORD_COUNT, 1, {}))) is True


def test_a_metric_like_line_with_another_argument_is_cleaned() -> None:
    record = make_record("METRIC: %s", ("not\na point",))
    scrub.clean_record(record)
    assert (record.msg, record.args) == ("METRIC: not\\na point", None)


class Point2:
    """A Point (by name) whose text cannot be rendered the first time."""

    def __init__(self) -> None:
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("not yet")
        return "rendered\x1b"


Point2.__name__ = "Point"


def test_a_point_that_cannot_be_rendered_is_not_taken_for_a_metric() -> None:
    point = Point2()
    record = metric_record(point)
    assert scrub._is_metric(metric_record(Point2())) is False
    scrub.clean_record(record)
    assert (record.msg, record.args) == ("METRIC: rendered\\x1b", None)


def test_scrub_secrets_filter_cleans_and_keeps_every_record() -> None:
    SECRETS.add("filter-secret")
    record = make_record("v=%s", ("filter-secret\n",))
    assert scrub.ScrubSecretsFilter().filter(record) is True
    assert (record.msg, record.args) == ("v=***\\n", None)


@pytest.fixture
def logging_state() -> t.Iterator[None]:
    """install_scrubbing changes process-wide logging: the record factory and filters, put back after."""
    factory = logging.getLogRecordFactory()
    loggers = [logging.getLogger()] + [
        node for node in logging.Logger.manager.loggerDict.values() if isinstance(node, logging.Logger)
    ]
    loggers += [logging.getLogger(name) for name in scrub.SCRUBBED_LOGGERS]
    saved = {id(log): (log, list(log.filters)) for log in loggers}
    handlers = {id(h): (h, list(h.filters)) for log in loggers for h in log.handlers}
    logging.setLogRecordFactory(logging.LogRecord)
    yield
    logging.setLogRecordFactory(factory)
    for log, filters in saved.values():
        log.filters[:] = filters
    for handler, filters in handlers.values():
        handler.filters[:] = filters
    for node in logging.Logger.manager.loggerDict.values():
        if isinstance(node, logging.Logger) and id(node) not in saved:
            node.filters[:] = [f for f in node.filters if not isinstance(f, scrub.ScrubSecretsFilter)]


def scrub_filters(target: logging.Filterer) -> int:
    return sum(isinstance(f, scrub.ScrubSecretsFilter) for f in target.filters)


def test_install_scrubbing_cleans_records_of_every_logger_once(logging_state) -> None:
    SECRETS.add("install-secret")
    handler = logging.NullHandler()
    sdk_logger = logging.getLogger("singer_sdk")
    sdk_logger.addHandler(handler)
    child = logging.getLogger("tap-jobresults.test_guard_scrub_child")
    sdk_child = logging.getLogger("singer_sdk.test_guard_scrub_child")
    other = logging.getLogger("other_lib.test_guard_scrub")
    try:
        scrub.install_scrubbing()
        factory = logging.getLogRecordFactory()
        assert factory is not logging.LogRecord and factory.scrubs_secrets is True
        scrub.install_scrubbing()
        assert logging.getLogRecordFactory() is factory  # not wrapped twice
        record = other.makeRecord("other_lib", logging.INFO, __file__, 1, "v=%s", ("install-secret\x1b",), None)
        assert isinstance(record, logging.LogRecord)
        assert (record.msg, record.args, record.tap_jobresults_clean) == ("v=***\\x1b", None, True)
        for name in scrub.SCRUBBED_LOGGERS:
            assert scrub_filters(logging.getLogger(name)) == 1, name
        assert scrub_filters(handler) == 1
        assert scrub_filters(child) == 1 and scrub_filters(sdk_child) == 1
        assert scrub_filters(other) == 0
    finally:
        sdk_logger.removeHandler(handler)


def test_install_scrubbing_wraps_the_factory_in_place(logging_state) -> None:
    made: list[logging.LogRecord] = []

    def custom(*args: t.Any, **kwargs: t.Any) -> logging.LogRecord:
        record = logging.LogRecord(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(custom)
    scrub.install_scrubbing()
    record = logging.getLogger("zzz").makeRecord("zzz", logging.INFO, __file__, 1, "%s", ("a\nb",), None)
    assert made == [record] and record.msg == "a\\nb"


# -- sdk_hooks, with streams reduced to what the hooks use ------------------------------------------


class FakeCounter:
    def __init__(self) -> None:
        self.calls: list[t.Any] = []

    def __enter__(self) -> FakeCounter:
        self.calls.append("enter")
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.calls.append(("exit", exc))

    def increment(self, value: int = 1) -> None:
        self.calls.append(("increment", value))


class FakeWriter:
    def __init__(self) -> None:
        self.calls: list[t.Any] = []

    def write_records(self, stream: str, records: t.Iterable[dict]) -> int:
        records = list(records)
        self.calls.append(("write_records", stream, records))
        return len(records)

    def write_lines(self, lines: bytes) -> None:
        self.calls.append(("write_lines", bytes(lines)))

    def flush(self) -> None:
        self.calls.append("flush")


class PlainWriter:
    """A writer without the fast entry points (the SDK's own)."""


class StateManager:
    is_flushed = True


class FakeStream:
    def __init__(self, name: str = "s", maps: list | None = None, mask: dict | None = None, writer: t.Any = None):
        self.name = name
        self.stream_maps = maps if maps is not None else [SameRecordTransform(name, {"properties": {}}, None, None)]
        self.mask = mask if mask is not None else {(): True, ("properties", "a"): True}
        self._tap = type("Tap", (), {})()
        self._tap.message_writer = writer if writer is not None else FakeWriter()
        self.state_manager = StateManager()
        self.counters: list[FakeCounter] = []
        self.calls: list[t.Any] = []
        self.ABORT_AT_RECORD_COUNT = None

    def get_record_counter(self) -> FakeCounter:
        counter = FakeCounter()
        self.counters.append(counter)
        return counter

    def _write_schema_message(self) -> None:
        self.calls.append("schema")

    def _write_record_message(self, record: dict) -> None:
        self.calls.append(("record", record))

    def _write_state_message(self) -> None:
        self.calls.append(("state", self.state_manager.is_flushed))

    def _generate_record_messages(self, record: dict) -> t.Iterator[RecordMessage]:
        yield RecordMessage(stream=self.name, record={"mapped": record["a"]})
        yield RecordMessage(stream=f"{self.name}_copy", record={"n": 2})


class Flattening(SameRecordTransform):
    flattening_enabled = True


def same(name: str = "s") -> SameRecordTransform:
    return SameRecordTransform(name, {"properties": {}}, None, None)


def test_is_dry_run_when_the_sdk_caps_records() -> None:
    stream = FakeStream()
    assert sdk_hooks.is_dry_run(stream) is False
    stream.ABORT_AT_RECORD_COUNT = 0
    assert sdk_hooks.is_dry_run(stream) is True
    stream.ABORT_AT_RECORD_COUNT = 1
    assert sdk_hooks.is_dry_run(stream) is True


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (FakeStream(), True),
        (FakeStream(maps=[same(), same()]), False),
        (FakeStream(maps=[]), False),
        (FakeStream(maps=[object()]), False),
        (FakeStream(maps=[Flattening("s", {"properties": {}}, None, None)]), False),
        (FakeStream(mask={(): True, ("properties", "a"): False}), False),
    ],
    ids=["identity", "two-maps", "no-map", "other-map", "flattening", "deselected"],
)
def test_untransformed(stream: FakeStream, expected: bool) -> None:
    assert sdk_hooks.untransformed(stream) is expected


def test_write_schema() -> None:
    stream = FakeStream()
    sdk_hooks.write_schema(stream)
    assert stream.calls == ["schema"]


def test_write_records_fast_path_counts_with_one_counter_per_stream() -> None:
    stream = FakeStream()
    writer = stream._tap.message_writer
    assert sdk_hooks.write_records(stream, iter([{"a": 1}, {"a": 2}])) == 2
    assert sdk_hooks.write_records(stream, [{"a": 3}]) == 1
    assert stream.calls == ["schema", "schema"]  # the stream sends its SCHEMA once itself
    assert writer.calls == [("write_records", "s", [{"a": 1}, {"a": 2}]), ("write_records", "s", [{"a": 3}])]
    (counter,) = stream.counters
    assert counter.calls == ["enter", ("increment", 2), ("increment", 1)]
    sdk_hooks.count_records(stream, 4)
    assert stream.counters == [counter]
    sdk_hooks.close_counters()
    sdk_hooks.close_counters()
    assert counter.calls == [
        "enter",
        ("increment", 2),
        ("increment", 1),
        ("increment", 4),
        ("exit", (None, None, None)),
    ]
    assert sdk_hooks.write_records(stream, []) == 0  # after closing, a new counter
    assert len(stream.counters) == 2 and stream.counters[1].calls == ["enter", ("increment", 0)]


@pytest.mark.parametrize(
    "stream",
    [FakeStream(maps=[same(), same()]), FakeStream(writer=PlainWriter())],
    ids=["transformed", "sdk-writer"],
)
def test_write_records_slow_path_takes_the_sdk_record_path(stream: FakeStream) -> None:
    records = [{"a": 1}, {"a": 2}, {"a": 3}]
    assert sdk_hooks.write_records(stream, iter(records)) == 3
    assert stream.calls == ["schema", ("record", {"a": 1}), ("record", {"a": 2}), ("record", {"a": 3})]
    if isinstance(stream._tap.message_writer, FakeWriter):
        assert stream._tap.message_writer.calls == []
    (counter,) = stream.counters
    assert counter.calls == ["enter", ("increment", 3)]
    assert sdk_hooks.is_fast(stream) is False


def test_is_fast_only_untransformed_with_a_writer_that_writes_records() -> None:
    # All three alive at once: the decision is cached by id(stream), and a freed stream's id is reused.
    streams = [FakeStream(), FakeStream(maps=[same(), same()]), FakeStream(writer=PlainWriter())]
    assert [sdk_hooks.is_fast(stream) for stream in streams] == [True, False, False]


def test_the_fast_decision_is_made_once_per_stream() -> None:
    stream = FakeStream()
    assert sdk_hooks.is_fast(stream) is True
    stream.stream_maps = [same(), same()]
    assert sdk_hooks.is_fast(stream) is True
    assert sdk_hooks.write_one_fast(stream, {"a": 1}) is True
    other = FakeStream(maps=[same(), same()])
    assert sdk_hooks.write_one_fast(other, {"a": 1}) is False
    other.stream_maps = [same()]
    assert sdk_hooks.write_records(other, [{"a": 2}]) == 1
    assert other.calls == ["schema", ("record", {"a": 2})]


def test_count_records_enters_a_counter_once() -> None:
    stream = FakeStream()
    sdk_hooks.count_records(stream, 5)
    sdk_hooks.count_records(stream, 3)
    (counter,) = stream.counters
    assert counter.calls == ["enter", ("increment", 5), ("increment", 3)]
    sdk_hooks.close_counters()
    assert counter.calls[-1] == ("exit", (None, None, None))


def test_record_encoder_fast_path_encodes_the_sdk_envelope() -> None:
    stream = FakeStream(name="rows")
    encoder = sdk_hooks.RecordEncoder()
    extracted = encoder.extracted
    assert datetime.fromisoformat(extracted).utcoffset().total_seconds() == 0
    first = encoder(stream, {"a": 1, "long": "x" * 300})
    second = encoder(stream, {"b": [True, None]})
    assert first == (
        b'{"type":"RECORD","stream":"rows","record":{"a":1,"long":"'
        + b"x" * 300
        + b'"},"time_extracted":"'
        + extracted.encode()
        + b'"}\n'
    )
    assert (
        second
        == b'{"type":"RECORD","stream":"rows","record":{"b":[true,null]},"time_extracted":"'
        + extracted.encode()
        + b'"}\n'
    )
    assert isinstance(second, bytes)


def test_record_encoder_slow_path_encodes_what_the_sdk_record_path_makes() -> None:
    stream = FakeStream(name="rows", maps=[same(), same()])
    out = sdk_hooks.RecordEncoder()(stream, {"a": 7})
    assert out == (
        b'{"type":"RECORD","stream":"rows","record":{"mapped":7}}\n'
        b'{"type":"RECORD","stream":"rows_copy","record":{"n":2}}\n'
    )


def test_write_lines_writes_and_marks_state_unflushed() -> None:
    stream = FakeStream()
    sdk_hooks.write_lines(stream, b"")
    assert stream._tap.message_writer.calls == [] and stream.state_manager.is_flushed is True
    sdk_hooks.write_lines(stream, bytearray(b"line\n"))
    assert stream._tap.message_writer.calls == [("write_lines", b"line\n")]
    assert stream.state_manager.is_flushed is False


def test_write_one_fast() -> None:
    stream = FakeStream()
    record = {"a": 1}
    assert sdk_hooks.write_one_fast(stream, record) is True
    assert stream._tap.message_writer.calls == [("write_records", "s", [record])]
    assert stream.state_manager.is_flushed is False
    slow = FakeStream(maps=[same(), same()])
    assert sdk_hooks.write_one_fast(slow, record) is False
    assert slow._tap.message_writer.calls == [] and slow.state_manager.is_flushed is True


def test_message_writer_is_the_taps() -> None:
    writer = FakeWriter()
    assert sdk_hooks.message_writer(FakeStream(writer=writer)) is writer


def test_state_helpers() -> None:
    stream = FakeStream()
    sdk_hooks.write_state_now(stream)
    assert stream.calls == [("state", False)]
    stream.state_manager.is_flushed = False
    sdk_hooks.mark_state_flushed(stream)
    assert stream.state_manager.is_flushed is True


def test_flush_output_flushes_a_writer_that_can() -> None:
    stream = FakeStream()
    sdk_hooks.flush_output(stream)
    assert stream._tap.message_writer.calls == ["flush"]
    sdk_hooks.flush_output(FakeStream(writer=PlainWriter()))  # nothing to flush: no error


def test_write_tap_state() -> None:
    written: list[t.Any] = []
    tap = type("Tap", (), {})()
    tap.state = {"bookmarks": {"a": 1}}
    tap.state_writer = type("W", (), {"write_state": staticmethod(written.append)})()
    sdk_hooks.write_tap_state(tap)
    assert written == [{"bookmarks": {"a": 1}}] and written[0] is tap.state


def test_config_schema_errors_validate_with_the_builtin_settings_appended() -> None:
    class Tap:
        def __init__(self) -> None:
            self.config_jsonschema = {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": False,
            }
            self._config = {"a": 1, "stream_maps": {}}

        @staticmethod
        def append_builtin_config(schema: dict) -> None:
            schema["properties"]["stream_maps"] = {"type": "object"}

    errors = sdk_hooks.config_schema_errors(Tap())
    assert [(list(e.absolute_path), e.validator) for e in errors] == [(["a"], "type")]


# -- writer ------------------------------------------------------------------------------------------


class FakeBuffer:
    def __init__(self, writer: t.Any = None, fail: type[Exception] | None = None) -> None:
        self.writes: list[bytes] = []
        self.flushes = 0
        self.busy_seen: list[bool] = []
        self.writer = writer
        self.fail = fail
        self.signal_during_write: int | None = None

    def write(self, data: bytes) -> None:
        if self.fail:
            raise self.fail("closed")
        self.writes.append(bytes(data))
        if self.writer is not None:
            self.busy_seen.append(self.writer.busy)
            if self.signal_during_write is not None:
                self.writer.pending_signal = self.signal_during_write
                self.writer._after_busy()  # a handler running now must wait

    def flush(self) -> None:
        self.flushes += 1
        if self.writer is not None:
            self.busy_seen.append(self.writer.busy)


class FixedDatetime:
    @staticmethod
    def now(tz: t.Any) -> datetime:
        return datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=tz)


def fake_sys(buffer: FakeBuffer) -> t.Any:
    """The writer's view of `sys`: a stdout whose buffer records what reaches it."""
    return type("Sys", (), {"stdout": type("Stdout", (), {"buffer": buffer})()})()


@pytest.fixture
def out(monkeypatch) -> t.Iterator[tuple[writer_module.SingerWriter, FakeBuffer]]:
    registered: list[t.Any] = []
    monkeypatch.setattr(writer_module.atexit, "register", registered.append)
    monkeypatch.setattr(writer_module, "datetime", FixedDatetime)
    w = writer_module.SingerWriter()
    assert registered == [w._flush_at_exit]
    buffer = FakeBuffer(w)
    monkeypatch.setattr(writer_module, "sys", fake_sys(buffer))
    yield w, buffer
    w._out.clear()


RECORD_LINE = b'{"type":"RECORD","stream":"s","record":{"a":1},"time_extracted":"2025-01-02T03:04:05.678901+00:00"}\n'


def test_writer_starts_empty_and_idle(out) -> None:
    w, buffer = out
    assert writer_module.SingerWriter.BLOCK == 65536
    assert (w.record_bytes_since_state, w.last_state_bytes, w.busy, w.pending_signal, w.on_signal) == (
        0,
        0,
        False,
        None,
        None,
    )
    assert buffer.writes == []


def test_write_records_encodes_records_as_the_sdk_would(out) -> None:
    w, buffer = out
    assert len(RECORD_LINE) == 100
    assert w.write_records("s", iter([{"a": 1}, {"a": 1}])) == 2
    assert w.write_records("s", []) == 0
    assert buffer.writes == [] and w.record_bytes_since_state == 200
    w.flush()
    assert buffer.writes == [RECORD_LINE * 2] and buffer.flushes == 1


def test_write_message_writes_state_after_the_records_and_flushes(out) -> None:
    w, buffer = out
    record = RecordMessage(stream="s", record={"a": 1})
    line = w.format_message(record)
    assert json.loads(line) == {"type": "RECORD", "stream": "s", "record": {"a": 1}}
    w.write_message(record)
    w.write_lines(b"raw\n")
    assert buffer.writes == [] and w.record_bytes_since_state == len(line) + 4
    w.write_message(StateMessage(value={"bookmarks": {"x": 1}}))
    state = b'{"type":"STATE","value":{"bookmarks":{"x":1}}}\n'
    assert buffer.writes == [bytes(line) + b"raw\n" + state] and buffer.flushes == 1
    assert (w.last_state_bytes, w.record_bytes_since_state) == (len(state), 0)
    w.write_message(StateMessage(value={}))
    assert buffer.writes[1:] == [b'{"type":"STATE","value":{}}\n'] and w.last_state_bytes == 28


@pytest.mark.parametrize("how", ["lines", "records", "message"])
def test_the_writer_drains_at_exactly_one_block(out, how) -> None:
    w, buffer = out
    if how == "lines":
        last = b"y\n"
    elif how == "records":
        last = RECORD_LINE
    else:
        last = bytes(w.format_message(RecordMessage(stream="s", record={"a": 1})))
    w.write_lines(b"x" * (65536 - len(last) - 1))
    w.write_lines(b"z")
    assert buffer.writes == []
    if how == "lines":
        w.write_lines(last)
    elif how == "records":
        w.write_records("s", [{"a": 1}])
    else:
        w.write_message(RecordMessage(stream="s", record={"a": 1}))
    assert [len(b) for b in buffer.writes] == [65536] and buffer.writes[0].endswith(last)
    assert buffer.busy_seen == [True]
    assert buffer.flushes == 0  # drained, not flushed
    w.write_lines(b"next\n")
    assert len(buffer.writes) == 1
    w.flush()
    assert buffer.writes[1:] == [b"next\n"] and buffer.busy_seen == [True, True, True]


def test_a_signal_during_a_write_is_handled_once_the_write_is_complete(out) -> None:
    w, buffer = out
    handled: list[tuple[int, bool]] = []
    w.on_signal = lambda signum: handled.append((signum, w.busy))
    buffer.signal_during_write = 15
    w.write_lines(b"a\n")
    w.flush()
    assert handled == [(15, False)] and w.pending_signal is None
    buffer.signal_during_write = None
    w.pending_signal = 2
    w.flush()  # nothing to write: the flush alone delivers it
    assert handled == [(15, False), (2, False)]
    w.on_signal = None
    w.pending_signal = 2
    w.flush()
    assert w.pending_signal == 2  # no handler yet: kept


def test_a_signal_during_a_block_drain_is_handled_before_the_write_returns(out) -> None:
    w, buffer = out
    handled: list[int] = []
    w.on_signal = handled.append
    buffer.signal_during_write = 15
    w.write_lines(b"x" * 65535)
    assert handled == [] and buffer.writes == []
    w.write_lines(b"\n")
    assert handled == [15] and w.pending_signal is None and buffer.flushes == 0


@pytest.mark.parametrize("error", [OSError, ValueError])
def test_flush_at_exit_delivers_what_is_held_and_ignores_a_closed_stdout(out, error, monkeypatch) -> None:
    w, buffer = out
    w.write_lines(b"held\n")
    w._flush_at_exit()
    assert buffer.writes == [b"held\n"] and buffer.flushes == 1
    w.write_lines(b"lost\n")
    monkeypatch.setattr(writer_module, "sys", fake_sys(FakeBuffer(fail=error)))
    w._flush_at_exit()  # no exception


# -- transport -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_deadline_allows_for_connecting_until_armed(monkeypatch) -> None:
    clock = Clock(100.0)
    monkeypatch.setattr(transport, "time", clock)
    timer = transport.Deadline(5.0, 2.0)
    assert (timer.seconds, timer.deadline, timer.sock, timer.fired) == (5.0, 107.0, None, False)
    clock.now = 106.99
    assert timer.overdue() is False
    clock.now = 107.0
    assert timer.overdue() is True
    clock.now = 0.0
    timer.fired = True
    assert timer.overdue() is True


class Marker:
    """A connection that is not a socket: the watchdog only bookkeeps it."""


def test_arm_and_disarm_keep_one_live_entry_per_timer() -> None:
    wd = transport.Watchdog()
    timer = transport.Deadline(600.0, 1000.0)
    before = time.monotonic()
    wd.arm(timer, Marker())
    assert before + 600.0 <= timer.deadline <= time.monotonic() + 600.0  # the connect allowance is gone
    wd.arm(timer, sock := Marker())  # re-armed: a new request on the same attempt
    assert timer.sock is sock and wd._live == 1 and len(wd._heap) == 2
    wd.disarm(timer)
    wd.disarm(timer)
    assert timer.sock is None and wd._live == 0 and not timer.fired
    threads = [th for th in threading.enumerate() if th.name == "response-deadline"]
    assert threads and all(th.daemon for th in threads)


def test_the_heap_sheds_disarmed_entries_past_1024() -> None:
    wd = transport.Watchdog()
    for _ in range(1024):
        timer = transport.Deadline(600.0, 0.0)
        wd.arm(timer, Marker())
        wd.disarm(timer)
    assert len(wd._heap) == 1024
    timer = transport.Deadline(600.0, 0.0)
    wd.arm(timer, Marker())
    assert len(wd._heap) == 1 and wd._heap[0][2] is timer


def test_the_heap_sheds_only_when_mostly_disarmed() -> None:
    wd = transport.Watchdog()
    live = [transport.Deadline(600.0 - i, 0.0) for i in range(300)]
    for timer in live:
        wd.arm(timer, Marker())
    for _ in range(903):  # each arm: heap 300 + j, live 301; sheds when 300 + j > 4 * 301
        timer = transport.Deadline(500.0, 0.0)
        wd.arm(timer, Marker())
        wd.disarm(timer)
    assert len(wd._heap) == 1203
    timer = transport.Deadline(500.0, 0.0)
    wd.arm(timer, Marker())
    assert len(wd._heap) == 1204
    wd.disarm(timer)
    timer = transport.Deadline(500.0, 0.0)
    wd.arm(timer, Marker())
    assert len(wd._heap) == 301
    assert {id(entry[2]) for entry in wd._heap} == {id(t_) for t_ in [*live, timer]}
    heap = [entry[0] for entry in wd._heap]
    assert all(heap[i] <= heap[c] for i in range(len(heap)) for c in (2 * i + 1, 2 * i + 2) if c < len(heap))
    assert wd._live == 301


def wait_for(condition: t.Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_the_watchdog_cuts_a_response_at_its_deadline_even_behind_a_later_one() -> None:
    wd = transport.Watchdog()
    late = transport.Deadline(30.0, 0.0)
    late_sock, late_peer = socket.socketpair()
    a, b = socket.socketpair()
    disarmed = transport.Deadline(0.05, 0.0)
    try:
        wd.arm(late, late_sock)
        time.sleep(0.05)  # the watchdog now sleeps until the late deadline
        timer = transport.Deadline(0.2, 0.0)
        start = time.monotonic()
        wd.arm(timer, a)  # earlier than the one the watchdog sleeps until: it must be woken
        wd.arm(disarmed, Marker())  # earlier still, but disarmed before it is due: never fires
        wd.disarm(disarmed)
        a.settimeout(5)
        assert a.recv(10) == b""  # the connection was shut down under the reader
        elapsed = time.monotonic() - start
        assert 0.15 <= elapsed < 2.0
        assert wait_for(lambda: timer.sock is None, 2.0)
        assert timer.fired and timer.overdue()
        assert not late.fired and late.sock is late_sock and not disarmed.fired
        assert wd._live == 1
    finally:
        wd.disarm(late)
        for s in (late_sock, late_peer, a, b):
            s.close()


def test_cut_shuts_down_a_socket_or_the_socket_under_a_wrapper() -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        transport._cut(a)
        a.settimeout(2)
        assert a.recv(1) == b""
        wrapper = type("TLSInTLS", (), {})()
        wrapper.socket = c
        transport._cut(wrapper)
        c.settimeout(2)
        assert c.recv(1) == b""
        transport._cut(Marker())  # neither: nothing to do
        b.close()
        a.close()
        transport._cut(a)  # already closed: the OSError is swallowed
    finally:
        for s in (a, b, c, d):
            s.close()


def test_a_connection_arms_the_timer_of_its_thread_when_the_response_is_read(monkeypatch) -> None:
    armed: list[tuple] = []
    monkeypatch.setattr(transport, "WATCHDOG", type("W", (), {"arm": staticmethod(lambda *a: armed.append(a))})())

    class Base:
        def getresponse(self, *args: t.Any, **kwargs: t.Any) -> tuple:
            return ("response", args, kwargs)

    class Conn(transport._ArmOnResponse, Base):
        sock: t.Any = None

    conn = Conn()
    timer = transport.Deadline(1.0, 1.0)
    assert conn.getresponse(1, k=2) == ("response", (1,), {"k": 2})
    conn.sock = sock = Marker()
    assert conn.getresponse() == ("response", (), {})
    assert armed == []  # no timer on this thread
    with transport.armed(timer):
        assert transport._current.timer is timer
        conn.getresponse()
        conn.sock = None
        conn.getresponse()
    assert armed == [(timer, sock)]
    assert transport._current.timer is None
    with pytest.raises(KeyError), transport.armed(timer):
        raise KeyError("x")
    assert transport._current.timer is None


def test_the_adapter_uses_connections_that_arm_the_deadline() -> None:
    adapter = transport.Adapter()
    assert adapter.poolmanager.pool_classes_by_scheme is transport._POOLS
    assert transport._POOLS["http"].ConnectionCls is transport._HTTPConnection
    assert transport._POOLS["https"].ConnectionCls is transport._HTTPSConnection
    manager = adapter.proxy_manager_for("http://proxy.invalid:3128")
    assert manager is not None and manager.pool_classes_by_scheme is transport._POOLS
    assert adapter.proxy_manager_for("http://proxy.invalid:3128") is manager
    adapter.close()


# -- guard: a job's lines spilled to a file (Lines) ----------------------------------------------------------

_spool_line = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(_spool_line, max_size=40), st.sampled_from([1, 7, 64, 1 << 30]), st.sampled_from([1, 5, 1 << 20]))
def test_lines_give_back_what_was_added_in_order_and_in_whole_lines(added, spill, read) -> None:
    checked: list[bytes] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(guard.Lines, "SPILL", spill)
        patch.setattr(guard.Lines, "READ", read)
        lines = guard.Lines(lambda block: checked.append(bytes(block)))
        for line in added:
            lines += line
        everything = b"".join(added)
        assert bytes(lines) == everything and len(lines) == len(everything)
        assert list(lines.lines()) == everything.splitlines()
        assert lines.in_memory == len(lines.tail) < max(spill, 1) + 31
        # what went to the file was checked on its way there, block by block, each of whole lines
        assert b"".join(checked) == everything[: lines.spilled]
        assert all(block.endswith(b"\n") for block in lines.spilled_blocks())
        assert b"".join(lines.spilled_blocks()) == b"".join(checked)
        lines.close()
        if lines.spilled:
            with pytest.raises(ValueError, match="closed"):
                bytes(lines)


_job_key = st.sampled_from(["x", "name", "token", "job_token", "apiKey", "policyKey", "values", "n"])
_job_value = st.recursive(
    st.one_of(
        st.integers(min_value=-(2**1100), max_value=2**1100),
        st.sampled_from(["plain", "s3cr3t-value-1", "late-secret-22", "a s3cr3t-value-1 b", "é\u212a"]),
        st.none(),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_job_key, inner, max_size=3)),
    max_leaves=8,
)


def _outcome(records: list[dict], late_at: int, spill: int) -> tuple[t.Any, ...]:
    """The job through Output with lines spilled every `spill` bytes; a secret registered before
    record `late_at` (as a token refreshed while the job is built)."""
    SECRETS.clear()
    SECRETS.add("s3cr3t-value-1")
    guard._warned.clear()
    streams = {"extraction_rows": S("extraction_rows"), "other": S("other")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(guard.Lines, "SPILL", spill)
        out = Output(line_encoder)
        try:
            for index, record in enumerate(records):
                if index == late_at:
                    SECRETS.add("late-secret-22")
                out.add(streams["extraction_rows" if index % 2 else "other"], record)
            out.finish()
        except Unrepresentable as exc:
            return ("failed", str(exc))
        return ("written", bytes(out.lines), sorted(guard._warned))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.dictionaries(_job_key, _job_value, max_size=4), max_size=12),
    st.integers(min_value=0, max_value=12),
    st.sampled_from([1, 40, 300]),
)
def test_a_spilled_job_is_checked_exactly_as_one_held_in_memory(records, late_at, spill) -> None:
    assert _outcome(records, late_at, spill) == _outcome(records, late_at, 1 << 40)


def test_a_secret_registered_after_a_block_was_spilled_is_still_replaced_in_it(monkeypatch) -> None:
    monkeypatch.setattr(guard.Lines, "SPILL", 10)
    out = Output(line_encoder)
    out.add(S("s"), {"v": "early tok-late-123 value"})  # spilled and checked: no secret known yet
    assert out.lines.spilled and not out.lines.tail
    SECRETS.add("tok-late-123")
    out.add(S("s"), {"v": "plain"})
    out.finish()
    assert records_of(out.lines) == [
        {"type": "RECORD", "stream": "s", "record": {"v": "early *** value"}},
        {"type": "RECORD", "stream": "s", "record": {"v": "plain"}},
    ]


def test_the_writer_writes_a_spilled_job_whole_and_a_signal_waits_for_it(monkeypatch, capsysbinary) -> None:
    monkeypatch.setattr(guard.Lines, "SPILL", 64)
    monkeypatch.setattr(guard.Lines, "READ", 50)
    out = Output(line_encoder)
    for index in range(20):
        out.add(S("s"), {"i": index})
    out.finish()
    assert out.lines.spilled
    writer = writer_module.SingerWriter()
    writer.write_lines(b'{"type":"SCHEMA"}\n')
    seen: list[tuple[int, int]] = []
    writer.pending_signal = 15  # a signal noted while bytes were going out: handled once they are all out
    writer.on_signal = lambda signum: seen.append((signum, len(capsysbinary.readouterr().out.splitlines())))
    writer.write_lines(out.lines)
    assert seen == [(15, 21)]  # the schema line and the job's 20 records, not a block of them
    assert writer.record_bytes_since_state == len(b'{"type":"SCHEMA"}\n') + len(out.lines)


@pytest.mark.parametrize("target", ["file", "append", "pipe", "memory"])
def test_spilled_lines_reach_any_output_whole_and_in_order(target, tmp_path, monkeypatch) -> None:
    """The kernel copies the spilled part where the output takes sendfile; the rest read back in blocks."""
    import io
    import os

    monkeypatch.setattr(guard.Lines, "SPILL", 100)
    lines = guard.Lines()
    added = [b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * (n % 37)) for n in range(400)]
    for line in added:
        lines += line
    assert lines.spilled and lines.tail
    expected = b"".join(added)
    if target == "memory":
        out = io.BytesIO()
        lines.write_to(out)
        assert out.getvalue() == expected
        return
    if target == "pipe":
        read_end, write_end = os.pipe()
        received = bytearray()

        def drain() -> None:
            while chunk := os.read(read_end, 65536):
                received.extend(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        with open(write_end, "wb") as out:
            out.write(b"head\n")
            lines.write_to(out)
        reader.join(timeout=30)
        os.close(read_end)
        assert bytes(received) == b"head\n" + expected
        return
    path = tmp_path / "out"
    path.write_bytes(b"head\n")
    with open(path, "ab" if target == "append" else "r+b") as out:
        out.seek(0, os.SEEK_END)
        lines.write_to(out)
    assert path.read_bytes() == b"head\n" + expected


def test_a_small_job_is_buffered_not_written_at_once(capsysbinary) -> None:
    """Most jobs are a few lines: they join the writer's buffer (no system call per job) until a block
    is full or a STATE comes; only a spilled job goes out at once."""
    out = Output(line_encoder)
    out.add(S("s"), {"i": 1})
    out.finish()
    writer = writer_module.SingerWriter()
    writer.write_lines(out.lines)
    assert capsysbinary.readouterr().out == b""
    writer.flush()
    assert capsysbinary.readouterr().out == b'{"type":"RECORD","stream":"s","record":{"i":1}}\n'
