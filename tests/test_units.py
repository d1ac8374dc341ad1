"""Unit tests of the small pieces the end-to-end tests rest on."""

from __future__ import annotations

import logging
import sys
import time
import types
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_jobresults.client import parse_reset, parse_retry_after
from tap_jobresults.errors import ApiError
from tap_jobresults.lifecycle import Bookmark, FetchedJob, JobKey, JobRef, Policy, iso
from tap_jobresults.scrub import SecretRegistry
from tap_jobresults.sources.base import Listing

POLICY = Policy(run_started="2024-06-01T00:00:00.000000Z", lookback=86400)


def test_iso_normalises_every_vendor_timestamp():
    assert iso(1730204346000) == "2024-10-29T12:19:06.000000Z"
    assert iso("2023-11-07T05:31:56Z") == "2023-11-07T05:31:56.000000Z"
    assert iso("2023-11-07T06:31:56.123456789+01:00") == "2023-11-07T05:31:56.123456Z"
    assert iso("1970-01-01T00:00:00Z") is None  # unset protobuf timestamp
    assert iso(0) is None and iso(None) is None and iso("") is None
    with pytest.raises(ValueError, match="not an ISO 8601"):
        iso("yesterday")


def test_iso_strings_sort_in_time_order():
    values = ["2024-01-01T00:00:00Z", "2023-12-31T23:00:00-02:00", "2024-01-01T00:00:00.5Z"]
    assert sorted(iso(v) for v in values) == [  # written out: not built with the function under test
        "2024-01-01T00:00:00.000000Z",
        "2024-01-01T00:00:00.500000Z",
        "2024-01-01T01:00:00.000000Z",
    ]


moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc))
offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))


def _spell(moment: datetime, offset: timezone, form: int) -> str | int:
    """One moment in the spellings vendors use: ms epoch, RFC 3339 with an offset or Z, with or
    without fractions, up to 9 fractional digits."""
    local = moment.astimezone(offset)
    if form == 0:
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        return (moment - epoch) // timedelta(milliseconds=1) if moment.microsecond % 1000 == 0 else local.isoformat()
    if form == 1:
        return local.isoformat()
    if form == 2:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # nanoseconds: Go's time
    return local.replace(microsecond=0).isoformat() if moment.microsecond == 0 else local.isoformat()


@settings(max_examples=500)
@given(st.lists(st.tuples(moments, offsets, st.integers(0, 3)), min_size=2, max_size=6))
def test_iso_is_utc_and_sorts_as_the_moments_do(spelled):
    """iso() of any spelling is the moment itself in UTC, and its strings sort as the moments do."""
    for moment, offset, form in spelled:
        text = iso(_spell(moment, offset, form))
        assert text is not None and len(text) == 27 and text.endswith("Z")
        assert datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) == moment
    pairs = [(moment, iso(_spell(moment, offset, form))) for moment, offset, form in spelled]
    assert [text for _, text in sorted(pairs, key=lambda pair: pair[0])] == sorted(text for _, text in pairs)


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("3") == 3.0
    now = time.time()
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 10))
    assert 8 <= parse_retry_after(http_date, now=now) <= 10.5
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_ratelimit_reset_accepts_epoch_and_iso():
    now = 1_700_000_000.0
    assert parse_reset(str(int(now + 5)), now=now) == 5
    assert parse_reset("2023-11-14T22:13:25Z", now=now) == pytest.approx(5, abs=1)
    assert parse_reset(str(int((now + 5) * 1000)), now=now) == pytest.approx(5)
    assert parse_reset("garbage", now=now) is None


def test_secret_registry_scrubs_longest_first():
    registry = SecretRegistry()
    registry.add("abcd")
    registry.add("abcdef-long")
    assert registry.scrub("x abcdef-long y abcd") == "x *** y ***"


def test_api_error_names_source_job_status_code_and_request_id():
    error = ApiError(
        "talonic", "Talonic job 42", status=503, code="unavailable", message="try later", request_id="req_1"
    )
    assert str(error) == "talonic: Talonic job 42 failed, HTTP 503, code unavailable: try later (request id req_1)"


