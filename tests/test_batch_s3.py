"""BATCH files to an S3-compatible store: moto's S3 server on loopback, the real tap with the `s3` extra
(singer-sdk[s3] -> s3fs), `batch_config.storage.root: s3://bucket/prefix`. The files land in the
bucket, hold every record, and each STATE that bookmarks jobs comes only after the BATCH messages
(and the uploaded files) that carry those jobs' records."""

from __future__ import annotations

import collections
import gzip
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import TAP, parse_messages, populate, run_tap, tap_env

BUCKET = "jobresults-batches"
FAMILIES = {
    "entity_matching_jobs": ("match_results",),
    "pipeline_runs": ("pipeline_matches", "suggested_rules", "generated_rules"),
    "clavata_jobs": ("clavata_reports",),
    "extraction_jobs": ("extraction_rows",),
}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _bucket(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _keys(client) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def _bookmarked(state: dict, stream: str) -> bool:
    return bool(state.get("bookmarks", {}).get(stream, {}).get("job_bookmarks"))


def test_batch_files_land_in_s3_before_the_state_moves(apis, s3_endpoint):
    client = _bucket(s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    populate(apis, unfinished=False)
    config = {
        **apis.config(),
        "batch_config": {
            "encoding": {"format": "jsonl", "compression": "gzip"},
            # The endpoint goes to s3fs through `params`; AWS_ENDPOINT_URL in the environment works too.
            "storage": {
                "root": f"s3://{BUCKET}/hourly",
                "prefix": "jobresults-",
                "params": {"endpoint_url": s3_endpoint},
            },
        },
    }
    messages: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        proc = subprocess.Popen(
            [TAP, "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**tap_env(), **CREDENTIALS},
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        # Read as the tap writes: at each STATE, the files of every BATCH message before it are in the bucket.
        for line in proc.stdout:
            assert time.monotonic() < deadline, "the tap took too long"
            message = parse_messages(line)[0]
            messages.append(message)
            if message["type"] == "STATE":
                announced = {
                    uri.removeprefix(f"s3://{BUCKET}/")
                    for m in messages
                    if m["type"] == "BATCH"
                    for uri in m["manifest"]
                }
                assert announced <= _keys(client)
        stderr = proc.stderr.read() if proc.stderr else ""
        assert proc.wait(timeout=60) == 0, stderr[-3000:]

    batches = [m for m in messages if m["type"] == "BATCH"]
    # Everything goes by BATCH, the run's heartbeat (sync_runs) included.
    assert batches and not [m for m in messages if m["type"] == "RECORD"]
    uris = [uri for m in batches for uri in m["manifest"]]
    assert all(uri.startswith(f"s3://{BUCKET}/hourly/jobresults-") for uri in uris)
    assert {uri.removeprefix(f"s3://{BUCKET}/") for uri in uris} == _keys(client)

    counts: collections.Counter = collections.Counter()
    for message in batches:
        for uri in message["manifest"]:
            body = client.get_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
            counts[message["stream"]] += len(gzip.decompress(body).splitlines())
    assert counts.pop("sync_runs") == 4  # one heartbeat per job stream
    reference = run_tap(apis.config(), check=True).counts()
    assert dict(counts) == reference

    # A job-level stream is bookmarked only in STATE messages after the last BATCH of its family.
    for parent, children in FAMILIES.items():
        family = {parent, *children}
        last_batch = max(i for i, m in enumerate(messages) if m["type"] == "BATCH" and m["stream"] in family)
        first_bookmark = min(
            i for i, m in enumerate(messages) if m["type"] == "STATE" and _bookmarked(m["value"], parent)
        )
        assert first_bookmark > last_batch, parent
