"""Three sources at a real API's latency: the tap against a hand-written concurrent script, in one run.

    python -m benchmarks latency [--latency 0.1] [--jobs 400] [--concurrency 8] [--repeat 3]

The fake APIs (in this process, on loopback) answer every request after `--latency` seconds and hold
`--jobs` finished Clavata jobs (1-2 reports), as many finished Talonic jobs (1-2 rows) and as many
configured CDF predict jobs (2 items). The script is what a competent engineer would write in an
afternoon: `requests` + `json`, one thread per source and `--concurrency` fetch threads per source,
all sources at once, every record encoded as a Singer RECORD to /dev/null. The tap runs with
`max_concurrent_requests` = `--concurrency`, stdout to /dev/null. Both run as subprocesses, taken
in turns; both times include interpreter start-up. Each side must fetch every job exactly once
(the fake's per-job counters). The machine varies between runs: only the ratio means anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAP = Path(sys.executable).parent / "tap-jobresults"

SCRIPT = r"""
import json, sys, datetime, threading, requests
from concurrent.futures import ThreadPoolExecutor
config = json.load(open(sys.argv[1]))
width = int(sys.argv[2])
out = open("/dev/null", "w")
lock = threading.Lock()
now = lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()
def emit(stream, rec):
    line = json.dumps({"type": "RECORD", "stream": stream, "record": rec, "time_extracted": now()}) + "\n"
    with lock:
        out.write(line)
def session(token):
    s = requests.Session()
    s.headers["Authorization"] = "Bearer " + token
    a = requests.adapters.HTTPAdapter(pool_maxsize=width + 2)
    s.mount("http://", a)
    return s

def cognite():
    cdf = config["cognite"]
    s = session(cdf["token"])
    base = f"{cdf['base_url']}/api/v1/projects/{cdf['project']}/context/entitymatching/jobs/"
    def one(job_id):
        body = json.loads(s.get(base + str(job_id)).content)
        for i, item in enumerate(body.get("items") or []):
            emit("match_results", {"job_id": body["jobId"], "item_index": i, **item})
        emit("entity_matching_jobs", {k: v for k, v in body.items() if k != "items"})
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(one, [j["job_id"] for j in cdf["entity_matching_jobs"]]))

def clavata():
    c = config["clavata"]
    s = session(c["api_key"])
    ids, token = [], None
    while True:
        body = json.loads(s.get(c["base_url"] + "/v1/jobs", params={"pageSize": 500, **({"pageToken": token} if token else {})}).content)
        ids += [j["jobUuid"] for j in body.get("jobs") or []]
        token = body.get("nextPageToken")
        if not token:
            break
    def one(job_id):
        job = json.loads(s.get(f"{c['base_url']}/v1/jobs/{job_id}").content)["job"]
        for i, result in enumerate(job.get("results") or []):
            emit("clavata_reports", {"job_uuid": job_id, "result_index": i, **result})
        emit("clavata_jobs", {k: v for k, v in job.items() if k != "results"})
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(one, ids))

def talonic():
    t = config["talonic"]
    s = session(t["api_key"])
    ids, cursor = [], None
    while True:
        body = json.loads(s.get(t["base_url"] + "/v1/jobs", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).content)
        for job in body["data"]:
            ids.append(job["id"])
            emit("extraction_jobs", job)
        cursor = body["pagination"].get("next_cursor")
        if not body["pagination"].get("has_more") or not cursor:
            break
    def one(job_id):
        body = json.loads(s.get(f"{t['base_url']}/v1/jobs/{job_id}/results").content)
        for row in body.get("data") or []:
            emit("extraction_rows", {"job_id": job_id, **row})
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(one, ids))

threads = [threading.Thread(target=f) for f in (cognite, clavata, talonic)]
for th in threads:
    th.start()
for th in threads:
    th.join()
"""


def _world(apis, jobs: int) -> None:
    for i in range(jobs):
        apis.clavata.add_job(results=1 + i % 2)
        apis.talonic.add_job(rows=1 + i % 2)
        apis.cognite.add_predict_job(items=2, matches_per_item=1)


def _counts(apis) -> dict[str, int]:
    return {server.name: sum(server.counts.values()) for server in (apis.cognite, apis.clavata, apis.talonic)}


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:2]} exited {proc.returncode}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks latency", description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the fakes wait before each answer")
    parser.add_argument("--jobs", type=int, default=400, help="jobs per source")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per source, both sides")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; medians are reported")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from benchmarks.__main__ import compile_the_tap
    from tests.fakeapi import FakeAPIs

    with FakeAPIs() as apis, tempfile.TemporaryDirectory() as tmp:
        _world(apis, args.jobs)
        config = apis.config(cognite_auth="token")
        config["cognite"]["pipeline_ids"] = []
        config["max_concurrent_requests"] = args.concurrency
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        script = Path(tmp) / "script.py"
        script.write_text(SCRIPT)
        for server in (apis.cognite, apis.clavata, apis.talonic):
            server.latency = args.latency
        expected = {"cognite": args.jobs, "clavata": args.jobs, "talonic": args.jobs}
        tap_times, script_times = [], []
        compile_the_tap()
        for _ in range(args.repeat):
            for server in (apis.cognite, apis.clavata, apis.talonic):
                server.reset_counters()
            script_times.append(_timed([sys.executable, str(script), str(path), str(args.concurrency)]))
            if _counts(apis) != expected:
                raise SystemExit(f"the script fetched {_counts(apis)}, expected {expected}")
            for server in (apis.cognite, apis.clavata, apis.talonic):
                server.reset_counters()
            tap_times.append(_timed([str(TAP), "--config", str(path)]))
            if _counts(apis) != expected:
                raise SystemExit(f"the tap fetched {_counts(apis)}, expected {expected}")
    tap_s, script_s = statistics.median(tap_times), statistics.median(script_times)
    total = 3 * args.jobs
    print(
        f"== {total} finished jobs in three sources ({args.jobs} Clavata, {args.jobs} Talonic with 1-2 rows, "
        f"{args.jobs} CDF predict jobs), {args.latency * 1000:.0f} ms a request, {args.concurrency} in flight per source"
    )
    print(
        f"hand-written script       {total / script_s:>8.1f} jobs/s  {script_s:6.2f} s  (requests + json, all sources at once)"
    )
    print(f"tap-jobresults            {total / tap_s:>8.1f} jobs/s  {tap_s:6.2f} s")
    print(f"ratio tap/script          {script_s / tap_s:>8.2f}x  (target >= 0.8)")
    print(
        f"runs: {args.repeat} of each, medians: tap {sorted(round(x, 2) for x in tap_times)}, "
        f"script {sorted(round(x, 2) for x in script_times)}; every job fetched once by each"
    )
    return 0
