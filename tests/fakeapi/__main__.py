"""Serve the fake APIs on their own: for trying every recipe of the docs without credentials (`make fake-api`),
for the demo and for the benchmark.

    python -m tests.fakeapi serve                      # ports 8781-8784, files in output/fake-api/
    python -m tests.fakeapi serve --port 9100 --out-dir /tmp/fake --scenario small

It writes, and prints the paths of:
    config.json    the tap's config for these servers (`tap-jobresults --config output/fake-api/config.json`)
    tap.env        the same as environment variables for `tap-jobresults --config ENV`
                   (TAP_JOBRESULTS_TALONIC='{"base_url": ..., "api_key": ...}': one JSON object per source)
    meltano.env    Meltano's names for the same settings (TAP_JOBRESULTS_TALONIC_API_KEY=..., one per setting)
and serves until Ctrl-C / SIGTERM. The data is the same at every start (`--seed`): the same job IDs and rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from tests.fakeapi import FakeAPIs
from tests.fakeapi.base import seed_uuids


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


PORT = 8781  # identity provider; CDF, Clavata and Talonic on the next three ports
OUT_DIR = Path("output") / "fake-api"


def _env_line(name: str, value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{name}={shlex.quote(text)}"


def tap_env(config: dict) -> str:
    """`--config ENV`: the SDK reads TAP_JOBRESULTS_<TOP-LEVEL SETTING>, an object as one JSON value."""
    return "".join(_env_line(f"TAP_JOBRESULTS_{key.upper()}", value) + "\n" for key, value in config.items())


def meltano_env(config: dict) -> str:
    """Meltano's names: TAP_JOBRESULTS_ + the dotted setting name in capitals, dots as underscores."""
    lines = []
    for source, settings in config.items():
        for key, value in settings.items():
            lines.append(_env_line(f"TAP_JOBRESULTS_{source.upper()}_{key.upper()}", value))
    return "".join(line + "\n" for line in lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # appears whole: readers poll for it


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeapi", description=__doc__)
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--scenario", choices=["demo", "bench", "small"], default="demo")
    parser.add_argument(
        "--port",
        type=int,
        help=f"first of four ports (default $FAKE_API_PORT or {PORT}; 0, and the default with --config-out: free ports)",
    )
    parser.add_argument(
        "--out-dir", type=Path, help=f"where config.json, tap.env and meltano.env go (default {OUT_DIR})"
    )
    parser.add_argument(
        "--config-out", type=Path, help="only write the tap config, here (the demo, the benchmark, the tests)"
    )
    parser.add_argument("--seed", type=int, default=7, help="the same data at every start (default 7)")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    if args.port is None:
        args.port = 0 if args.config_out else int(os.environ.get("FAKE_API_PORT", PORT))
    if args.out_dir is None and not args.config_out:
        args.out_dir = OUT_DIR

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    seed_uuids(args.seed)
    apis = FakeAPIs()
    try:
        apis.start(args.port)
    except OSError as exc:
        print(
            f"fake APIs: cannot listen on 127.0.0.1:{args.port}-{args.port + 3} ({exc.strerror}); "
            "is `make fake-api` already running? Pick other ports with FAKE_API_PORT=9100 (or --port)",
            file=sys.stderr,
        )
        apis.__exit__(None, None, None)
        return 1
    try:
        config = {"demo": demo, "bench": bench, "small": small}[args.scenario](apis)
        for server in apis.servers:
            server.latency = args.latency
        files = {
            "config.json": json.dumps(config, indent=2) + "\n",
            "tap.env": tap_env(config),
            "meltano.env": meltano_env(config),
        }
        if args.out_dir:
            print(
                f"fake APIs ({args.scenario}) on 127.0.0.1: identity provider {apis.idp.base_url}, "
                f"CDF {apis.cognite.base_url}, Clavata {apis.clavata.base_url}, Talonic {apis.talonic.base_url}",
                file=sys.stderr,
            )
            args.out_dir.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                _write(args.out_dir / name, text)
            out = args.out_dir
            print(
                f"  tap config:   {out / 'config.json'}   (tap-jobresults --config {out / 'config.json'})\n"
                f"  tap env vars: {out / 'tap.env'}       (set -a; . {out / 'tap.env'}; set +a; "
                "tap-jobresults --config ENV)\n"
                f"  Meltano:      {out / 'meltano.env'}   (set -a; . {out / 'meltano.env'}; set +a)\n"
                "Ctrl-C stops them.",
                file=sys.stderr,
            )
        if args.config_out:
            args.config_out.parent.mkdir(parents=True, exist_ok=True)
            _write(args.config_out, files["config.json"])
        print("fake APIs ready", file=sys.stderr, flush=True)
        while not stop.wait(0.5):  # a timed wait: the signal handler never finds the event's lock taken
            pass
    finally:
        apis.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