def test_bookmark_advances_past_unfinished_jobs_by_remembering_them():
    state: dict = {}
    bookmark = Bookmark(state, POLICY)
    bookmark.advance(JobKey("2024-01-01", "a"), done=True)
    bookmark.advance(JobKey("2024-01-02", "b"), done=False)
    bookmark.advance(JobKey("2024-01-03", "c"), done=True)
    assert state["hwm"] == ["2024-01-03", "c"] and state["pending"] == [["b", "2024-01-02"]]
    assert state["seen"] == [["a", "2024-01-01"], ["c", "2024-01-03"]]
    bookmark.advance(JobKey("2024-01-02", "b"), done=True)
    assert state["pending"] == [] and ["b", "2024-01-02"] in state["seen"]
    assert bookmark.synced(JobKey("2024-01-03", "c")) and not bookmark.synced(JobKey("2024-01-03", "d"))


def test_bookmark_keeps_only_the_window_of_seen_jobs():
    state: dict = {}
    bookmark = Bookmark(state, Policy(run_started="2024-06-01T00:00:00.000000Z", lookback=600))
    for minute in range(0, 60, 5):
        bookmark.advance(JobKey(f"2024-01-01T00:{minute:02d}:00.000000Z", f"j{minute}"), done=True)
    bookmark.close()
    assert state["floor"] == ["2024-01-01T00:45:00.000000Z", ""]
    assert [job_id for job_id, _ in state["seen"]] == ["j45", "j50", "j55"]  # at the window's start: still inside
    # below the floor: synced; inside the window: synced only if seen
    assert bookmark.synced(JobKey("2024-01-01T00:10:00.000000Z", "j10"))
    assert not bookmark.synced(JobKey("2024-01-01T00:50:00.000000Z", "late"))


def test_a_future_dated_job_never_moves_the_mark_past_the_run():
    state: dict = {}
    bookmark = Bookmark(state, Policy(run_started="2024-06-01T00:00:00.000000Z", lookback=600))
    bookmark.advance(JobKey("2099-01-01T00:00:00.000000Z", "future"), done=True)
    bookmark.close()
    assert state["hwm"][0] == "2024-06-01T00:00:00.000000Z"
    assert not bookmark.synced(JobKey("2024-07-01T00:00:00.000000Z", "later"))
    assert bookmark.synced(JobKey("2099-01-01T00:00:00.000000Z", "future"))


def test_a_version_1_bookmark_treats_its_mark_as_synced():
    state = {"hwm": ["2024-01-05", "e"], "pending": {}}
    bookmark = Bookmark(state, POLICY)
    assert bookmark.synced(JobKey("2024-01-05", "e")) and bookmark.synced(JobKey("2024-01-04", "z"))
    assert not bookmark.synced(JobKey("2024-01-06", "f"))


def _listing(hwm=None, pending=None, start=None):
    state: dict = {"pending": dict(pending or {})}
    if hwm:
        state["hwm"] = list(hwm)
    policy = Policy(run_started="2024-06-01T00:00:00.000000Z", start_date=start)
    return Listing("test", "test", Bookmark(state, policy), lambda job_id: f"job {job_id}")


def test_newest_first_listing_stops_below_everything_needed():
    listing = _listing(hwm=("2024-01-05", "e"), pending={"b": "2024-01-02"})
    assert listing.offer(JobKey("2024-01-07", "g"), {"s": 1})
    assert listing.offer(JobKey("2024-01-05", "e"), {})  # the boundary job is not new
    # pending: its summary is kept, and nothing older is needed any more
    assert not listing.offer(JobKey("2024-01-02", "b"), {"s": 2})
    refs = listing.result()
    assert [r.key.id for r in refs] == ["b", "g"]
    assert refs[0].pending and refs[0].summary == {"s": 2}


def test_a_listing_out_of_order_is_read_to_the_end():
    listing = _listing(hwm=("2024-01-05", "e"))
    assert listing.offer(JobKey("2024-01-01", "a"), {})  # no evidence of the order yet: go on
    assert listing.offer(JobKey("2024-01-09", "i"), {})  # oldest-first: read it all
    assert listing.offer(JobKey("2024-01-02", "b"), {})
    assert [r.key.id for r in listing.result()] == ["i"]


def test_a_newest_first_listing_with_nothing_new_stops_after_one_step():
    listing = _listing(hwm=("2024-01-05", "e"))
    assert listing.offer(JobKey("2024-01-04", "d"), {})
    assert not listing.offer(JobKey("2024-01-03", "c"), {})
    assert listing.result() == []


def test_pending_jobs_the_listing_never_showed_are_fetched_by_id():
    listing = _listing(hwm=("2024-01-05", "e"), pending={"z": "2024-01-03"})
    listing.offer(JobKey("2024-01-06", "f"), {})
    refs = listing.result()
    assert [(r.key.id, r.summary) for r in refs] == [("z", None), ("f", {})]


