"""Every singer-sdk internal the tap relies on (tap_jobresults/sdk_hooks.py), one test each.

Each test fails if the SDK changes the hook: the attribute is gone, its parameters differ from what
the tap calls or overrides, or the behaviour the tap relies on is different. They run in-process,
on a tap built from a config (no request is made), and read the Singer messages from stdout.
"""

from __future__ import annotations

import gc
import inspect
import json
import signal
import sys
import typing as t

import jsonschema
import pytest
from singer_sdk import Stream, Tap
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers._state import StateWriter
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.plugin_base import JSONSchemaValidator, PluginBase
from singer_sdk.singerlib import RecordMessage, StateMessage

from tap_jobresults import cli, sdk_hooks
from tap_jobresults.streams import JobStream, ResultStream, SyncRunsStream, _JobResultsStream
from tap_jobresults.tap import TapJobResults
from tap_jobresults.writer import SingerWriter

CONFIG = {"talonic": {"api_key": "tlnc_sdk_hooks_test_key", "base_url": "http://127.0.0.1:9"}}
ROW = {
    "id": "row-1",
    "document_id": "doc-1",
    "filename": "a.pdf",
    "status": "complete",
    "values": {"total": 3},
    "confidence": 0.9,
    "validation_flags": [],
    "extra_fields": None,
    "job_id": "job-1",
    "job_status": "complete",
}


