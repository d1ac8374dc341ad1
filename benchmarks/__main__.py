"""Throughput and memory of the tap against a floor measured in the same run.

    python -m benchmarks            (or: make bench): large jobs, then many small jobs
    python -m benchmarks large      only the large jobs
    python -m benchmarks small      only the many small jobs
    python -m benchmarks lookback   state size and listing pages per lookback_window (benchmarks/lookback.py)
    python -m benchmarks shards     1, 2 and 4 shards at once, latency-bound (benchmarks/shards.py)
    python -m benchmarks latency    three sources at 100 ms a request, tap vs a concurrent script (benchmarks/latency.py)
    python -m benchmarks.statevolume --jobs 1000000   STATE bytes against record bytes on a long listing

The fake APIs serve one CDF predict job of 100,000 items and one Talonic job of 50,000 rows. The
tap syncs them with stdout to /dev/null. The floor is the least a tap could do: plain `requests`,
stdlib `json.loads`, and `json.dumps` of the same RECORD envelopes, also to /dev/null. Both run as
subprocesses; peak RSS is read from each process's own rusage. The machine varies run to run, so
only the ratios taken in one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAP = Path(sys.executable).parent / "tap-jobresults"

FLOOR = r"""
import json, sys, datetime, requests
config = json.load(open(sys.argv[1]))
out = open("/dev/null", "w")
now = lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()
cdf = config["cognite"]
s = requests.Session()
s.headers["Authorization"] = "Bearer " + cdf["token"]
largest = 0
for job in cdf["entity_matching_jobs"]:
    r = s.get(f"{cdf['base_url']}/api/v1/projects/{cdf['project']}/context/entitymatching/jobs/{job['job_id']}")
    largest = max(largest, len(r.content))
    body = json.loads(r.content)
    for i, item in enumerate(body["items"]):
        matches = item.get("matches") or []
        top = max(matches, key=lambda m: m["score"]) if matches else None
        rec = {"job_id": body["jobId"], "item_index": i, "source": item["source"], "matches": matches,
               "match_count": len(matches), "top_score": top and top["score"], "top_target": top and top["target"]}
        out.write(json.dumps({"type": "RECORD", "stream": "match_results", "record": rec, "time_extracted": now()}) + "\n")
tal = config["talonic"]
s.headers["Authorization"] = "Bearer " + tal["api_key"]
for job in json.loads(s.get(tal["base_url"] + "/v1/jobs").content)["data"]:
    r = s.get(f"{tal['base_url']}/v1/jobs/{job['id']}/results")
    largest = max(largest, len(r.content))
    body = json.loads(r.content)
    for row in body["data"]:
        rec = {"id": row["id"], "job_id": job["id"], "job_status": body.get("job_status"), "document_id": row.get("document_id"),
               "filename": row.get("filename"), "status": row.get("status"), "values": row.get("values"),
               "confidence": row.get("confidence"), "validation_flags": row.get("validation_flags") or []}
        out.write(json.dumps({"type": "RECORD", "stream": "extraction_rows", "record": rec, "time_extracted": now()}) + "\n")
print(largest)
"""


# The same floor with msgspec (the tap's own JSON library) instead of the standard library's json.
MSGSPEC_FLOOR = (
    FLOOR.replace("import json, sys,", "import json, msgspec, sys,")
    .replace('out = open("/dev/null", "w")', 'out = open("/dev/null", "wb")\nencode = msgspec.json.encode')
    .replace("json.loads(r.content)", "msgspec.json.decode(r.content)")
    .replace('out.write(json.dumps({"type": "RECORD"', 'out.write(encode({"type": "RECORD"')
    .replace('"time_extracted": now()}) + "\\n")', '"time_extracted": now()}) + b"\\n")')
)
assert MSGSPEC_FLOOR.count("msgspec.json.decode") == 2 and MSGSPEC_FLOOR.count("encode({") == 2


SMALL_FLOOR = r"""
import json, sys, datetime, requests
from concurrent.futures import ThreadPoolExecutor
from requests.adapters import HTTPAdapter
config = json.load(open(sys.argv[1]))
c = config["clavata"]
out = open("/dev/null", "w")
now = lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()
s = requests.Session()
s.mount("http://", HTTPAdapter(pool_maxsize=10))
s.headers["Authorization"] = "Bearer " + c["api_key"]
ids, token = [], None
while True:
    params = {"pageSize": 500, **({"pageToken": token} if token else {})}
    body = json.loads(s.get(c["base_url"] + "/v1/jobs", params=params).content)
    ids += [j["jobUuid"] for j in body.get("jobs") or []]
    token = body.get("nextPageToken")
    if not token:
        break
get = lambda i: json.loads(s.get(f"{c['base_url']}/v1/jobs/{i}").content)["job"]
with ThreadPoolExecutor(8) as pool:
    for job in pool.map(get, ids):
        results = job.get("results") or []
        for i, res in enumerate(results):
            rep = res.get("report") or {}
            rec = {"job_uuid": job["jobUuid"], "result_index": i, "content_hash": rep.get("contentHash"),
                   "policy_id": rep.get("policyId"), "outcome": (rep.get("reviewResult") or {}).get("outcome"),
                   "score": (rep.get("reviewResult") or {}).get("score"), "created": res.get("created"),
                   "section_evaluation_reports": rep.get("sectionEvaluationReports")}
            out.write(json.dumps({"type": "RECORD", "stream": "clavata_reports", "record": rec, "time_extracted": now()}) + "\n")
        rec = {k: job.get(k) for k in ("jobUuid", "status", "customerId", "policyId", "created", "completed")}
        rec["result_count"] = len(results)
        out.write(json.dumps({"type": "RECORD", "stream": "clavata_jobs", "record": rec, "time_extracted": now()}) + "\n")
