"""Throughput of 1, 2 and 4 shards started together, latency-bound, in one run.

    python -m benchmarks shards [--latency 0.05] [--jobs 150] [--concurrency 4]

The fake APIs (in this process, on loopback) answer every request after `--latency` seconds and hold
`--jobs` small finished jobs of each of Clavata and Talonic plus as many configured CDF predict jobs.
For N in 1, 2, 4 the benchmark starts N tap processes at once (`shard: {index: i, count: N}`; N=1 runs
without `shard`), each with `max_concurrent_requests` = `--concurrency` and stdout to /dev/null, and
times until the last one exits. It checks that the shards together fetched every job exactly once
(the fake's per-job request counters) and reports jobs per second and the speed-up over one instance.
Listings are read by every shard, so their requests grow with N; the machine varies between runs,
so only the ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAP = Path(sys.executable).parent / "tap-jobresults"


def _round(apis, base: dict, count: int, concurrency: int, tmp: Path) -> tuple[float, int, int]:
    """Wall seconds for `count` shards at once; job fetches and listing requests across them."""
    for server in (apis.cognite, apis.clavata, apis.talonic):
        server.reset_counters()
    procs = []
    started = time.perf_counter()
    for index in range(count):
        config = {**base, "max_concurrent_requests": concurrency}
        if count > 1:
            config["shard"] = {"index": index, "count": count}
        path = tmp / f"config-{count}-{index}.json"
        path.write_text(json.dumps(config))
        procs.append(
            subprocess.Popen([str(TAP), "--config", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    for proc in procs:
        if proc.wait(timeout=1800) != 0:
            raise SystemExit(f"a shard of {count} exited {proc.returncode}")
    elapsed = time.perf_counter() - started
    fetches = {}
    requests = 0
    for server in (apis.cognite, apis.clavata, apis.talonic):
        for job, n in server.counts.items():
            fetches[(server.name, job)] = n
        requests += len(server.request_log)
    return elapsed, sum(fetches.values()), requests - sum(fetches.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks shards", description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake waits before each answer")
    parser.add_argument("--jobs", type=int, default=150, help="jobs per source (Clavata, Talonic, CDF predict)")
    parser.add_argument("--concurrency", type=int, default=4, help="max_concurrent_requests of each instance")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from tests.fakeapi import FakeAPIs

    with FakeAPIs() as apis, tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.jobs):
            apis.clavata.add_job(results=2)
            apis.talonic.add_job(rows=2)
            apis.cognite.add_predict_job(items=2, matches_per_item=1)
        base = apis.config(cognite_auth="token")
        base["cognite"]["pipeline_ids"] = []
        for server in apis.servers:
            server.latency = args.latency
        results = {n: _round(apis, base, n, args.concurrency, Path(tmp)) for n in (1, 2, 4)}

    jobs = 3 * args.jobs
    one = results[1][0]
    print(
        f"{jobs} jobs (3 sources), {args.latency * 1000:.0f} ms per request, max_concurrent_requests {args.concurrency}"
    )
    for n, (seconds, fetches, listing) in results.items():
        print(
            f"{n} shard{'s' if n > 1 else ' '}   {seconds:6.2f} s   {jobs / seconds:7.1f} jobs/s   "
            f"speed-up {one / seconds:4.2f}x   job fetches {fetches}   listing requests {listing}"
        )
    fetches = {n: r[1] for n, r in results.items()}
    if len(set(fetches.values())) != 1:
        print(f"warning: job fetches differ between rounds: {fetches}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