def test_top_match_ignores_matches_without_a_score():
    import msgspec

    from tap_jobresults.sources.cognite import MatchResultsStream

    items = [
        msgspec.Raw(b'{"source": {"n": 1}, "matches": [{"target": {"t": 1}}, {"score": null, "target": {"t": 2}}]}')
    ]
    job = FetchedJob(JobRef(JobKey("", "1"), "job 1"), finished=True, record={"job_id": 1}, payload=items)
    [row] = MatchResultsStream.rows(None, job)  # type: ignore[arg-type]
    assert row["match_count"] == 2 and row["top_score"] is None and row["top_target"] is None


@pytest.mark.parametrize(
    ("report", "outcome", "score"),
    [
        ({"reviewResult": {"outcome": "OUTCOME_TRUE", "score": 0.9}, "result": "OUTCOME_FALSE"}, "OUTCOME_TRUE", 0.9),
        ({"reviewResult": {"score": 0.4}, "result": "OUTCOME_FALSE"}, "OUTCOME_FALSE", 0.4),  # outcome left out
        ({"reviewResult": {}}, "OUTCOME_UNSPECIFIED", 0.0),  # proto3 zero values left out
        ({"result": "OUTCOME_TRUE"}, "OUTCOME_TRUE", None),  # older report: no reviewResult at all
    ],
)
def test_clavata_outcome_prefers_review_result_and_falls_back_to_result(report, outcome, score):
    from tap_jobresults.sources.clavata import ClavataReportsStream

    payload = [{"report": report, "created": "2025-01-01T00:00:00Z"}]
    job = FetchedJob(JobRef(JobKey("", "u"), "job u"), finished=True, record={"job_uuid": "u"}, payload=payload)
    [row] = ClavataReportsStream.rows(None, job)  # type: ignore[arg-type]
    assert (row["outcome"], row["score"]) == (outcome, score)


def test_go_zero_time_is_unset():
    assert iso("0001-01-01T00:00:00Z") is None


# -- the operator's lines (report.py) -----------------------------------------------------------------


def _source_run(monkeypatch, clock: list[float]):
    from tap_jobresults import report

    monkeypatch.setattr(report.time, "monotonic", lambda: clock[0])
    source = types.SimpleNamespace(name="clavata", setting="clavata")
    reporter = report.Reporter()
    return reporter, reporter.start("clavata_jobs", source)  # type: ignore[arg-type]


