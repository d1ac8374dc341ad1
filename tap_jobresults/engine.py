"""The sync engine: every source at once, one writer.

Each active source runs on a thread of its own (`SourceRunner`): it reads its listings and hands
the jobs to `max_concurrent_requests` fetch workers of its own. A worker does everything for one
job inside one guard: fetch, decode, validate, build its records and encode them (guard.Output),
so that whatever goes wrong (any exception type: a RecursionError on a deep body, invalid UTF-8,
an OverflowError on a timestamp, a bug of the tap) is that job's failure, found before the first
of its records is written. A failed job is named, not bookmarked, and fetched again next run.
A listing that fails, whatever the exception, is its source's failure (or the partition's).

One writer, on the main thread, writes everything: the records of each job as one block, then the
job's bookmark advance, then (now and then) a STATE. All state is changed on that thread only,
so a STATE never covers a record not yet written; runners ask it to change state for them
(`Engine.call`). Jobs are written in the order their fetches complete: the bookmark does not need
creation order (see lifecycle.py), and a slow job holds up nobody.

Memory: the listing hands out jobs through a queue as long as the fetch width, so a listing of
any length holds no more than that; the bytes of fetched jobs waiting for the writer are bounded
by a byte budget (`ByteBudget`): past it, workers wait before reading more.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import typing as t

import msgspec

from tap_jobresults import guard, sdk_hooks
from tap_jobresults.client import flush_request_metrics
from tap_jobresults.errors import AuthError, NotFoundError, TapJobResultsError, UnsafeId
from tap_jobresults.lifecycle import ConfiguredJobs, FetchedJob, JobRef

if t.TYPE_CHECKING:
    from tap_jobresults.lifecycle import Bookmark, Failures
    from tap_jobresults.report import SourceRun
    from tap_jobresults.sources.base import JobSource
    from tap_jobresults.streams import JobStream, ResultStream

logger = logging.getLogger("tap-jobresults")

MAX_REFUSED_IN_A_ROW = 3
MAX_QUEUED_JOBS = 1000
SMALL_STATE = 16 * 1024  # bytes: a STATE up to this size follows every job


def describe(exc: BaseException) -> str:
    """An unexpected exception, as a reason a user can read (the traceback goes to DEBUG)."""
    if isinstance(exc, TapJobResultsError):
        return str(exc)
    detail = guard_text(str(exc))
    if isinstance(exc, RecursionError):
        return "the body is nested too deeply to decode"
    if isinstance(exc, UnicodeError):
        return f"the body holds text that is not valid UTF-8 ({detail})"
    if isinstance(exc, (msgspec.ValidationError, msgspec.DecodeError)):
        return f"the body does not decode ({detail})"
    if isinstance(exc, guard.Unrepresentable):
        return f"a record cannot be written: {detail}"
    if isinstance(exc, OverflowError):
        return f"a value is out of range ({detail})"
    if isinstance(exc, MemoryError):
        return "ran out of memory"
    return f"unexpected error ({type(exc).__name__}" + (f": {detail})" if detail else ")")


def guard_text(text: str) -> str:
    return text[:200]


def release_big_buffers_to_the_system() -> None:
    """glibc keeps freed buffers of up to 32 MiB in each thread's arena once it has freed one that
    size (its mmap threshold rises): with a fetch worker per request in flight, each would keep a
    job body's worth. A fixed 1 MiB threshold gives every large buffer back when it is freed."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


