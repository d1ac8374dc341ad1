"""What an operator reads: one progress line per source at most every 10 s, and a summary at the end.

Per-job lines are at DEBUG. At INFO a run of any size writes a few lines per source plus the
summary table, so the log of a cron job shows what happened without scrolling.
"""

from __future__ import annotations

import collections
import logging
import time
import typing as t
import uuid
from datetime import datetime, timezone

if t.TYPE_CHECKING:
    from tap_jobresults.sources.base import JobSource

logger = logging.getLogger("tap-jobresults")

PROGRESS_EVERY = 10.0  # seconds


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SourceRun:
    """The counts of one job-level stream over one run."""

    def __init__(self, reporter: Reporter, stream: str, source: JobSource) -> None:
        self.reporter = reporter
        self.stream = stream
        self.source = source
        self.started_at = _now_iso()
        self.finished_at: str | None = None
        self.t0 = time.monotonic()
        self.duration = 0.0
        self.to_do = 0
        self.synced = 0
        self.still_running = 0
        self.failed = 0
        self.missing = 0
        self.record_counts: collections.Counter[str] = collections.Counter()
        self.reached_source = False
        self.source_failed = False
        self.listing_failed = False
        self._last_progress = self.t0

    # -- events --------------------------------------------------------------------------------------

    def listed(self, count: int) -> None:
        self.reached_source = True
        self.to_do += count

    def records(self, stream: str, count: int) -> None:
        self.record_counts[stream] += count

    def job_done(self, finished: bool) -> None:
        if finished:
            self.synced += 1
        else:
            self.still_running += 1

    def job_failed(self) -> None:
        self.failed += 1

    def job_missing(self) -> None:
        self.missing += 1

    def failed_source(self) -> None:
        """The source stopped (its failure is reported by the failures list, by name)."""
        self.source_failed = True

    def failed_listing(self) -> None:
        self.listing_failed = True

    @property
    def done(self) -> int:
        return self.synced + self.still_running + self.failed + self.missing

    def progress(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY and not final:
            return
        self._last_progress = now
        elapsed = now - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.to_do - self.done) / rate if rate > 0 else float("nan")
        logger.info(
            "%s: %d/%d jobs, %d records, %.0f jobs/s, %s",
            self.source.name,
            self.done,
            self.to_do,
            sum(self.record_counts.values()),
            rate,
            f"done in {_duration(elapsed)}" if final else f"about {_duration(left)} left",
        )

    # -- results -------------------------------------------------------------------------------------

    @property
    def status(self) -> str:
        if self.source_failed:
            return "failed"
        if self.failed or self.listing_failed:
            return "partial"
        return "ok"

    def heartbeat(self) -> dict[str, t.Any]:
        shard = self.source.policy.shard
        return {
            "run_id": self.reporter.run_id,
            "job_stream": self.stream,
            "source": self.source.setting,
            "shard": f"{shard.index}/{shard.count}" if shard else None,
            "started_at": self.started_at,
            "finished_at": self.finished_at or _now_iso(),
            "jobs_listed": self.to_do,
            "jobs_synced": self.synced,
            "jobs_pending": self.still_running,
            "jobs_failed": self.failed,
            "jobs_missing": self.missing,
            "records": sum(self.record_counts.values()),
            "status": self.status,
            "extra_fields": None,
        }


class Reporter:
    def __init__(self) -> None:
        self.run_id = str(uuid.uuid4())
        self.runs: list[SourceRun] = []

    def start(self, stream: str, source: JobSource) -> SourceRun:
        logger.info("%s: syncing (stream %s)", source.name, stream)
        run = SourceRun(self, stream, source)
        self.runs.append(run)
        return run

    def finish(self, run: SourceRun) -> None:
        run.finished_at = _now_iso()
        run.duration = time.monotonic() - run.t0
        if run.reached_source and run.to_do:
            run.progress(final=True)

    def summary(self) -> str:
        records: collections.Counter[str] = collections.Counter()
        for run in self.runs:
            records.update(run.record_counts)
        lines = ["Sync summary:"]
        lines.append(
            f"  {'source':<28} {'jobs':>7} {'synced':>7} {'running':>7} {'failed':>7} {'gone':>7} {'time':>8}  status"
        )
        for run in self.runs:
            lines.append(
                f"  {run.source.name:<28} {run.to_do:>7} {run.synced:>7} {run.still_running:>7} "
                f"{run.failed:>7} {run.missing:>7} {run.duration:>7.1f}s  {run.status}"
            )
        if records:
            lines.append(f"  {'stream':<28} {'records':>7}")
            for stream, count in sorted(records.items()):
                lines.append(f"  {stream:<28} {count:>7}")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
