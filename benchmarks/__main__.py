"""Throughput and memory of the tap against a floor measured in the same run.

    python -m benchmarks            (or: make bench)
    python -m benchmarks shards     1, 2 and 4 shards at once, latency-bound (benchmarks/shards.py)

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; medians are reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.fakeapi", "serve", "--scenario", "bench", "--config-out", str(config_path)],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while not config_path.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            json.loads(config_path.read_text())
            floor_script = Path(tmp) / "floor.py"
            floor_script.write_text(FLOOR)
            tap_out = Path(tmp) / "tap.sh"
            tap_out.write_text(f'exec "{TAP}" --config "{config_path}" > /dev/null\n')

            # Warm the server's caches once (it serialises each job on first request).
            _run([sys.executable, str(floor_script), str(config_path)])
            tap_runs, floor_runs = [], []
            largest = 0
            for _ in range(args.repeat):
                seconds, rss, out = _run([sys.executable, str(floor_script), str(config_path)])
                floor_runs.append((seconds, rss))
                largest = int(out.strip() or 0)
                seconds, rss, _ = _run(["bash", str(tap_out)])
                tap_runs.append((seconds, rss))
        finally:
            server.terminate()
            server.wait(timeout=30)

    records = 100_000 + 50_000
    tap_s = statistics.median(s for s, _ in tap_runs)
    floor_s = statistics.median(s for s, _ in floor_runs)
    tap_rss = max(r for _, r in tap_runs)
    floor_rss = max(r for _, r in floor_runs)
    mib = 1024 * 1024
    print(f"records per run           {records:,} (+ 2 job records for the tap)")
    print(
        f"floor (requests+json)     {records / floor_s:>10,.0f} rec/s   {floor_s:6.2f} s   peak RSS {floor_rss / mib:6.0f} MiB"
    )
    print(
        f"tap-jobresults            {records / tap_s:>10,.0f} rec/s   {tap_s:6.2f} s   peak RSS {tap_rss / mib:6.0f} MiB"
    )
    print(f"ratio tap/floor           {floor_s / tap_s:>10.2f}x  (target >= 0.8)")
    print(f"largest response body     {largest / mib:>10.1f} MiB")
    print(f"tap peak RSS / largest    {tap_rss / largest:>10.2f}x  (target <= 3)")
    print(f"runs: {args.repeat} of each, medians; tap times include interpreter start-up")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["shards"]:
        from benchmarks.shards import main as shards

        sys.exit(shards(sys.argv[2:]))
    sys.exit(main())