class ByteBudget:
    """Bytes of job bodies and built records held in memory at once, whatever the fetch width.

    A body whose size is announced (Content-Length) is claimed before it is read: the worker waits
    while others hold bytes and it would not fit. When nothing else is held, any one body fits, so
    a job larger than the budget is still synced, alone. A body of unannounced size (chunked,
    compressed) is counted as it arrives. A body counts FOOTPRINT times its size while its job is
    read and built (the body, its elements, the records being encoded: measured); once the job is
    built, its encoded records' bytes replace that, until the writer has written them.
    """

    FOOTPRINT = 4

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.held = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._local = threading.local()

    def claim(self, size: int) -> None:
        mine = self.mine
        with self._cond:
            while self.held - mine > 0 and self.held + size > self.limit:
                self._cond.wait(1.0)
            self._add(size)

    def force(self, size: int) -> None:
        with self._cond:
            self._add(size)

    def _add(self, size: int) -> None:
        self.held += size
        self.peak = max(self.peak, self.held)
        self._local.mine = self.mine + size

    def release(self, size: int) -> None:
        with self._cond:
            self.held -= size
            self._cond.notify_all()

    @property
    def mine(self) -> int:
        """Bytes held for the job this thread is fetching."""
        return getattr(self._local, "mine", 0)

    def take_mine(self) -> int:
        """This thread's job is done reading: its bytes, now the caller's to release."""
        mine = self.mine
        self._local.mine = 0
        return mine

    def reading(self, active: bool) -> None:
        self._local.active = active

    def response_hook(self, response: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """A `requests` response hook: bodies read by fetch workers go through the budget."""
        if not getattr(self._local, "active", False):
            return response  # a listing page, a token: one at a time per source, not counted
        headers = response.headers
        length = headers.get("Content-Length", "")
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if length.isdigit() and encoding in ("", "identity"):
            self.claim(self.FOOTPRINT * int(length))
            return response
        read = response.iter_content
        budget = self

        def counted(chunk_size: int = 1, decode_unicode: bool = False) -> t.Iterator[t.Any]:
            for chunk in read(chunk_size, decode_unicode):
                budget.force(budget.FOOTPRINT * len(chunk))
                yield chunk

        response.iter_content = counted
        return response


class Engine:
    """Runs the sources of a tap and writes what they produce (see the module docstring)."""

    def __init__(self, tap: t.Any, failures: Failures, budget: int) -> None:
        self.tap = tap
        self.failures = failures
        self.queue: queue.SimpleQueue[t.Any] = queue.SimpleQueue()
        self.budget = ByteBudget(budget)
        release_big_buffers_to_the_system()
        self.done = False
        self._state_stream: JobStream | None = None

    # -- the writer ------------------------------------------------------------------------------

    def run(self, streams: list[JobStream]) -> None:
        """Sync every source of `streams` at once; returns when all are done and written, with
        the last STATE (the job streams write none of their own after it)."""
        for _ in self.drive(streams, yield_records=False):
            pass
        self.write_state()
        self.done = True
        logger.debug("byte budget: peak %d of %d bytes", self.budget.peak, self.budget.limit)

    def drive(self, streams: list[JobStream], *, yield_records: bool) -> t.Iterator[FetchedJob]:
        """The writer loop. With `yield_records` (BATCH output, `--test`: one stream at a time),
        each job is handed to the SDK instead of written, and bookmarks move at the end."""
        if not streams:
            return
        self.queue = queue.SimpleQueue()  # this drive's: runners of an earlier one (`--test`) post to theirs
        runners = [SourceRunner(self, stream, yield_records=yield_records) for stream in streams]
        self._state_stream = streams[0]
        for runner in runners:
            runner.start()
        active = len(runners)
        deferred: list[t.Callable[[], None]] = []
        try:
            while active:
                item = self.queue.get()
                if isinstance(item, _Finished):
                    active -= 1
                    continue
                if isinstance(item, JobUnit):
                    try:
                        if yield_records:
                            item.stream.current = item
                            if item.job is not None and item.job.record is not None:
                                item.write_objects()
                                yield item.job
                            item.stream.current = None
                            if item.stream.batching:
                                # The SDK writes BATCH files at the end of a partition: bookmarks wait for it.
                                deferred.append(item.commit)
                            else:
                                # Resumed: the SDK wrote the job record, its results went before it. The
                                # job is emitted whole, so a record limit's STATE (the SDK writes it
                                # before the next record) holds it.
                                item.commit()
                        else:
                            item.write()
                            item.commit()
                            self.maybe_write_state()
                    finally:
                        self.budget.release(item.size)
                    continue
                item()
        finally:
            for runner in runners:
                runner.stop_quietly()
            flush_request_metrics()
        for commit in deferred:
            commit()

    def maybe_write_state(self) -> None:
        """A small state (up to SMALL_STATE, about 200 jobs pending or inside the lookback window)
        follows every job, so a killed run re-emits at most the jobs in flight. A larger one comes
        once the records written since the last STATE are twice its size: the next STATE is the
        last one plus what those records added to the state, so STATE bytes stay below the record
        bytes whatever the size of the state (a first run over a listing of a million jobs)."""
        writer = self.tap.message_writer
        since = getattr(writer, "record_bytes_since_state", None)
        last = getattr(writer, "last_state_bytes", 0)
        if since is None or last <= SMALL_STATE or since >= 2 * last:
            self.write_state()

    def write_state(self) -> None:
        if self._state_stream is not None:
            sdk_hooks.write_state_now(self._state_stream)


class _Finished:
    """A runner's last item."""


class JobUnit:
    """One job, fetched and built, ready for the writer (or its failure)."""

    def __init__(
        self,
        runner: SourceRunner,
        bookmark: Bookmark,
        ref: JobRef,
        job: FetchedJob | None = None,
        output: guard.Output | None = None,
        error: TapJobResultsError | str | None = None,
        backfill: dict | None = None,
    ) -> None:
        self.runner = runner
        self.stream = runner.stream
        self.bookmark = bookmark
        self.ref = ref
        self.job = job
        self.output = output
        self.error = error
        self.backfill = backfill
        self.size = output.size if output is not None else 0

    def objects_of_any(self) -> bool:
        """Result records kept as objects (BATCH output): the SDK's child syncs write them."""
        return self.output is not None and any(owner is not self.stream for owner, _ in self.output.objects)

    def objects(self, stream: ResultStream) -> list[dict]:
        """The records of `stream` for this job (BATCH output: the SDK's child sync reads them)."""
        if self.output is None:
            return []
        return [record for owner, record in self.output.objects if owner is stream]

    def write(self) -> None:
        """The job's records, as one block (on the writer)."""
        output = self.output
        if output is None:
            return
        run = self.runner.run
        for stream in output.counts:
            sdk_hooks.write_schema(stream)
        sdk_hooks.write_lines(self.stream, output.lines)
        output.close()
        for stream, count in output.counts.items():
            sdk_hooks.count_records(stream, count)
            run.records(stream.name, count)

    def write_objects(self) -> None:
        """`--test` without BATCH: result records written here, the job record by the SDK."""
        output = self.output
        if output is None or self.stream.batching:
            return
        for stream in list(output.counts):
            if stream is self.stream:
                continue
            records = self.objects(stream)
            self.runner.run.records(stream.name, sdk_hooks.write_records(stream, records))
        if self.stream.selected and self.job is not None and self.job.record is not None:
            self.runner.run.records(self.stream.name, 1)

    def commit(self) -> None:
        """The job's outcome into its bookmark, after its records (on the writer)."""
        run, ref, bookmark = self.runner.run, self.ref, self.bookmark
        if self.backfill is not None:
            if self.error is None:
                self.backfill["through"] = ref.key.as_list()
            return
        if self.error is not None:
            error = self.error
            if isinstance(error, NotFoundError):
                # A configured job is the user's word, so its absence is worth a warning; a pending job
                # the server forgot is counted in the summary (thousands of them must not flood the log).
                log = logger.warning if isinstance(bookmark, ConfiguredJobs) else logger.debug
                log("%s no longer exists (404); it will not be fetched again", ref.label)
                bookmark.advance(ref.key, done=True, missing=True)
                run.job_missing()
            elif isinstance(error, UnsafeId):
                # No request can ever be made for it: keeping it pending would fail every later run,
                # even once the vendor no longer lists it. Named in this run; named again in any run
                # whose listing still shows it.
                self.runner.failures.add(f"{error} ({ref.label} is not synced)")
                if ref.key.id in bookmark.pending:
                    del bookmark.pending[ref.key.id]
                run.job_failed()
            else:
                self.runner.failures.add(f"{error} ({ref.label} stays unsynced and is fetched again next run)")
                bookmark.advance(ref.key, done=False)
                run.job_failed()
        else:
            assert self.job is not None
            bookmark.advance(ref.key, done=self.job.finished)
            run.job_done(self.job.finished)
        run.progress()


class SourceRunner:
    """One source: its listing on a thread, its fetches on `width` worker threads."""

    def __init__(self, engine: Engine, stream: JobStream, *, yield_records: bool) -> None:
        self.engine = engine
        self.stream = stream
        self.source: JobSource = stream.source
        self.failures = stream.failures
        self.width = stream.width
        self.yield_records = yield_records
        self.selected = [rs for rs in stream.result_streams if rs.selected]
        self.run: SourceRun = stream.reporter.start(stream.name, self.source)
        self.out = engine.queue
        # Listed jobs waiting for a worker: the listing reads on until this many wait (their listed
        # summaries are all it holds), so a listing of any length costs bounded memory, and a
        # listing of fewer jobs is known whole early (the progress line's total).
        self.todo: queue.Queue[t.Any] = queue.Queue(maxsize=max(self.width, MAX_QUEUED_JOBS))
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._outstanding = 0
        self._idle = threading.Condition(self._lock)
        self._refused = 0
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        session = getattr(self.source.client, "session", None)
        hooks = getattr(session, "hooks", None)
        if isinstance(hooks, dict) and self.engine.budget.response_hook not in hooks.setdefault("response", []):
            hooks["response"].append(self.engine.budget.response_hook)
        name = self.stream.name
        main = threading.Thread(target=self._main, name=f"list-{name}", daemon=True)
        self._threads.append(main)
        for index in range(self.width):
            worker = threading.Thread(target=self._worker, name=f"fetch-{name}-{index}", daemon=True)
            self._threads.append(worker)
            worker.start()
        main.start()

    def post(self, item: t.Callable[[], t.Any] | JobUnit) -> None:
        """Have the writer run `item` (in the order posted)."""
        self.out.put(item)

    def call(self, fn: t.Callable[[], t.Any]) -> t.Any:
        """Run `fn` on the writer and return its result (state is only ever changed there)."""
        done = threading.Event()
        box: list[t.Any] = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))
            finally:
                done.set()

        self.out.put(run)
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop_quietly(self) -> None:
        """The writer is done (or gone): let the threads end without doing more."""
        self.stopped.set()

    def _main(self) -> None:
        try:
            self._sync()
        except BaseException as exc:  # a bug in the runner itself: the source's failure, never the run's
            logger.debug("%s: unexpected error", self.source.name, exc_info=True)
            self._fail_source(f"{self.source.name}: {describe(exc)} (stream {self.stream.name})")
        finally:
            self._wait_idle()  # every job handed out is written (or failed) before the end
            for _ in range(self.width):
                self.todo.put(None)
            self.post(lambda: self.stream.reporter.finish(self.run))
            self.out.put(_Finished())

    def _fail_source(self, message: str) -> None:
        def record() -> None:
            self.failures.add(message)
            self.run.failed_source()

        self.post(record)

    def stop_source(self, error: BaseException, message: str | None = None) -> None:
        """A source-wide failure (credentials refused, a rate limit past max_retry_wait): nothing
        more is fetched from this source; what is not fetched stays pending."""
        with self._lock:
            if self.stopped.is_set():
                return
            self.stopped.set()
        self._fail_source(message or str(error))

    # -- listing ---------------------------------------------------------------------------------

    def _sync(self) -> None:
        source, stream = self.source, self.stream
        try:
            partitions = source.partitions()
        except Exception as exc:
            logger.debug("%s: listing partitions failed", source.name, exc_info=True)
            self._fail_source(f"{self._reason(exc, 'listing')} (stream {stream.name}: nothing synced)")
            return
        bookmarks = self.call(lambda: stream.open_partitions(partitions))
        for partition in partitions:
            if self.stopped.is_set():
                return
            self._partition(partition, bookmarks[partition])

    def _reason(self, exc: BaseException, doing: str) -> str:
        text = describe(exc)
        return text if isinstance(exc, TapJobResultsError) else f"{self.source.name}: {doing} failed: {text}"

    def _partition(self, partition: str, bookmark: Bookmark) -> None:
        from tap_jobresults.streams import backfill_streams

        source = self.source
        where = source.partition_name(partition)
        backfill = self.call(lambda: backfill_streams(bookmark, self.selected))
        if backfill and not self._backfill(partition, bookmark, backfill):
            return
        names = {rs.name for rs in self.selected}

        def mark_results() -> None:
            not_yet = set((bookmark.state.get("backfill") or {}).get("streams", []))
            bookmark.state["results"] = sorted(names - not_yet)

        self.call(mark_results)
        listed = 0

        def take(ref: JobRef) -> None:
            nonlocal listed
            if self.stopped.is_set():
                raise _Stop
            listed += 1
            self.run.listed(1)
            self._submit(partition, bookmark, ref)

        ok = True
        try:
            source.stream_refs(partition, bookmark, take)
            self.run.listed(0)
        except _Stop:
            ok = False
        except Exception as exc:
            ok = False
            logger.debug("%s: listing failed", where, exc_info=True)
            if getattr(exc, "source_wide", False):
                self.stop_source(exc)
            else:
                message = f"{self._reason(exc, source.list_label(partition))}; {where} is retried next run"

                def failed() -> None:
                    self.failures.add(message)
                    self.run.failed_listing()

                self.post(failed)
        self._wait_idle()
        if listed:
            logger.info("%s: %d jobs to sync (new, late or unfinished)", where, listed)
        if ok and not self.stopped.is_set():
            self.post(bookmark.close)

    def _submit(self, partition: str, bookmark: Bookmark, ref: JobRef) -> None:
        with self._lock:
            self._outstanding += 1
        self.todo.put((partition, bookmark, ref))

    def _wait_idle(self) -> None:
        with self._idle:
            while self._outstanding:
                self._idle.wait(1.0)

    # -- fetching --------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            item = self.todo.get()
            if item is None:
                return
            partition, bookmark, ref = item
            try:
                if not self.stopped.is_set():
                    unit = self._fetch(partition, bookmark, ref, self.selected, job_record=True)
                    if unit is not None:
                        self.post(unit)
            except BaseException:  # never lose the count below, whatever happened
                logger.debug("%s: unexpected error in a fetch worker", ref.label, exc_info=True)
            finally:
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()

    def _fetch(
        self,
        partition: str,
        bookmark: Bookmark,
        ref: JobRef,
        streams: list[ResultStream],
        *,
        job_record: bool,
        backfill: dict | None = None,
    ) -> JobUnit | None:
        """Fetch and build one job inside one guard; None when the source stopped."""
        budget = self.engine.budget
        budget.reading(True)
        try:
            job = self.source.fetch(partition, ref, bool(streams))
            output = self.stream.build_output(job, streams, job_record=job_record, as_objects=self.yield_records)
            budget.force(output.size)  # the records' bytes, until written (JobUnit.size)
            budget.release(budget.take_mine() - output.size)  # the body's, now gone
        except BaseException as exc:
            budget.release(budget.take_mine())
            budget.reading(False)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if getattr(exc, "source_wide", False):
                self.stop_source(exc)
                return None
            if isinstance(exc, AuthError):
                with self._lock:
                    self._refused += 1
                    refused = self._refused
                if refused >= MAX_REFUSED_IN_A_ROW:
                    self.stop_source(
                        exc,
                        f"{exc}; {refused} requests in a row were refused: stopping {self.source.name} "
                        "(are the credentials right?)",
                    )
                    return None
            else:
                with self._lock:
                    self._refused = 0
            if not isinstance(exc, TapJobResultsError):
                logger.debug("%s: unexpected error", ref.label, exc_info=True)
            error: TapJobResultsError | str = (
                exc if isinstance(exc, TapJobResultsError) else f"{ref.label}: {describe(exc)}"
            )
            return JobUnit(self, bookmark, ref, error=error, backfill=backfill)
        budget.reading(False)
        with self._lock:
            self._refused = 0
        return JobUnit(self, bookmark, ref, job=job, output=output, backfill=backfill)

    # -- backfill --------------------------------------------------------------------------------

    def _backfill(self, partition: str, bookmark: Bookmark, streams: list[ResultStream]) -> bool:
        """Newly selected result streams: re-read the jobs already bookmarked, for those streams only,
        one at a time and in order (the progress mark is the last job done). False: stop the source."""
        source = self.source
        names = ", ".join(s.name for s in streams)
        where = source.partition_name(partition)
        logger.info("%s: %s newly selected: reading the jobs already synced for it", where, names)

        def open_backfill() -> tuple[dict, list | None]:
            state = bookmark.state.get("backfill") or {"streams": sorted(s.name for s in streams), "through": None}
            bookmark.state["backfill"] = state
            return state, state.get("through")

        # Open (or resume) before listing: a backfill whose listing fails is still owed, and the
        # streams it covers are not marked as synced for the jobs already bookmarked.
        state, through = self.call(open_backfill)
        try:
            refs = source.synced_jobs(partition, bookmark)
        except Exception as exc:
            logger.debug("%s: backfill listing failed", where, exc_info=True)
            message = f"{self._reason(exc, source.list_label(partition))}; backfill of {names} for {where} is retried next run"
            self.post(lambda: self.failures.add(message))
            return not getattr(exc, "source_wide", False)
        refs = [ref for ref in refs if through is None or ref.key.as_list() > through]
        for ref in refs:
            if self.stopped.is_set():
                return False
            unit = self._fetch(partition, bookmark, ref, streams, job_record=False, backfill=state)
            if unit is None:
                return False
            if unit.error is not None:
                message = f"{unit.error} (backfill of {names}; retried next run)"
                self.post(functools.partial(self.failures.add, message))
                return True
            self.post(unit)

        def close_backfill() -> None:
            bookmark.state["backfill"] = None  # not removed: see the bookmark format in lifecycle.py
            bookmark.state["results"] = sorted({*bookmark.state.get("results", []), *(s.name for s in streams)})
            logger.info("%s: backfill of %s done (%d jobs)", where, names, len(refs))

        self.call(close_backfill)
        return True


class _Stop(Exception):
    """The source stopped while its listing was being read."""
