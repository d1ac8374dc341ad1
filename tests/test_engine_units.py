"""The engine's small parts on their own: how an unexpected exception is described to a user, and the
byte budget that bounds what fetch workers hold (the end-to-end view is in test_engine.py)."""

from __future__ import annotations

import threading
import types

import msgspec
import pytest

from tap_jobresults import guard
from tap_jobresults.engine import ByteBudget, Engine, JobUnit, describe
from tap_jobresults.errors import ApiError, JobFailed, MalformedPayload


def _decode_error() -> Exception:
    try:
        msgspec.json.decode(b"{")
    except msgspec.DecodeError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ApiError("talonic", "job 7", status=500, message="boom"), "talonic: job 7 failed, HTTP 500: boom"),
        (MalformedPayload("clavata", "job 8", "no jobs"), "clavata: job 8 returned a malformed payload: no jobs"),
        (JobFailed("job 9", KeyError("x")), "job 9: unexpected error (KeyError): 'x'"),
        (RecursionError("maximum recursion depth exceeded"), "the body is nested too deeply to decode"),
        (
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            "the body holds text that is not valid UTF-8 "
            "('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)",
        ),
        (msgspec.ValidationError("Expected `str`, got `int`"), "the body does not decode (Expected `str`, got `int`)"),
        (_decode_error(), "the body does not decode (Input data was truncated)"),
        (guard.Unrepresentable("a float is NaN"), "a record cannot be written: a float is NaN"),
        (OverflowError("date value out of range"), "a value is out of range (date value out of range)"),
        (MemoryError(), "ran out of memory"),
        (KeyError("id"), "unexpected error (KeyError: 'id')"),
        (ValueError(), "unexpected error (ValueError)"),
        (RuntimeError("x" * 300), f"unexpected error (RuntimeError: {'x' * 200})"),
    ],
)
def test_an_exception_is_described_by_its_kind(exc, expected):
    assert describe(exc) == expected


def _in_thread(fn) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run() -> None:
        fn()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_a_body_larger_than_the_budget_is_claimed_at_once_when_nothing_else_is_held():
    budget = ByteBudget(100)
    _, done = _in_thread(lambda: budget.claim(1000))
    assert done.wait(2)
    assert budget.held == 1000 and budget.peak == 1000


def test_a_claim_that_fits_beside_what_others_hold_does_not_wait():
    budget = ByteBudget(100)
    budget.claim(60)  # this thread's job
    _, done = _in_thread(lambda: budget.claim(40))  # 60 + 40 == the limit: fits
    assert done.wait(2)
    assert budget.held == 100 and budget.mine == 60


class _WaitsForNotify(threading.Condition):
    """A condition whose waits have no timeout: only a notify ends them."""

    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(None)


def test_a_claim_that_does_not_fit_waits_for_a_release_and_is_woken_by_it():
    budget = ByteBudget(100)
    budget._cond = _WaitsForNotify()
    budget.claim(60)
    _, done = _in_thread(lambda: budget.claim(41))
    assert not done.wait(0.3), "41 + 60 bytes do not fit in 100 while another job holds 60"
    budget.release(budget.take_mine())
    assert done.wait(10), "a release wakes the waiting claim"
    assert budget.held == 41 and budget.peak == 60


def test_a_single_byte_held_by_another_job_is_enough_to_wait():
    budget = ByteBudget(100)
    budget.claim(1)
    _, done = _in_thread(lambda: budget.claim(100))
    assert not done.wait(0.3)
    budget.release(budget.take_mine())
    assert done.wait(2)


def test_a_thread_is_never_held_up_by_its_own_bytes():
    budget = ByteBudget(100)
    budget.claim(90)

    def more() -> None:
        budget.claim(30)  # waits: another thread holds 90
        budget.claim(500)  # then only its own 30 are held: it goes on, past the limit

    _, done = _in_thread(more)
    assert not done.wait(0.3)
    budget.release(budget.take_mine())
    assert done.wait(2)
    assert budget.held == 530

    alone = ByteBudget(100)
    alone.claim(90)
    alone.claim(500)  # only its own bytes are held: it goes on
    assert alone.mine == 590 and alone.take_mine() == 590 and alone.mine == 0