def test_progress_is_logged_at_most_once_per_interval_and_always_at_the_end(monkeypatch, caplog):
    from tap_jobresults.report import PROGRESS_EVERY

    clock = [1000.0]
    reporter, run = _source_run(monkeypatch, clock)
    run.listed(100)
    caplog.set_level(logging.INFO, logger="tap-jobresults")
    lines = []
    for _ in range(100):  # a job every 0.25 s: 25 s in all
        clock[0] += 0.25
        run.job_done(True)
        run.progress()
        lines += [r.getMessage() for r in caplog.records if "jobs/s" in r.getMessage()]
        caplog.clear()
    assert len(lines) == int(25 // PROGRESS_EVERY) == 2, lines  # at 10 s and 20 s, not after each job
    assert "40/100 jobs" in lines[0] and "80/100 jobs" in lines[1], lines
    assert lines[0].endswith("40/100 jobs, 0 records, 4 jobs/s, about 15 s left"), lines  # 60 jobs at 4 a second
    reporter.finish(run)
    final = [r.getMessage() for r in caplog.records if "jobs/s" in r.getMessage()]
    assert len(final) == 1 and "100/100 jobs" in final[0] and "done in" in final[0]


def test_a_progress_line_before_the_first_job_is_done_has_no_estimate(monkeypatch, caplog):
    """A slow first job (or listing): the periodic line comes with nothing done; no rate to divide by."""
    from tap_jobresults.report import PROGRESS_EVERY

    clock = [1000.0]
    _, run = _source_run(monkeypatch, clock)
    run.listed(5)
    caplog.set_level(logging.INFO, logger="tap-jobresults")
    clock[0] += PROGRESS_EVERY + 1
    run.progress()
    lines = [r.getMessage() for r in caplog.records if "jobs/s" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("0/5 jobs, 0 records, 0 jobs/s, about ? left"), lines
    caplog.clear()
    clock[0] += 9  # 20 s in: one job done, at 0.05 a second
    run.job_done(True)
    clock[0] += PROGRESS_EVERY
    run.progress()
    lines = [r.getMessage() for r in caplog.records if "jobs/s" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("1/5 jobs, 0 records, 0 jobs/s, about 2 min left"), lines


@pytest.mark.parametrize(
    ("seconds", "jobs", "rate"), [(0.0, 3, "0 jobs/s, done in 0 s"), (0.5, 5, "10 jobs/s, done in 0 s")]
)
def test_the_final_progress_line_of_a_quick_run(monkeypatch, caplog, seconds, jobs, rate):
    """A run that ends within its first second (or at once, with nothing to do) reports its real rate."""
    clock = [1000.0]
    reporter, run = _source_run(monkeypatch, clock)
    run.listed(jobs)
    for _ in range(jobs):
        run.job_done(True)
    clock[0] += seconds
    caplog.set_level(logging.INFO, logger="tap-jobresults")
    reporter.finish(run)
    lines = [r.getMessage() for r in caplog.records if "jobs/s" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith(f"{jobs}/{jobs} jobs, 0 records, {rate}"), lines


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ([], "ok"),
        (["job_failed"], "partial"),
        (["failed_listing"], "partial"),
        (["failed_source"], "failed"),
        (["job_failed", "failed_source"], "failed"),
    ],
)
def test_a_source_run_reports_ok_partial_or_failed(monkeypatch, events, status):
    reporter, run = _source_run(monkeypatch, [0.0])
    run.listed(3)
    for event in events:
        getattr(run, event)()
    assert run.status == status
    [row] = [line for line in reporter.summary().splitlines() if line.strip().startswith("clavata")]
    assert row.split()[-1] == status


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    source=st.sampled_from(["cognite", "talonic"]),
    element=st.sampled_from([b"1", b'"x"', b"null", b"[]", b"true", b"2.5"]),
    where=st.integers(0, 3),
    not_array=st.sampled_from([b"{}", b'"items"', b"3"]),
)
def test_a_body_s_big_arrays_are_refused_by_source_job_and_field(source, element, where, not_array):
    """An element of a big array that is not an object, or a big field that is not an array, fails the job
    with the source first and the job named, as every error of the tap reads ("<source>: <job> ...")."""
    import msgspec

    from tap_jobresults.errors import MalformedPayload
    from tap_jobresults.sources.base import split_body

    what = "predict job 7"
    elements = [b'{"a": 1}'] * 3
    elements.insert(where, element)
    body = {"id": msgspec.Raw(b"7"), "items": msgspec.Raw(b"[" + b", ".join(elements) + b"]")}
    with pytest.raises(MalformedPayload) as caught:
        split_body(source, what, body, ("items",))
    assert str(caught.value) == f"{source}: {what} returned a malformed payload: items[{where}] should be an object"
    assert (caught.value.source, caught.value.what) == (source, what)
    body["items"] = msgspec.Raw(not_array)
    with pytest.raises(MalformedPayload) as caught:
        split_body(source, what, body, ("items",))
    assert str(caught.value).startswith(f"{source}: {what} returned a malformed payload: field 'items' should")
    small, parts = split_body(source, what, {"id": msgspec.Raw(b"7"), "items": msgspec.Raw(b"null")}, ("items", "x"))
    assert small == {"id": 7} and parts == {"items": []}


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (float("nan"), "?"),
        (0, "0 s"),
        (59.2, "59 s"),
        (60, "1 min"),
        (61, "1 min"),
        (3599, "60 min"),
        (3600, "1.0 h"),
        (5400, "1.5 h"),
    ],
)
def test_durations_read_in_the_unit_that_suits_them(seconds, shown):
    from tap_jobresults.report import _duration

    assert _duration(seconds) == shown


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    initial=st.dictionaries(st.sampled_from("abcdef"), st.sampled_from(["1", "2", "3"]), max_size=4),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["set", "del", "pop", "rebuild"]), st.sampled_from("abcdefg"), st.sampled_from("123")
        ),
        max_size=30,
    ),
)
def test_a_job_map_behaves_as_a_dict_and_its_list_is_the_state(initial, ops):
    """lifecycle.JobMap against a dict (the oracle), under any sequence of operations: same contents, length,
    membership and iteration; and the list it wraps (the one in the state) always holds exactly those pairs."""
    from tap_jobresults.lifecycle import JobMap

    stored = JobMap.stored(dict(initial))
    jobs, oracle = JobMap(stored), dict(initial)
    for op, job_id, value in ops:
        if op == "set":
            jobs[job_id] = oracle[job_id] = value
        elif op == "del" and job_id in oracle:
            del jobs[job_id]
            del oracle[job_id]
        elif op == "pop":
            assert jobs.pop(job_id, None) == oracle.pop(job_id, None)
        elif op == "rebuild":
            jobs.rebuild(list(oracle.items()))
            assert [pair[1] for pair in stored] == sorted(oracle.values())
        assert len(jobs) == len(oracle) and set(jobs) == set(oracle) and dict(jobs.items()) == oracle
        assert all((job_id in jobs) == (job_id in oracle) for job_id in "abcdefg")
        assert sorted(map(tuple, stored)) == sorted(oracle.items())  # the state's list, in place
        assert all(jobs[job_id] == oracle[job_id] for job_id in oracle)


