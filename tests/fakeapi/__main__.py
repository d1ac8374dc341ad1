"""Serve the fake APIs on their own, for the demo and the benchmark.

python -m tests.fakeapi serve --scenario demo --config-out output/demo-config.json
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from tests.fakeapi import FakeAPIs


def demo(apis: FakeAPIs) -> dict:
    cdf, clav, tal = apis.cognite, apis.clavata, apis.talonic
    cdf.add_predict_job(items=25, matches_per_item=3)
    cdf.add_predict_job(items=12, matches_per_item=2, job_token="demo-job-token")
    cdf.add_predict_job(items=0, status="Failed", error_message="model 17 not found")
    cdf.add_predict_job(items=8, status="Running")
    for name in ("pumps to assets", "valves to assets"):
        pid = cdf.add_pipeline(name=name)
        cdf.add_run(pid, matches=15, suggested_rules=3, generated_rules=2)
        cdf.add_run(
            pid,
            status="Failed",
            matches=0,
            suggested_rules=0,
            generated_rules=0,
            error_message="source data set is empty",
            errors=["no sources"],
        )
        cdf.add_run(pid, status="Running")
    for n in (4, 6, 2):
        clav.add_job(results=n)
    clav.add_job(results=3, deprecated_result_only=True)
    clav.add_job(status="JOB_STATUS_FAILED", results=0)
    clav.add_job(status="JOB_STATUS_RUNNING", results=5)
    tal.add_job(rows=12)
    tal.add_job(status="complete", rows=8, flags_as_objects=True)
    tal.add_job(status="failed", rows=0)
    tal.add_job(status="processing", rows=10)
    return apis.config(cognite_auth="oauth")


def bench(apis: FakeAPIs) -> dict:
    apis.cognite.add_predict_job(items=100_000, matches_per_item=3)
    apis.talonic.add_job(rows=50_000)
    config = apis.config(cognite_auth="token", sources=("cognite", "talonic"))
    config["cognite"]["pipeline_ids"] = []
    return config


def small(apis: FakeAPIs) -> dict:
    """Many small jobs: 3,000 finished Clavata jobs of 1-3 reports (the per-job overhead benchmark)."""
    for n in range(3000):
        apis.clavata.add_job(results=1 + n % 3)
    return apis.config(sources=("clavata",))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeapi")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--scenario", choices=["demo", "bench", "small"], default="demo")
    parser.add_argument("--config-out", required=True, type=Path)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeAPIs() as apis:
        config = {"demo": demo, "bench": bench, "small": small}[args.scenario](apis)
        for server in apis.servers:
            server.latency = args.latency
        tmp = args.config_out.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        tmp.replace(args.config_out)  # appears whole: readers poll for it
        print("fake APIs ready", file=sys.stderr, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