def test_force_counts_past_the_limit_and_release_gives_back():
    budget = ByteBudget(10)
    budget.force(25)
    budget.force(5)
    assert budget.held == 30 and budget.peak == 30 and budget.mine == 30
    budget.release(12)
    assert budget.held == 18 and budget.peak == 30
    assert ByteBudget(0).limit == 1 and ByteBudget(-5).limit == 1


class _Response:
    def __init__(self, headers: dict, chunks: list[bytes]) -> None:
        self.headers = headers
        self._chunks = chunks

        self.asked: list[tuple[int, bool]] = []

    def iter_content(self, chunk_size: int = 1, decode_unicode: bool = False):
        self.asked.append((chunk_size, decode_unicode))
        yield from self._chunks


@pytest.mark.parametrize(
    ("headers", "claimed_before_reading"),
    [
        ({"Content-Length": "10"}, 40),
        ({"Content-Length": "10", "Content-Encoding": "identity"}, 40),
        ({"Content-Length": "10", "Content-Encoding": " Identity "}, 40),
        ({"Content-Length": "10", "Content-Encoding": "gzip"}, 0),
        ({"Transfer-Encoding": "chunked"}, 0),
        ({"Content-Length": "ten"}, 0),
    ],
)
def test_a_worker_response_is_claimed_by_its_length_or_counted_as_it_arrives(headers, claimed_before_reading):
    budget = ByteBudget(1 << 20)
    budget.reading(True)
    response = budget.response_hook(_Response(headers, [b"abc", b"defg"]))
    assert budget.held == claimed_before_reading
    assert b"".join(response.iter_content(1 << 20)) == b"abcdefg"
    assert response.asked == [(1 << 20, False)], "the reader's chunk size reaches the real iter_content"
    counted = 0 if claimed_before_reading else ByteBudget.FOOTPRINT * 7
    assert budget.held == claimed_before_reading + counted
    assert budget.mine == budget.held


def test_a_response_read_outside_a_fetch_worker_is_not_counted():
    budget = ByteBudget(100)
    response = budget.response_hook(_Response({"Content-Length": "10"}, [b"x" * 10]))
    assert b"".join(response.iter_content()) == b"x" * 10 and budget.held == 0
    budget.reading(True)
    budget.reading(False)
    budget.response_hook(_Response({"Content-Length": "10"}, []))
    assert budget.held == 0


class _Writer:
    def __init__(self, since: int | None, last: int) -> None:
        if since is not None:
            self.record_bytes_since_state = since
        self.last_state_bytes = last


@pytest.mark.parametrize(
    ("since", "last", "written"),
    [
        (0, 0, True),  # the first STATE
        (0, 16 * 1024, True),  # a state of up to 16 KiB follows every job
        (0, 16 * 1024 + 1, False),  # a larger one waits for records of twice its size
        (2 * (16 * 1024 + 1) - 1, 16 * 1024 + 1, False),
        (2 * (16 * 1024 + 1), 16 * 1024 + 1, True),
        (10**9, 10**6, True),
        (None, 10**6, True),  # a writer that does not count: every time
    ],
)
def test_a_state_follows_every_job_while_small_then_once_records_outweigh_it(monkeypatch, since, last, written):
    engine = Engine.__new__(Engine)
    engine.tap = types.SimpleNamespace(message_writer=_Writer(since, last))
    calls: list[int] = []
    monkeypatch.setattr(engine, "write_state", lambda: calls.append(1))
    engine.maybe_write_state()
    assert calls == ([1] if written else [])


def test_a_failed_job_holds_no_result_objects():
    """BATCH output asks each job for result records kept as objects: a failed job has none (no output)."""
    stream, child = object(), object()
    runner = types.SimpleNamespace(stream=stream)
    failed = JobUnit(runner, bookmark=None, ref=None, error="job 1: boom")
    assert failed.objects_of_any() is False and failed.objects(child) == [] and failed.size == 0
    output = types.SimpleNamespace(objects=[(stream, {"id": 1})], size=10)
    only_the_job = JobUnit(runner, bookmark=None, ref=None, output=output)
    assert only_the_job.objects_of_any() is False and only_the_job.size == 10
    output.objects.append((child, {"row": 1}))
    assert only_the_job.objects_of_any() is True and only_the_job.objects(child) == [{"row": 1}]