@pytest.mark.parametrize(
    ("sent", "moment"),
    [
        ("2025-01-02T03:04:05.123456789Z", datetime(2025, 1, 2, 3, 4, 5, 123456, timezone.utc)),
        ("2025-01-02T03:04:05.1+02:00", datetime(2025, 1, 2, 1, 4, 5, 100000, timezone.utc)),
        ("2025-01-02T03:04:05.1234567-05:30", datetime(2025, 1, 2, 8, 34, 5, 123456, timezone.utc)),
        ("2025-01-02T03:04:05.5z", datetime(2025, 1, 2, 3, 4, 5, 500000, timezone.utc)),
        ("2025-01-02T03:04:05Z", None),  # no fraction: not this parser's
        ("2025-13-02T03:04:05.5Z", None),
    ],
)
def test_nanosecond_timestamps_parse_by_hand_on_every_python(sent, moment):
    """The hand parser Python 3.10 relies on, with answers worked out by hand (runs on 3.10 too, where the
    oracle test below cannot)."""
    from tap_jobresults.lifecycle import _parse_rfc3339_nanos

    assert _parse_rfc3339_nanos(sent) == moment


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the oracle, fromisoformat, reads any fraction from 3.11")
@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    digits=st.text("0123456789", min_size=1, max_size=9),
    zone=st.sampled_from(["Z", "z", "+00:00", "+02:00", "-05:30", "+14:00"]),
)
def test_nanosecond_timestamps_parse_as_python_3_11_reads_them(moment, digits, zone):
    """The Go/protobuf spelling (up to 9 fractional digits) is parsed by hand for Python 3.10; from 3.11
    fromisoformat reads it (truncating to microseconds) and is the oracle."""
    from tap_jobresults.lifecycle import _parse_rfc3339_nanos

    text = f"{moment:%Y-%m-%dT%H:%M:%S}.{digits}{zone}"
    assert _parse_rfc3339_nanos(text) == datetime.fromisoformat(text.replace("z", "Z"))
    assert _parse_rfc3339_nanos(f"{moment:%Y-%m-%dT%H:%M:%S}{zone}") is None  # no fraction: not this parser's


def test_every_outcome_of_a_job_counts_as_done_and_an_empty_listing_logs_no_progress(monkeypatch, caplog):
    clock = [1000.0]
    reporter, run = _source_run(monkeypatch, clock)
    run.listed(0)  # reached, nothing to do: the summary says so, no progress line
    caplog.set_level(logging.INFO, logger="tap-jobresults")
    reporter.finish(run)
    assert not [r for r in caplog.records if "jobs/s" in r.getMessage()]
    reporter, run = _source_run(monkeypatch, clock)
    run.listed(7)
    for finished in (True, True, False):
        run.job_done(finished)
    run.job_failed()
    run.job_failed()
    run.job_missing()
    assert (run.done, run.synced, run.still_running, run.failed, run.missing) == (6, 2, 1, 2, 1)
    clock[0] += 2
    reporter.finish(run)
    lines = [r.getMessage() for r in caplog.records if "jobs/s" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("6/7 jobs, 0 records, 3 jobs/s, done in 2 s"), lines


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"code": "RATE_LIMITED", "message": "slow down"}, "an error envelope with HTTP 200 (slow down)"),
        ({"error": "Bad Gateway", "statusCode": 502}, "an error envelope with HTTP 200 (Bad Gateway)"),
        ({"statusCode": 500}, "an error envelope with HTTP 200 (None)"),
        ({"code": 7}, None),  # one field named like an error's: could be anything
        ({"message": "x", "total": 0}, None),
        ({"data": [], "code": 1, "message": "m"}, None),  # a page that has its data is a page
    ],
)
def test_talonic_error_envelopes_are_told_from_pages(body, problem):
    from tap_jobresults.sources.talonic import _error_envelope

    assert _error_envelope(body) == problem


