"""Property-based tests: any config or payload shape gives a clear error or a good result, never a crash."""

from __future__ import annotations

import json
import threading
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from singer_sdk.exceptions import ConfigValidationError

from tap_jobresults.client import ApiClient
from tap_jobresults.errors import TapJobResultsError
from tap_jobresults.lifecycle import FetchedJob, JobKey, JobRef, Policy
from tap_jobresults.scrub import SECRETS
from tap_jobresults.sources import clavata, cognite, talonic
from tap_jobresults.tap import TapJobResults

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

SETTING_NAMES = [
    "start_date",
    "max_concurrent_requests",
    "connect_timeout",
    "read_timeout",
    "max_retries",
    "max_retry_wait",
    "cognite",
    "clavata",
    "talonic",
    "bogus",
]
SECTION_KEYS = [
    "base_url",
    "project",
    "token",
    "client_id",
    "client_secret",
    "token_url",
    "scopes",
    "audience",
    "entity_matching_jobs",
    "pipeline_ids",
    "api_key",
    "policy_id",
    "typo",
]
sections = st.dictionaries(
    st.sampled_from(SECTION_KEYS),
    json_values | st.just("http://127.0.0.1:1") | st.just("https://x.example"),
    max_size=6,
)
configs = st.dictionaries(st.sampled_from(SETTING_NAMES), json_values | sections, max_size=5)


def _names(config: t.Any) -> set[str]:
    """Every key of the config, at any depth: what an error message may name."""
    if isinstance(config, dict):
        return set(config) | {n for v in config.values() for n in _names(v)}
    if isinstance(config, list):
        return {n for v in config for n in _names(v)}
    return set()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_any_config_is_accepted_or_refused_with_named_errors(config):
    # The registry is process-wide: a secret an earlier example registered (`tries`, say) would scrub
    # a setting's name out of this example's messages, which no single run of the tap can do.
    SECRETS.clear()
    try:
        tap = TapJobResults(config=config, validate_config=True, setup_mapper=False)
    except ConfigValidationError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)
        names = _names(config) | {"source"}  # "no source configured" names what is missing
        for error in exc.errors:
            assert any(name and name in error for name in names), f"{error!r} names no setting of {config}"
        return
    assert tap.streams  # a valid config yields the streams of its active sources


SOURCE_STREAMS = {
    "cognite": {"entity_matching_jobs", "match_results", "pipeline_runs"},
    "clavata": {"clavata_jobs", "clavata_reports"},
    "talonic": {"extraction_jobs", "extraction_rows"},
}
_ids = st.integers(1, 2**53)
valid_configs = st.fixed_dictionaries(
    {},
    optional={
        "cognite": st.fixed_dictionaries(
            {"project": st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)},
            optional={
                "base_url": st.sampled_from(["https://westeurope-1.cognitedata.com", "http://127.0.0.1:8080"]),
                "entity_matching_jobs": st.lists(
                    st.fixed_dictionaries({"job_id": _ids}, optional={"job_token": st.just("job-token-0123")}),
                    max_size=3,
                    unique_by=lambda job: job["job_id"],  # a job listed twice is refused, by design
                ),
                "pipeline_ids": st.lists(_ids, max_size=3),
            },
        ).flatmap(
            lambda section: st.sampled_from(
                [
                    {**section, "token": "cdf-token-0123456789"},
                    {
                        **section,
                        "client_id": "client",
                        "client_secret": "client-secret-0123",
                        "token_url": "https://login.example.com/oauth2/token",
                        "scopes": ["https://westeurope-1.cognitedata.com/.default"],
                    },
                ]
            )
        ),
        "clavata": st.fixed_dictionaries(
            {"api_key": st.just("clavata-key-0123456789")},
            optional={"policy_id": st.uuids().map(str), "base_url": st.just("https://gateway.app.clavata.ai:8443")},
        ),
        "talonic": st.fixed_dictionaries({"api_key": st.just("tlnc_live_0123456789")}),
        "start_date": st.just("2025-01-01T00:00:00Z"),
        "max_concurrent_requests": st.integers(4, 64),
        "max_retries": st.integers(0, 10),
    },
).filter(lambda c: any(source in c for source in SOURCE_STREAMS))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs)
def test_every_valid_config_is_accepted_with_the_streams_of_its_sources(config):
    tap = TapJobResults(config=config, validate_config=True, setup_mapper=False)
    for source, streams in SOURCE_STREAMS.items():
        assert (streams <= set(tap.streams)) == (source in config), (source, sorted(tap.streams))


class _Body:
    """A loopback server answering every GET with the body under test."""

    def __init__(self) -> None:
        self.body = b"{}"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


POLICY = Policy(run_started="2026-01-01T00:00:00.000000Z")


@pytest.fixture(scope="module")
def body_server():
    server = _Body()
    yield server
    server.server.shutdown()