print(len(ids))
"""


def _run(argv: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes, stdout of one subprocess."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed with exit status {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss * 1024, out.decode()


def _serve(tmp: str, scenario: str) -> tuple[subprocess.Popen, Path]:
    config_path = Path(tmp) / f"config-{scenario}.json"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "serve", "--scenario", scenario, "--config-out", str(config_path)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not config_path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    json.loads(config_path.read_text())
    return server, config_path


def compile_the_tap() -> None:
    """Byte-compile the tap's package, as `pip install` does for an installed tap. An editable install
    (this checkout) is compiled on every start where PYTHONDONTWRITEBYTECODE is set (this machine sets
    it): about 70 ms of each run that no user's installed tap spends."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "tap_jobresults")], check=True)


def _compare(tmp: str, config_path: Path, floors: dict[str, str], repeat: int) -> tuple[list, dict, str]:
    """Interleaved runs of each floor script and the tap (stdout to /dev/null): (tap runs, runs per floor,
    the first floor's output)."""
    compile_the_tap()
    scripts = {}
    for index, (name, source) in enumerate(floors.items()):
        scripts[name] = Path(tmp) / f"floor{index}.py"
        scripts[name].write_text(source)
    tap_sh = Path(tmp) / "tap.sh"
    tap_sh.write_text(f'exec "{TAP}" --config "{config_path}" > /dev/null\n')
    first = next(iter(scripts.values()))
    _run([sys.executable, str(first), str(config_path)])  # warm the server's caches
    tap_runs: list = []
    floor_runs: dict[str, list] = {name: [] for name in scripts}
    out = ""
    for _ in range(repeat):
        for name, script in scripts.items():
            seconds, rss, printed = _run([sys.executable, str(script), str(config_path)])
            floor_runs[name].append((seconds, rss))
            out = out or printed
        seconds, rss, _ = _run(["bash", str(tap_sh)])
        tap_runs.append((seconds, rss))
    return tap_runs, floor_runs, out


def large(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, config_path = _serve(tmp, "bench")
        try:
            floors = {"floor (requests+json)": FLOOR, "floor (requests+msgspec)": MSGSPEC_FLOOR}
            tap_runs, floor_runs, out = _compare(tmp, config_path, floors, repeat)
            largest = int(out.strip() or 0)
        finally:
            server.terminate()
            server.wait(timeout=30)

    records = 100_000 + 50_000
    mib = 1024 * 1024
    tap_s = statistics.median(s for s, _ in tap_runs)
    tap_rss = max(r for _, r in tap_runs)
    print("== large jobs: one CDF predict job of 100,000 items, one Talonic job of 50,000 rows")
    for name, runs in floor_runs.items():
        floor_s = statistics.median(s for s, _ in runs)
        floor_rss = max(r for _, r in runs)
        print(f"{name:<26}{records / floor_s:>10,.0f} rec/s   {floor_s:6.2f} s   peak RSS {floor_rss / mib:6.0f} MiB")
    print(
        f"tap-jobresults            {records / tap_s:>10,.0f} rec/s   {tap_s:6.2f} s   peak RSS {tap_rss / mib:6.0f} MiB"
    )
    json_s, msgspec_s = (statistics.median(s for s, _ in runs) for runs in floor_runs.values())
    print(f"ratio tap/json floor      {json_s / tap_s:>10.2f}x  (target >= 0.8)")
    print(f"ratio tap/msgspec floor   {msgspec_s / tap_s:>10.2f}x  (target >= 1.0)")
    print(f"largest response body     {largest / mib:>10.1f} MiB")
    print(f"tap peak RSS / largest    {tap_rss / largest:>10.2f}x  (target <= 3)")
    print(f"runs: {repeat} of each, medians; tap times include interpreter start-up")


def small(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, config_path = _serve(tmp, "small")
        try:
            tap_runs, floor_runs, out = _compare(tmp, config_path, {"script": SMALL_FLOOR}, repeat)
            jobs = int(out.strip() or 0)
        finally:
            server.terminate()
            server.wait(timeout=30)
    tap_s = statistics.median(s for s, _ in tap_runs)
    floor_s = statistics.median(s for s, _ in floor_runs["script"])
    print(f"== many small jobs: {jobs:,} finished Clavata jobs of 1-3 reports, 8 requests in flight")
    print(f"hand-written script       {jobs / floor_s:>10,.0f} jobs/s  {floor_s:6.2f} s  (requests + json, 8 threads)")
    print(f"tap-jobresults            {jobs / tap_s:>10,.0f} jobs/s  {tap_s:6.2f} s")
    print(f"ratio tap/script          {floor_s / tap_s:>10.2f}x  (target >= 0.9)")
    print(f"runs: {repeat} of each, medians; both times include interpreter start-up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", choices=["all", "large", "small"], default="all")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; medians are reported")
    args = parser.parse_args()
    if args.scenario in ("all", "large"):
        large(args.repeat)
    if args.scenario in ("all", "small"):
        small(args.repeat)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["lookback"]:
        from benchmarks.lookback import main as lookback

        sys.exit(lookback(sys.argv[2:]))
    if sys.argv[1:2] == ["latency"]:
        from benchmarks.latency import main as latency

        sys.exit(latency(sys.argv[2:]))
    if sys.argv[1:2] == ["shards"]:
        from benchmarks.shards import main as shards

        sys.exit(shards(sys.argv[2:]))
    sys.exit(main())