@pytest.mark.parametrize(
    ("sent", "held"),
    [
        (0.123456789, (12.345679, 0.123456789)),  # a fraction: as a percentage to 6 decimals, kept as sent
        (0.0, (0.0, 0.0)),
        (0.999, (99.9, 0.999)),
        (1.0, (100.0, 1.0)),  # the float 1.0 is "done" in the fraction spelling
        (1, 1),  # an integer is a percentage
        (0, 0),
        (1.5, 1.5),
        (55, 55),
        (99.5, 99.5),
        (100, 100),
        ("42", None),  # a string is not a number here: kept as sent
        (100.01, None),
        (101, None),
        (-0.5, None),
        (-1, None),
    ],
)
def test_talonic_progress_is_a_percentage_whichever_spelling_is_sent(sent, held):
    from tap_jobresults.records import Partial, Unfit
    from tap_jobresults.sources.talonic import percent

    if held is None:
        with pytest.raises(Unfit):
            percent(sent)
    elif isinstance(held, tuple):
        assert percent(sent) == Partial(*held)
    else:
        assert percent(sent) == held and type(percent(sent)) is type(held)


def test_a_retry_after_date_in_the_past_means_no_wait(monkeypatch):
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1_700_000_000.0) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # a zone-less date (-0000) is UTC, whatever the machine's zone
    time.tzset()
    try:
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now=1445412470.0) == 10.0
    finally:
        monkeypatch.undo()
        time.tzset()
    assert parse_retry_after("-5") == 0.0 and parse_retry_after("2.5") == 2.5 and parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (119, "119 s"),
        (120, "2 min"),
        (7199, "120 min"),
        (7200, "2.0 h"),
        (86400, "24.0 h"),
        (1e9, "forever"),
    ],
)
def test_a_rate_limit_s_wait_reads_in_the_unit_that_suits_it(seconds, shown):
    from tap_jobresults.client import _duration

    assert _duration(seconds) == shown


def test_where_a_request_went_is_named_without_path_query_or_userinfo_and_bounded():
    from tap_jobresults.client import _host_port

    assert _host_port("https://user:pw@api.example.com:8443/v1/jobs?key=secret") == "https://api.example.com:8443"
    assert _host_port("http://127.0.0.1/x") == "http://127.0.0.1"
    assert _host_port("https://h:notaport/") == "https://h"
    long = _host_port("https://" + "a" * 300 + ".example.com/")
    assert long == ("https://" + "a" * 300)[:200] + "..."


def test_an_origin_is_scheme_host_and_port_with_the_default_ports_filled_in():
    from tap_jobresults.client import _origin

    assert _origin("https://API.example.com/v1") == ("https", "api.example.com", 443)
    assert _origin("http://127.0.0.1/x") == ("http", "127.0.0.1", 80)
    assert _origin("https://h:8443/") == ("https", "h", 8443)
    assert _origin("HTTPS://h:443") == _origin("https://h")


def test_a_warning_about_dropped_state_keys_names_ten_and_counts_the_rest():
    from tap_jobresults.state import Dropped

    dropped = Dropped()
    for number in range(12):
        dropped.add("bookmarks", f"k{number}")
    message = dropped.message("state")
    assert message is not None and message.endswith(
        "dropped 12 key(s) this tap does not write, not carried into its state: "
        + ", ".join(f"bookmarks.k{number}" for number in range(10))
        + " and 2 more"
    ), message
    assert Dropped().message("state") is None


@pytest.mark.parametrize(
    ("sent", "finer"),
    [(1.5, False), (1.0005, True), (1700000000123.0, False), (0.001, False), (0.0001, True), (3, False)],
)
def test_a_millisecond_timestamp_finer_than_a_microsecond_is_told(sent, finer):
    from tap_jobresults.records import finer_than_micros

    assert finer_than_micros(sent) is finer


def test_to_list_takes_lists_only():
    from tap_jobresults.records import Unfit, to_list

    assert to_list([1]) == [1]
    for other in ({}, "x", 1, None):
        with pytest.raises(Unfit):
            to_list(other)
