"""STATE volume against record volume on a long listing.

    python -m benchmarks.statevolume --jobs 1000000

A purpose-made Talonic-like server on loopback lists N queued jobs, newest first, 100 a page,
generated on the fly (no memory per job). Queued jobs are synced from their listing alone (no
fetch per job), and each stays pending in the bookmark: the worst case for STATE size, since
every STATE carries every pending job. The tap's stdout is read as it comes and its STATE and
RECORD bytes are counted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

TAP = Path(sys.executable).parent / "tap-jobresults"
START = datetime(2025, 6, 1, tzinfo=timezone.utc)


class LazyListing:
    """GET /v1/jobs?limit=&cursor= over `jobs` queued jobs, computed per page."""

    def __init__(self, jobs: int, delay: float = 0.0, per_page: int | None = None) -> None:
        self.jobs = jobs
        self.per_page = per_page  # jobs a page, whatever the limit asked (None: the limit)
        self.delay = delay  # seconds per page: a long run, for a tap that writes STATE by the clock
        self._server: ThreadingHTTPServer | None = None

    def page(self, cursor: int, limit: int) -> bytes:
        end = min(self.jobs, cursor + limit)
        data = [
            {
                "id": f"job-{i:08d}",
                "name": f"batch {i}",
                "status": "queued",
                "created_at": (START - timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "document_count": 1,
            }
            for i in range(cursor, end)
        ]
        more = end < self.jobs
        pagination = {"has_more": more, "next_cursor": str(end) if more else None, "limit": limit}
        return json.dumps({"data": data, "pagination": pagination}).encode()

    def __enter__(self) -> LazyListing:
        listing = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: t.Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if parts.path != "/v1/jobs":
                    body, status = b'{"statusCode": 404, "error": "Not Found", "message": "no such job"}', 404
                else:
                    cursor = int(query.get("cursor", ["0"])[0])
                    limit = listing.per_page or int(query.get("limit", ["100"])[0])
                    body, status = listing.page(cursor, limit), 200
                    time.sleep(listing.delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"


def measure(jobs: int) -> dict[str, float]:
    with LazyListing(jobs) as server, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        pages = jobs // 100 + 2
        config.write_text(
            json.dumps({"talonic": {"base_url": server.url, "api_key": "lazy-listing-key"}, "max_listing_pages": pages})
        )
        started = time.monotonic()
        proc = subprocess.Popen([str(TAP), "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        counts = {"state_bytes": 0, "states": 0, "record_bytes": 0, "records": 0}
        for line in proc.stdout:
            if line.startswith(b'{"type":"STATE"'):
                counts["state_bytes"] += len(line)
                counts["states"] += 1
            elif line.startswith(b'{"type":"RECORD"'):
                counts["record_bytes"] += len(line)
                counts["records"] += 1
        proc.wait()
        return {**counts, "exit": proc.returncode, "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    result = measure(args.jobs)
    ratio = result["state_bytes"] / max(1, result["record_bytes"])
    print(
        f"{args.jobs} listed jobs: {result['records']} records ({result['record_bytes'] / 1e6:.1f} MB), "
        f"{result['states']} STATE messages ({result['state_bytes'] / 1e6:.1f} MB): STATE/records = {ratio:.2f}; "
        f"exit {result['exit']}, {result['seconds']} s"
    )
    return 0 if ratio <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
