"""The singer-sdk's standard tap tests, against the fake APIs, as third-party checks run them.

`TestSDKStandard` uses the SDK's default `SuiteConfig`: a record limit of 150 per stream, which this world
exceeds (extraction_jobs), so the SDK stops the sync part-way and the final STATE must be a safe resume
point. `TestSDKStandardWholeSync` is the project's stricter run: no limit, every stream must have records.

Two of the SDK's generated tests cannot fail and are replaced here by ones that can:
- its primary-key uniqueness test builds a set of generator objects (always all distinct):
  `test_primary_keys_are_unique_and_never_null`;
- its attribute tests pass when no record has a value for the attribute (`is_object` of
  `clavata_jobs.extra_fields` passed with every value null): each runs here only with a value to check
  (`test_every_attribute_test_has_values_to_check`), the vendors adding fields the tap does not know.
"""

from __future__ import annotations

import atexit
import collections
import typing as t

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_jobresults.tap import TapJobResults
from tests.conftest import CONTRACT_KEYS, DATA_STREAMS, populate, run_tap
from tests.fakeapi import FakeAPIs

LIMITED_STREAM = "extraction_jobs"
TALONIC_JOBS = 170  # over the SDK's default limit of 150 records per stream


def _unknown_fields(body: t.Any, depth: int = 0) -> t.Any:
    """A body as a vendor that added a field everywhere would send it (the tap keeps it in extra_fields)."""
    if isinstance(body, dict):
        out = {key: _unknown_fields(value, depth + 1) if depth < 3 else value for key, value in body.items()}
        out["vendorAddedField"] = {"since": "v2"}
        return out
    if isinstance(body, list):
        return [_unknown_fields(item, depth + 1) for item in body]
    return body


def _vendors_add_fields(apis: FakeAPIs) -> None:
    # Besides unknown fields, two optional fields the vendors' servers send (the fake's realistic mode does).
    for server, name, optional in (
        (apis.clavata, "_job", {}),
        (apis.talonic, "_job", {"failed_documents": 0}),
        (apis.talonic, "_results", {}),
        (apis.cognite, "_predict_body", {"modelId": 4321}),
        (apis.cognite, "_run_body", {}),
    ):
        original = getattr(server, name)

        def added(*args: t.Any, _original: t.Callable = original, _optional: dict = optional, **kwargs: t.Any) -> t.Any:
            return {**_optional, **_unknown_fields(_original(*args, **kwargs))}

        setattr(server, name, added)


# The standard tests are generated at import time, so the fake APIs start here, once per module.
_APIS = FakeAPIs().__enter__()
atexit.register(_APIS.__exit__, None, None, None)
# The bulk first: listings are newest first and the engine writes jobs as their fetches complete, so
# populate()'s jobs (failed, still processing: the only ones with `error` and `progress`) must be the
# newest to fall within the SDK's record limit.
for _ in range(TALONIC_JOBS):
    _APIS.talonic.add_job(rows=1)
populate(_APIS)
_vendors_add_fields(_APIS)
_CONFIG = {**_APIS.config(), "max_concurrent_requests": 8}

# Attributes no record of this world has a value for, by design: their SDK tests would check nothing.
NO_VALUE_BY_DESIGN = {
    ("sync_runs", "shard"),  # set only when the tap runs as one shard of several
    ("sync_runs", "extra_fields"),  # the tap's own heartbeat: nothing from a vendor
}


class _Checks:
    """Tests of our own, run against the SDK runner's sync (class-scoped `runner` fixture)."""

    def test_primary_keys_are_unique_and_never_null(self, runner: t.Any) -> None:
        for stream in runner.new_tap().streams.values():
            keys = [tuple(record[k] for k in stream.primary_keys) for record in runner.records[stream.name]]
            assert keys, f"{stream.name}: no records"
            assert all(None not in key for key in keys), stream.name
            duplicated = [key for key, n in collections.Counter(keys).items() if n > 1]
            assert not duplicated, f"{stream.name}: {duplicated[:3]}"
            assert list(stream.primary_keys) == CONTRACT_KEYS[stream.name]

    def test_every_attribute_test_has_values_to_check(self, runner: t.Any) -> None:
        vacuous = []
        for name, params in type(self).params.items():
            if "attribute" not in name:
                continue
            for param in params:
                stream, attribute = param.values.stream.name, param.values.attribute_name
                if (stream, attribute) in NO_VALUE_BY_DESIGN:
                    continue
                if not any(r.get(attribute) is not None for r in runner.records[stream]):
                    vacuous.append(f"{name}[{stream}.{attribute}]")
        assert not vacuous, f"these SDK tests would pass without checking a value: {vacuous}"


_Standard = get_tap_test_class(tap_class=TapJobResults, config=_CONFIG)  # the SDK's defaults


class TestSDKStandard(_Standard, _Checks):  # type: ignore[misc,valid-type]
    test_tap_stream_primary_keys = None  # cannot fail (see the module docstring)

    def test_the_record_limit_cut_the_sync_and_its_last_state_loses_nothing(self, runner: t.Any) -> None:
        """The SDK stops a stream at its 150th record; the final STATE holds what was fully emitted."""
        assert len(runner.records[LIMITED_STREAM]) == 150 < TALONIC_JOBS
        state = runner.state_messages[-1]["value"]
        resumed = run_tap(_CONFIG, state=state, check=True)
        everything = run_tap(_CONFIG, check=True)
        for stream in DATA_STREAMS:
            before = {tuple(r[k] for k in CONTRACT_KEYS[stream]) for r in runner.records[stream]}
            assert set(everything.keys(stream)) <= before | set(resumed.keys(stream)), f"{stream} lost records"
        # Resumed from where the limit stopped it: the jobs of the limited run come back at most once more.
        assert len(resumed.records(LIMITED_STREAM)) <= (TALONIC_JOBS + 4 - 150) + 2  # + in flight, + still processing


_Whole = get_tap_test_class(
    tap_class=TapJobResults,
    config=_CONFIG,
    suite_config=SuiteConfig(ignore_no_records_for_streams=[], max_records_limit=None),
)


class TestSDKStandardWholeSync(_Whole, _Checks):  # type: ignore[misc,valid-type]
    test_tap_stream_primary_keys = None
