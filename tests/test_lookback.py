"""Late jobs, ties and future dates: a creation-time bookmark that loses nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import run_tap

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class Vendor:
    """One listing-based source, driven the same way whatever the vendor."""

    def __init__(self, apis, name: str) -> None:
        self.apis, self.name = apis, name
        self.pid = apis.cognite.add_pipeline() if name == "cdf runs" else None

    def add(self, created: datetime, status: str | None = None) -> str:
        if self.name == "talonic":
            return self.apis.talonic.add_job(rows=2, created_at=_iso(created), status=status or "completed")
        if self.name == "clavata":
            return self.apis.clavata.add_job(results=2, created=_iso(created), status=status or "JOB_STATUS_COMPLETED")
        return str(
            self.apis.cognite.add_run(self.pid, matches=2, created_ms=_ms(created), status=status or "Completed")
        )

    def config(self, **extra) -> dict:
        sources = {"talonic": ("talonic",), "clavata": ("clavata",), "cdf runs": ("cognite",)}[self.name]
        config = {**self.apis.config(sources=sources), **extra}
        if self.name == "cdf runs":
            config["cognite"]["pipeline_ids"] = [self.pid]
        return config

    def job_ids(self, run) -> list[str]:
        stream, key = {
            "talonic": ("extraction_jobs", "job_id"),
            "clavata": ("clavata_jobs", "job_uuid"),
            "cdf runs": ("pipeline_runs", "run_id"),
        }[self.name]
        return [str(r[key]) for r in run.records(stream)]

    def result_count(self, run) -> int:
        stream = {"talonic": "extraction_rows", "clavata": "clavata_reports", "cdf runs": "pipeline_matches"}[self.name]
        return len(run.records(stream))

    def fetches(self, job_id: str) -> int:
        fake = {"talonic": self.apis.talonic, "clavata": self.apis.clavata, "cdf runs": self.apis.cognite}[self.name]
        return fake.requests(job_id if self.name != "cdf runs" else int(job_id))

    def reset(self) -> None:
        for fake in (self.apis.talonic, self.apis.clavata, self.apis.cognite):
            fake.reset_counters()


VENDORS = ("talonic", "clavata", "cdf runs")


@pytest.mark.parametrize("name", VENDORS)
def test_a_job_listed_late_is_synced_once_by_the_next_run(apis, name):
    vendor = Vendor(apis, name)
    early = [vendor.add(T0 + timedelta(minutes=m)) for m in (0, 1, 2, 3)]
    first = run_tap(vendor.config(), check=True)
    assert sorted(vendor.job_ids(first)) == sorted(early)

    # Created two minutes before the newest job already bookmarked, visible only now.
    late = vendor.add(T0 + timedelta(minutes=1, seconds=30))
    vendor.reset()
    second = run_tap(vendor.config(), state=first.state, check=True)
    assert vendor.job_ids(second) == [late]
    assert vendor.result_count(second) == 2
    assert all(vendor.fetches(job_id) == 0 for job_id in early), "a synced job was fetched again"

    vendor.reset()
    third = run_tap(vendor.config(), state=second.state, check=True)
    assert third.counts() == {}
    assert vendor.fetches(late) == 0


@pytest.mark.parametrize("name", VENDORS)
def test_a_job_with_the_same_creation_time_as_the_mark_is_not_lost(apis, name):
    vendor = Vendor(apis, name)
    newest = T0 + timedelta(minutes=5)
    first_ids = [vendor.add(T0), vendor.add(newest)]
    first = run_tap(vendor.config(), check=True)
    assert sorted(vendor.job_ids(first)) == sorted(first_ids)
    twin = vendor.add(newest)  # same creation time; its ID may sort before or after the mark's
    second = run_tap(vendor.config(), state=first.state, check=True)
    assert vendor.job_ids(second) == [twin]


def test_a_job_later_than_the_window_is_given_up_and_the_window_is_a_setting(apis):
    vendor = Vendor(apis, "clavata")
    vendor.add(T0)
    vendor.add(T0 + timedelta(minutes=30))
    first = run_tap(vendor.config(lookback_window=60), check=True)
    vendor.add(T0 + timedelta(minutes=20))  # 10 min before the mark: outside a 60 s window
    inside = vendor.add(T0 + timedelta(minutes=29, seconds=30))
    second = run_tap(vendor.config(lookback_window=60), state=first.state, check=True)
    assert vendor.job_ids(second) == [inside]


@pytest.mark.parametrize("name", VENDORS)
def test_a_job_dated_in_the_future_does_not_hide_later_jobs(apis, name):
    vendor = Vendor(apis, name)
    vendor.add(T0)
    future = vendor.add(datetime(2099, 1, 1, tzinfo=timezone.utc))
    first = run_tap(vendor.config(), check=True)
    assert future in vendor.job_ids(first)
    later = vendor.add(datetime.now(timezone.utc) - timedelta(seconds=5))
    second = run_tap(vendor.config(), state=first.state, check=True)
    assert vendor.job_ids(second) == [later]
    third = run_tap(vendor.config(), state=second.state, check=True)
    assert third.counts() == {}


def test_a_running_job_inside_the_window_finishes_and_is_emitted_once(apis):
    vendor = Vendor(apis, "talonic")
    vendor.add(T0)
    running = vendor.add(T0 + timedelta(minutes=1), status="processing")
    first = run_tap(vendor.config(), check=True)
    apis.talonic.set_status(running, "completed")
    second = run_tap(vendor.config(), state=first.state, check=True)
    assert vendor.job_ids(second) == [running]
    assert run_tap(vendor.config(), state=second.state, check=True).counts() == {}


def test_state_holds_the_window_not_the_history(apis):
    # 600 jobs ten minutes apart: more than four days of history.
    for n in range(600):
        apis.clavata.add_job(results=1, created=_iso(T0 + timedelta(minutes=10 * n)))
    config = apis.config(sources=("clavata",))
    first = run_tap(config, check=True)
    assert len(first.records("clavata_jobs")) == 600
    bookmark = first.state["bookmarks"]["clavata_jobs"]["job_bookmarks"]["all"]
    assert len(bookmark["seen"]) <= 2 and bookmark["pending"] == []
    size = len(json.dumps(first.state))
    assert size < 2000, size
    for n in range(600, 900):
        apis.clavata.add_job(results=1, created=_iso(T0 + timedelta(minutes=10 * n)))
    second = run_tap(config, state=first.state, check=True)
    assert len(second.records("clavata_jobs")) == 300
    assert len(json.dumps(second.state)) <= size + 64