def _predict_payloads():
    item = st.fixed_dictionaries(
        {},
        optional={
            "source": json_values,
            "matches": st.lists(
                st.fixed_dictionaries({}, optional={"score": json_scalars, "target": json_values}), max_size=3
            )
            | json_values,
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "status": st.sampled_from(["Completed", "Running", "Failed", "Distributing"]) | json_scalars,
            "jobId": st.integers(0, 2**53) | json_scalars,
            "createdTime": st.integers(0, 2**42) | json_scalars,
            "items": st.lists(item, max_size=4) | json_values,
            "errorMessage": json_scalars,
        },
    )


def _check(
    source: t.Any,
    rows: t.Callable[[FetchedJob], t.Iterable[dict]],
    body_server: _Body,
    payload: t.Any,
    partition: str = "all",
) -> None:
    body_server.body = json.dumps(payload).encode()
    ref = JobRef(JobKey("", "1"), "job 1", summary=None)
    try:
        job = source.fetch(partition, ref, True)
    except TapJobResultsError as exc:
        assert "job 1" in str(exc)
        return
    if job.record is not None and job.payload is not None:
        for row in rows(job):
            json.dumps(row)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_predict_payloads())
def test_any_predict_job_payload_is_synced_or_named_as_malformed(body_server, payload):
    client = ApiClient("cognite", body_server.url, max_retries=0)
    source = cognite.PredictJobs(client, {"project": "p", "entity_matching_jobs": [{"job_id": 1}]}, POLICY)
    _check(source, lambda job: cognite.MatchResultsStream.rows(None, job), body_server, payload)  # type: ignore[arg-type]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "job_status": json_scalars,
            "data": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "id": st.text(max_size=8) | json_scalars,
                        "values": json_values,
                        "confidence": json_scalars,
                        "validation_flags": st.lists(
                            st.text(max_size=5) | st.dictionaries(st.text(max_size=3), json_scalars), max_size=2
                        )
                        | json_values,
                    },
                ),
                max_size=3,
            )
            | json_values,
        },
    )
)
def test_any_talonic_results_payload_is_synced_or_named_as_malformed(body_server, payload):
    client = ApiClient("talonic", body_server.url, max_retries=0)
    source = talonic.ExtractionJobs(client, {}, POLICY)

    def fetch(partition: str, ref: JobRef, want: bool) -> FetchedJob:
        ref.summary = {"id": "j", "status": "completed", "created_at": "2025-01-01T00:00:00Z"}
        return talonic.ExtractionJobs.fetch(source, partition, ref, want)

    source.fetch = fetch  # type: ignore[method-assign]
    _check(source, lambda job: talonic.ExtractionRowsStream.rows(None, job), body_server, payload)  # type: ignore[arg-type]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "job": st.fixed_dictionaries(
                {},
                optional={
                    "jobUuid": st.text(max_size=8) | json_scalars,
                    "status": st.sampled_from(sorted(clavata.TERMINAL)) | json_scalars,
                    "created": st.just("2025-01-01T00:00:00Z") | json_scalars,
                    "completed": st.just("1970-01-01T00:00:00Z") | json_scalars,
                    "results": st.lists(
                        st.fixed_dictionaries({}, optional={"report": json_values, "created": json_scalars}), max_size=3
                    )
                    | json_values,
                },
            )
            | json_values
        },
    )
)
def test_any_clavata_job_payload_is_synced_or_named_as_malformed(body_server, payload):
    client = ApiClient("clavata", body_server.url, max_retries=0)
    source = clavata.ClavataJobs(client, {}, POLICY)
    _check(source, lambda job: clavata.ClavataReportsStream.rows(None, job), body_server, payload)  # type: ignore[arg-type]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.fixed_dictionaries(
        {"status": st.just("Completed"), "jobId": st.just(1)},
        optional={
            "createdTime": st.integers(0, 2**42) | json_scalars,
            "errors": st.lists(st.text(max_size=5), max_size=2) | json_values,
            "matches": st.lists(json_values, max_size=3) | json_values,
            "suggestedRules": st.lists(json_values, max_size=2) | json_values,
            "generatedRules": st.lists(json_values, max_size=2) | json_values,
        },
    )
)
def test_any_pipeline_run_payload_is_synced_or_named_as_malformed(body_server, payload):
    client = ApiClient("cognite", body_server.url, max_retries=0)
    source = cognite.PipelineRuns(client, {"project": "p", "pipeline_ids": [7]}, POLICY)
    streams = (cognite.PipelineMatchesStream, cognite.SuggestedRulesStream, cognite.GeneratedRulesStream)

    def rows(job: FetchedJob) -> t.Iterator[dict]:
        for stream in streams:
            yield from stream.rows(stream.__new__(stream), job)

    _check(source, rows, body_server, payload, partition="7")