@pytest.fixture
def restore_signals() -> t.Iterator[None]:
    """The SDK installs the tap's SIGTERM/SIGINT handlers when a tap is built: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def make_tap(config: dict | None = None) -> TapJobResults:
    return TapJobResults(config=config or CONFIG, validate_config=True)


@pytest.fixture
def tap(restore_signals: None) -> t.Iterator[TapJobResults]:
    yield make_tap()
    sdk_hooks.close_counters()


def messages(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def read(tap: Tap, capsysbinary: pytest.CaptureFixture[bytes]) -> list[dict]:
    """The messages written so far (the tap's writer holds them in blocks until a STATE or a flush)."""
    tap.message_writer.flush()  # type: ignore[attr-defined]
    return messages(capsysbinary.readouterr().out)


def params(function: t.Callable) -> list[tuple[str, t.Any, t.Any]]:
    """Parameter names, kinds and defaults: what a call or an override depends on (not annotations)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


P = inspect.Parameter
SELF = ("self", P.POSITIONAL_OR_KEYWORD, P.empty)

# (owner in the SDK, name, parameters the tap calls it with or overrides it with)
SIGNATURES = [
    (Stream, "_write_record_message", [SELF, ("record", P.POSITIONAL_OR_KEYWORD, P.empty)]),
    (Stream, "_write_schema_message", [SELF]),
    (Stream, "_write_state_message", [SELF]),
    (
        Stream,
        "_increment_stream_state",
        [SELF, ("latest_record", P.POSITIONAL_OR_KEYWORD, P.empty), ("context", P.KEYWORD_ONLY, None)],
    ),
    (
        Stream,
        "generate_child_contexts",
        [SELF, ("record", P.POSITIONAL_OR_KEYWORD, P.empty), ("context", P.POSITIONAL_OR_KEYWORD, P.empty)],
    ),
    (Stream, "sync", [SELF, ("context", P.POSITIONAL_OR_KEYWORD, None)]),
    (PluginBase, "_validate_config", [SELF, ("raise_errors", P.KEYWORD_ONLY, True)]),
    (
        Tap,
        "_handle_termination",
        [SELF, ("signum", P.POSITIONAL_OR_KEYWORD, P.empty), ("frame", P.POSITIONAL_OR_KEYWORD, P.empty)],
    ),
    (Tap, "sync_all", [SELF]),
    (Tap, "append_builtin_config", [("config_jsonschema", P.POSITIONAL_OR_KEYWORD, P.empty)]),
    (
        Tap,
        "run_sync_dry_run",
        [SELF, ("dry_run_record_limit", P.POSITIONAL_OR_KEYWORD, 1), ("streams", P.POSITIONAL_OR_KEYWORD, None)],
    ),
    (MsgSpecWriter, "write_message", [SELF, ("message", P.POSITIONAL_OR_KEYWORD, P.empty)]),
    (MsgSpecWriter, "format_message", [SELF, ("message", P.POSITIONAL_OR_KEYWORD, P.empty)]),
]


@pytest.mark.parametrize(("owner", "name", "expected"), SIGNATURES, ids=[f"{o.__name__}.{n}" for o, n, _ in SIGNATURES])
def test_hook_exists_with_the_parameters_the_tap_uses(owner: type, name: str, expected: list) -> None:
    assert hasattr(owner, name), f"singer-sdk has no {owner.__name__}.{name} any more (see tap_jobresults/sdk_hooks.py)"
    assert params(getattr(owner, name)) == expected


# Our overrides of SDK methods: each must still override something, with the SDK's parameters.
OVERRIDES = [
    (_JobResultsStream, "_increment_stream_state"),
    (_JobResultsStream, "_write_state_message"),
    (_JobResultsStream, "_write_schema_message"),
    (_JobResultsStream, "_write_record_message"),
    (ResultStream, "_write_state_message"),
    (SyncRunsStream, "_write_state_message"),
    (JobStream, "generate_child_contexts"),
    (TapJobResults, "_validate_config"),
    (TapJobResults, "_handle_termination"),
    (TapJobResults, "sync_all"),
    (TapJobResults, "load_state"),
    (SingerWriter, "write_message"),
]


@pytest.mark.parametrize(("cls", "name"), OVERRIDES, ids=[f"{c.__name__}.{n}" for c, n in OVERRIDES])
def test_overrides_match_the_sdk_methods_they_replace(cls: type, name: str) -> None:
    sdk_base = next(base for base in cls.__mro__[1:] if name in vars(base) and base.__module__.startswith("singer_sdk"))
    assert params(vars(cls)[name]) == params(vars(sdk_base)[name])


def test_write_record_message_writes_a_record_through_the_tap_writer(tap, capsysbinary) -> None:
    stream = tap.streams["extraction_rows"]
    assert stream._tap is tap and isinstance(sdk_hooks.message_writer(stream), SingerWriter)
    stream.state_manager.is_flushed = True
    Stream._write_record_message(stream, dict(ROW))  # the SDK's path (ours may encode directly)
    (message,) = read(tap, capsysbinary)
    assert message["type"] == "RECORD" and message["stream"] == "extraction_rows"
    assert message["record"] == ROW
    assert stream.state_manager.is_flushed is False  # so the next STATE is written


def test_write_schema_message_writes_the_stream_schema(tap, capsysbinary) -> None:
    stream = tap.streams["extraction_rows"]
    Stream._write_schema_message(stream)
    (message,) = read(tap, capsysbinary)
    assert message["type"] == "SCHEMA" and message["stream"] == "extraction_rows"
    assert message["schema"]["properties"].keys() == stream.schema["properties"].keys()
    assert message["key_properties"] == ["id"]


def test_write_state_message_writes_only_when_state_is_not_flushed(tap, capsysbinary) -> None:
    stream = tap.streams["extraction_jobs"]
    stream.stream_state["job_bookmarks"] = {"all": {"hwm": ["2025-01-01T00:00:00.000000Z", "j1"]}}
    stream.state_manager.is_flushed = True
    Stream._write_state_message(stream)
    assert read(tap, capsysbinary) == []
    stream.state_manager.is_flushed = False
    Stream._write_state_message(stream)
    (message,) = read(tap, capsysbinary)
    assert message["type"] == "STATE"
    assert message["value"]["bookmarks"]["extraction_jobs"]["job_bookmarks"]["all"]["hwm"][1] == "j1"
    assert stream.state_manager.is_flushed is True
    # The tap's own helpers: write_state_now writes whatever the flag says; mark_state_flushed suppresses.
    stream.stream_state["job_bookmarks"]["all"]["hwm"][1] = "j2"  # bookmarks change in place
    sdk_hooks.write_state_now(stream)
    assert [m["type"] for m in read(tap, capsysbinary)] == ["STATE"]
    stream.state_manager.is_flushed = False
    sdk_hooks.mark_state_flushed(stream)
    Stream._write_state_message(stream)
    assert read(tap, capsysbinary) == []


def test_increment_stream_state_is_needed_and_overridden(tap, capsysbinary) -> None:
    """Our streams are INCREMENTAL without a replication key: the SDK's own hook refuses that, so the
    sync works only while the SDK calls the hook by this name (and ours does nothing)."""
    stream = tap.streams["sync_runs"]
    assert stream.replication_method == "INCREMENTAL" and not stream.replication_key
    with pytest.raises(ValueError, match="replication key"):
        Stream._increment_stream_state(stream, {"run_id": "r"}, context=None)
    record = {"run_id": "r1", "job_stream": "extraction_jobs"}
    stream.get_records = lambda context: iter([dict(record)])  # type: ignore[method-assign]
    stream.sync()
    out = read(tap, capsysbinary)
    assert [m["record"]["run_id"] for m in out if m["type"] == "RECORD"] == ["r1"]


def test_sync_calls_generate_child_contexts_once_per_record(tap, capsysbinary, monkeypatch) -> None:
    stream = tap.streams["extraction_jobs"]
    seen: list[str] = []

    def children(record: dict, context: t.Any) -> t.Iterator[None]:
        seen.append(record["job_id"])
        yield from ()

    monkeypatch.setattr(stream, "get_records", lambda context: iter([{"job_id": f"j{i}"} for i in range(3)]))
    monkeypatch.setattr(stream, "generate_child_contexts", children)
    stream.sync()
    assert seen == ["j0", "j1", "j2"]
    assert [m["record"]["job_id"] for m in read(tap, capsysbinary) if m["type"] == "RECORD"] == seen


def test_sync_all_syncs_streams_in_name_order_so_sync_runs_runs_last(restore_signals, monkeypatch, capsysbinary):
    config = {
        "cognite": {"base_url": "http://127.0.0.1:9", "project": "p", "token": "cdf-static-token", "pipeline_ids": []},
        "clavata": {"api_key": "clavata-sdk-hooks-key", "base_url": "http://127.0.0.1:9"},
        **CONFIG,
    }
    tap = make_tap(config)
    order: list[str] = []
    for name, stream in tap.streams.items():
        monkeypatch.setattr(stream, "sync", lambda context=None, name=name: order.append(name))
    tap.sync_all()  # ours: wraps the SDK's
    top_level = [name for name, s in tap.streams.items() if not s.parent_stream_type]
    assert order == sorted(top_level)
    assert order[-1] == "sync_runs"  # the heartbeat reports every job stream that ran before it
    assert {"entity_matching_jobs", "pipeline_runs", "clavata_jobs", "extraction_jobs"} <= set(order)


def test_sync_all_is_extended_not_replaced() -> None:
    """The SDK marks sync_all final; ours must keep calling it (STATE at start, every stream)."""
    if sys.version_info >= (3, 11):  # typing.final records itself from 3.11 on
        assert getattr(Tap.sync_all, "__final__", False), "the SDK no longer marks sync_all final: revisit tap.py"
    assert "super().sync_all()" in inspect.getsource(TapJobResults.sync_all)


def test_dry_run_sets_abort_at_record_count(tap, monkeypatch) -> None:
    during: dict[str, bool] = {}
    for stream in tap.streams.values():
        monkeypatch.setattr(
            stream, "sync", lambda context=None, s=stream: during.__setitem__(s.name, sdk_hooks.is_dry_run(s))
        )
    assert not any(sdk_hooks.is_dry_run(s) for s in tap.streams.values())
    tap.run_sync_dry_run(dry_run_record_limit=1, streams=list(tap.streams.values()))
    assert during and all(during.values())
    assert all(s.ABORT_AT_RECORD_COUNT == 1 for s in tap.streams.values())


def test_a_record_limited_stream_writes_state_like_any_other(tap, capsysbinary) -> None:
    """`--test` and the SDK's standard tests set ABORT_AT_RECORD_COUNT; the STATE then holds what was fully
    emitted (see tests/test_core.py), so it is written as in any run."""
    stream = tap.streams["extraction_jobs"]
    stream.ABORT_AT_RECORD_COUNT = 1
    stream.state_manager.is_flushed = False
    stream._write_state_message()
    assert [m["type"] for m in read(tap, capsysbinary)] == ["STATE"]
    stream.ABORT_AT_RECORD_COUNT = None


def test_same_record_transform_is_the_identity_without_stream_maps(tap) -> None:
    stream = tap.streams["extraction_rows"]
    (only,) = stream.stream_maps
    assert isinstance(only, SameRecordTransform) and not only.flattening_enabled
    record = dict(ROW)
    assert only.transform(record) == ROW and only.get_filter_result(record) is True
    assert all(stream.mask.values())
    assert sdk_hooks.untransformed(stream)


def test_a_stream_map_takes_the_sdk_record_path(restore_signals, capsysbinary) -> None:
    config = {**CONFIG, "stream_maps": {"extraction_rows": {"filename": "__NULL__"}}}
    tap = make_tap(config)
    stream = tap.streams["extraction_rows"]
    assert not sdk_hooks.untransformed(stream)
    assert sdk_hooks.write_records(stream, [dict(ROW), dict(ROW, id="row-2")]) == 2
    sdk_hooks.close_counters()
    out = read(tap, capsysbinary)
    assert [m["type"] for m in out] == ["SCHEMA", "RECORD", "RECORD"]
    assert "filename" not in out[0]["schema"]["properties"]
    assert all("filename" not in m["record"] for m in out[1:])


def test_flattening_takes_the_sdk_record_path(restore_signals) -> None:
    tap = make_tap({**CONFIG, "flattening_enabled": True, "flattening_max_depth": 1})
    assert tap.streams["extraction_rows"].stream_maps[0].flattening_enabled
    assert not sdk_hooks.untransformed(tap.streams["extraction_rows"])


def test_write_records_untransformed_writes_schema_once_then_records(tap, capsysbinary, caplog) -> None:
    stream = tap.streams["extraction_rows"]
    assert stream.TYPE_CONFORMANCE_LEVEL == TypeConformanceLevel.NONE
    assert sdk_hooks.write_records(stream, [dict(ROW)]) == 1
    assert sdk_hooks.write_records(stream, [dict(ROW, id="row-2")]) == 1
    out = read(tap, capsysbinary)
    assert [m["type"] for m in out] == ["SCHEMA", "RECORD", "RECORD"]  # ours sends SCHEMA once per run
    assert [m["record"]["id"] for m in out[1:]] == ["row-1", "row-2"]
    with caplog.at_level("INFO", logger="singer_sdk.metrics"):
        sdk_hooks.close_counters()
    points = [json.loads(r.getMessage().split("METRIC: ", 1)[1]) for r in caplog.records if "METRIC" in r.getMessage()]
    assert [(p["metric"], p["value"], p["tags"]["stream"]) for p in points] == [("record_count", 2, "extraction_rows")]


def test_state_writer_writes_the_tap_state_when_it_changed(tap, capsysbinary) -> None:
    """The SDK's StateWriter skips a state equal to the last one written; it must compare against a
    copy, since the tap changes its bookmarks in place."""
    tap.state["bookmarks"] = {"extraction_jobs": {"job_bookmarks": {}}}
    sdk_hooks.write_tap_state(tap)
    (message,) = read(tap, capsysbinary)
    assert message["type"] == "STATE"
    assert message["value"]["bookmarks"] == {"extraction_jobs": {"job_bookmarks": {}}}
    sdk_hooks.write_tap_state(tap)
    assert read(tap, capsysbinary) == []
    tap.state["bookmarks"]["extraction_jobs"]["job_bookmarks"]["all"] = {"pending": {}}
    sdk_hooks.write_tap_state(tap)
    (message,) = read(tap, capsysbinary)
    assert message["value"]["bookmarks"]["extraction_jobs"]["job_bookmarks"] == {"all": {"pending": {}}}


def test_the_sdk_writes_every_state_through_the_line_comparing_writer(tap, capsysbinary) -> None:
    """The SDK keeps its StateWriter in `Tap._state_writer` and calls it from streams
    (`Tap.state_writer`) and from the tap itself: ours replaces it, on the tap's writer."""
    assert isinstance(tap._state_writer, sdk_hooks.StateLineWriter)
    assert tap.state_writer is tap._state_writer
    assert tap._state_writer._message_writer is tap.message_writer
    assert "_message_writer" in vars(StateWriter(tap.message_writer))
    # Equal states by value, rebuilt: the second is a duplicate and is not written.
    tap.state["bookmarks"] = {"a": {"x": [1, 2]}}
    sdk_hooks.write_tap_state(tap)
    tap.state["bookmarks"] = {"a": {"x": [1, 2]}}
    sdk_hooks.write_tap_state(tap)
    assert [m["value"]["bookmarks"] for m in read(tap, capsysbinary)] == [{"a": {"x": [1, 2]}}]


def test_handle_termination_is_the_signal_handler(restore_signals) -> None:
    tap = make_tap()
    assert signal.getsignal(signal.SIGTERM) == tap._handle_termination
    assert signal.getsignal(signal.SIGINT) == tap._handle_termination


def test_validate_config_runs_at_construction(restore_signals) -> None:
    with pytest.raises(ConfigValidationError) as raised:
        make_tap({"talonic": {"api_key": 12345678}})
    assert raised.value.errors and all("12345678" not in e for e in raised.value.errors)  # ours ran


def test_config_schema_validation_is_the_sdks(tap) -> None:
    """Built-in settings are appended (so additionalProperties: false does not refuse stream_maps),
    defaults are filled into the config, and errors carry what settings.schema_error_message reads."""
    schema = dict(tap.config_jsonschema)
    TapJobResults.append_builtin_config(schema)
    assert {"stream_maps", "flattening_enabled", "batch_config"} <= schema["properties"].keys()
    assert sdk_hooks.config_schema_errors(tap) == []
    assert tap.config["max_concurrent_requests"] == schema["properties"]["max_concurrent_requests"]["default"]
    (error,) = JSONSchemaValidator({"type": "object", "properties": {"a": {"type": "string"}}}).iter_errors({"a": 1})
    assert isinstance(error, jsonschema.ValidationError)
    assert (list(error.absolute_path), error.instance, error.validator, error.validator_value) == (
        ["a"],
        1,
        "type",
        "string",
    )
    assert isinstance(tap._config, dict)


def test_writer_formats_messages_as_singer_lines() -> None:
    writer = SingerWriter()
    line = writer.format_message(RecordMessage(stream="s", record={"a": 1}))
    assert isinstance(line, (bytes, bytearray)) and line.endswith(b"\n")
    assert json.loads(line)["record"] == {"a": 1}
    assert StateMessage(value={"x": 1}).value == {"x": 1}


def test_result_streams_keep_one_state_entry(tap) -> None:
    """`state_partitioning_keys = []`: the SDK keeps one bookmark for a child stream, not one per job."""
    stream = tap.streams["extraction_rows"]
    assert stream.state_partitioning_keys == []
    assert stream.get_context_state({"job": "Talonic job 1"}) is stream.get_context_state({"job": "Talonic job 2"})


def test_the_command_turns_the_collector_back_on_once_the_tap_is_set_up(restore_signals) -> None:
    """`tap-jobresults` (cli.main) starts with the garbage collector off; constructing the tap turns it on,
    with the start-up's objects frozen. A tap built in-process by other code leaves the collector alone."""
    frozen = gc.get_freeze_count()
    try:
        cli._starting = True
        gc.disable()
        make_tap()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
        assert cli._starting is False
        gc.unfreeze()
        gc.disable()
        make_tap()  # not started by the command: nothing changes
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        cli._starting = False
        gc.unfreeze()
        gc.enable()
