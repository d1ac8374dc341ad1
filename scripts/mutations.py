"""Mutation check: the tests fail when the tap's behaviour breaks.

Each entry below is a one-line behavioural mutation of tap_jobresults/: a file, an exact snippet of
it, what replaces the snippet, the tests that must catch it, and why the behaviour matters. For each
mutation the tree is copied to a scratch directory, the mutation applied there, and the tests run
with the scratch directory as cwd and first on PYTHONPATH, so both the tests and the tap binary
they start (`tap-jobresults` of this virtualenv) import the mutated package.

A mutation is caught when its tests fail. The check fails when any mutation survives (its tests
pass), when a snippet is not found exactly once in its file (a refactor must update the list, not
silently drop an entry), or when a run errs or times out. Before the mutations, every selected test
is run once on an unmutated copy: a test that fails already proves nothing.

    python scripts/mutations.py            # all of them, 2 at a time (make mutations)
    python scripts/mutations.py -k redirect --jobs 1
    python scripts/mutations.py --list
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "tap_jobresults"
TIMEOUT = 240  # seconds per mutation; a hang is reported as an error (choose a test that fails fast)


@dataclasses.dataclass(frozen=True)
class Mutation:
    file: str  # under tap_jobresults/
    original: str  # must occur exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest arguments: node ids, files, or "-k" expressions
    why: str  # the behaviour the mutation removes
    slow: bool = False  # its test takes a minute or more when mutated: started first


def m(
    file: str, original: str, replacement: str, tests: str | tuple[str, ...], why: str, *, slow: bool = False
) -> Mutation:
    return Mutation(file, original, replacement, (tests,) if isinstance(tests, str) else tests, why, slow)


F, H, L, S, U = (
    "tests/test_faults.py",
    "tests/test_hostile.py",
    "tests/test_listings.py",
    "tests/test_state.py",
    "tests/test_units.py",
)
LOOKBACK, OPERATOR, SHAPES, INPUT, STREAMS, HOOKS = (
    "tests/test_lookback.py",
    "tests/test_operator.py",
    "tests/test_vendor_shapes.py",
    "tests/test_state_input.py",
    "tests/test_streams.py",
    "tests/test_sdk_hooks.py",
)

MUTATIONS: list[Mutation] = [
    # -- issue 15: what the fast suite once let through ---------------------------------------------
    m(
        "client.py",
        'reset = parse_reset(response.headers.get("X-RateLimit-Reset"))',
        "reset = None",
        f"{F}::test_talonic_rate_limit_reset_is_honoured_without_retry_after",
        "Talonic's X-RateLimit-Reset (no Retry-After) sets the wait before the retry",
    ),
    m(
        "sources/cognite.py",
        'and (top is None or score > top["score"])',
        "and top is None",
        f"{STREAMS}::test_match_results_carry_the_top_match",
        "the top match is the highest-scored one, not the first the API lists",
    ),
    m(
        "sources/talonic.py",
        "if isinstance(job_status, str) and not self.is_finished(job_status):",
        "if False:",
        f"{S}::test_talonic_results_lagging_the_listing_keep_the_job_pending_until_the_grid_is_final",
        "a job listed as done whose results say processing stays pending",
    ),
    m(
        "sources/clavata.py",
        '    col("created", "created", convert=to_ts),\n    col("job_uuid", "jobUuid", convert=text),',
        '    col("created", "created", convert=lambda v: (to_ts(v) or "")[:10] or None),\n'
        '    col("job_uuid", "jobUuid", convert=text),',
        f"{SHAPES}::test_every_record_is_valid_against_its_schema_with_formats_checked",
        "clavata_reports.created is a date-time, checked against the schema's format",
    ),
    # -- lookback window and the bookmark ------------------------------------------------------------
    m(
        "lifecycle.py",
        "        floor = self.floor\n        # A job without a creation time",
        "        floor = self.hwm\n        # A job without a creation time",
        f"{LOOKBACK}::test_a_job_listed_late_is_synced_once_by_the_next_run",
        "a job listed late, below the mark but inside the window, is still synced",
    ),
    m(
        "lifecycle.py",
        '        if floor is None or window_start > floor:\n            self._state["floor"]',
        '        if False:\n            self._state["floor"]',
        f"{LOOKBACK}::test_state_holds_the_window_not_the_history",
        "the floor rises to the window's start at the end of a run, so state holds one window",
    ),
    m(
        "lifecycle.py",
        'capped = min(key, JobKey(self.policy.run_started, "")) if key.created else None',
        "capped = key if key.created else None",
        f"{LOOKBACK}::test_a_job_dated_in_the_future_does_not_hide_later_jobs",
        "a job dated in the future never moves the mark past the run's own clock",
    ),
    m(
        "engine.py",
        "                            item.write()\n                            item.commit()\n",
        "                            item.commit()\n                            self.write_state()  # STATE before the job's records\n"
        "                            item.write()\n",
        f"{S}::test_a_killed_sync_resumes_from_its_last_state_without_loss",
        "a job's STATE comes after its records, so a run killed in between loses nothing",
    ),
    m(
        "engine.py",
        "bookmark.advance(ref.key, done=self.job.finished)",
        "bookmark.advance(ref.key, done=True)",
        f"{S}::test_second_sync_emits_exactly_what_finished_or_appeared",
        "unfinished jobs stay pending in the bookmark and are fetched again",
    ),
    m(
        "sources/base.py",
        "        return isinstance(status, str) and status in self.terminal_statuses",
        "        return isinstance(status, str)",
        f"{S}::test_statuses_the_docs_do_not_list_mean_unfinished",
        "a status no doc lists means unfinished, never done",
    ),
    m(
        "lifecycle.py",
        "return bool(self.start_date and created and created < self.start_date)",
        "return False",
        f"{S}::test_start_date_ignores_older_jobs",
        "start_date skips older jobs",
    ),
    m(
        "sources/base.py",
        "for job_id, created in {} if self.backfill else self.pending.items():",
        "for job_id, created in {}.items():",
        f"{U}::test_pending_jobs_the_listing_never_showed_are_fetched_by_id",
        "pending jobs the listing no longer shows are fetched by ID",
    ),
    m(
        "sources/base.py",
        "if key > self.previous and self.ordered:",
        "if False:",
        f"{U}::test_a_listing_out_of_order_is_read_to_the_end",
        "a listing out of creation order is read to its end (no early stop)",
    ),
    # -- records and extra_fields --------------------------------------------------------------------
    m(
        "records.py",
        'record["extra_fields"] = extra or None',
        'record["extra_fields"] = None',
        f"{SHAPES}::test_no_field_the_vendor_sent_is_lost",
        "fields no column carries are kept in extra_fields",
    ),
    m(
        "records.py",
        "if key in top or key in drop or is_empty(value, proto3):",
        "if key in drop or is_empty(value, proto3):",
        f"{SHAPES}::test_each_vendor_spelling_lands_in_its_column_and_stays_in_extra_fields_as_sent",
        "a field landed in its column is not repeated in extra_fields",
    ),
    m(
        "records.py",
        "                if path == spec.paths[0]:\n",
        "                if True:\n",
        f"{SHAPES}::test_no_field_the_vendor_sent_is_lost",
        "an alias spelling stays in extra_fields as sent; only the column's own spelling leaves it",
    ),
    m(
        "records.py",
        "        for path in spec.paths:\n",
        "        for path in spec.paths[:1]:\n",
        f"{SHAPES}::test_each_vendor_spelling_lands_in_its_column_and_stays_in_extra_fields_as_sent",
        "every vendor spelling of a column (total_documents, phase, ...) fills it",
    ),
    m(
        "records.py",
        "    if isinstance(value, float) and value.is_integer():\n        return int(value)",
        "    if isinstance(value, float) and value.is_integer():\n        return int(value)\n"
        "    if isinstance(value, str) and value.isdigit():\n        return int(value)",
        f"{L}::test_a_listed_field_of_the_wrong_type_goes_to_extra_fields",
        "a number sent as text is not coerced into an integer column; it goes to extra_fields as sent",
    ),
    m(
        "sources/talonic.py",
        "        return Partial(round(number * 100, 6), value)",
        "        return Partial(number, value)",
        f"{SHAPES}::test_each_vendor_spelling_lands_in_its_column_and_stays_in_extra_fields_as_sent",
        "Talonic progress as a 0-1 fraction is landed as a percentage",
    ),
    m(
        "sources/talonic.py",
        'row["id"] = f"{job_id}:{document}" if document is not None else f"{job_id}:#{index}"',
        'raise MalformedPayload("talonic", "rows", "a row without id")',
        f"{SHAPES}::test_talonic_rows_without_id_get_the_same_deterministic_id_every_run",
        "Talonic rows without an id get a deterministic one, they do not fail the job",
    ),
    m(
        "sources/talonic.py",
        'if no_data and promised and status.lower() not in ("failed", "cancelled", "canceled"):',
        "if False:",
        f"{L}::test_results_that_do_not_hold_the_promised_rows_fail_the_job_and_keep_it_pending",
        "results {} for a job that promises documents fail the job instead of landing 0 rows as final",
    ),
    # -- listings ------------------------------------------------------------------------------------
    m(
        "sources/base.py",
        "if next_cursor in seen or next_cursor == cursor:",
        "if False:",
        f"{L}::test_a_listing_whose_cursors_loop_ends_with_an_error_and_bookmarks_nothing",
        "a listing whose cursors loop is an error at once",
    ),
    m(
        "sources/base.py",
        'return quote(text, safe="")',
        "return text",
        f"{L}::test_job_ids_from_a_listing_are_one_path_segment",
        "a job ID from a listing is one URL path segment",
    ),
    # -- HTTP: hostile servers, retries, credentials -------------------------------------------------
    m(
        "client.py",
        "response = self._adapter.send(",
        "response = self.session.send(",  # Session.send follows redirects unless told not to
        (H, "-k", "redirect_to_another_host and 302"),
        "redirects are not followed: credentials stay on the configured host",
    ),
    m(
        "client.py",
        "        cap = self.max_response_bytes\n",
        "        cap = 1 << 62\n",
        (H, "-k", "size_cap and not chunked"),
        "a body over max_response_mb stops reading and fails its job",
    ),
    m(
        "client.py",
        "timer = Deadline(self.read_timeout, self.connect_timeout)",
        "timer = Deadline(1e9, self.connect_timeout)",
        (H, "-k", "trickling and headers"),
        "each response must be complete within read_timeout (a trickling server cannot hold a job)",
        slow=True,
    ),
    m(
        "client.py",
        'retry_after = parse_retry_after(response.headers.get("Retry-After"))',
        "retry_after = None",
        f"{F}::test_retry_after_is_honoured",
        "Retry-After sets the wait before the retry",
    ),
    m(
        "client.py",
        'self.session.proxies = environment["proxies"]',
        "self.session.proxies = {}",
        f"{H}::test_proxies_from_the_environment_keep_working",
        "proxies from the environment (HTTPS_PROXY, ...) are used, though they are read once per client",
    ),
    m(
        "scrub.py",
        "        for secret in self._ordered:\n",
        "        for secret in ():\n",
        f"{F}::test_a_wrong_key_fails_clearly_and_leaks_no_secret",
        "secrets are scrubbed from every log line",
    ),
    m(
        "auth.py",
        'if refused is None or self._token is None or refused == f"Bearer {self._token}":',
        "if True:",
        f"{H}::test_a_401_storm_causes_one_token_refresh",
        "concurrent 401s share one token refresh",
    ),
    m(
        "sources/cognite.py",
        'headers={"X-Job-Token": token} if token else None,',
        "headers=None,",
        f"{STREAMS}::test_job_token_and_beta_header_are_sent",
        "a predict job's X-Job-Token is sent",
    ),
    # -- sharding, backfill, state, operator ---------------------------------------------------------
    m(
        "lifecycle.py",
        "return self.shard is None or self.shard.owns(source, job_id)",
        "return True",
        "tests/test_shards.py::test_a_shard_state_holds_only_its_own_jobs",
        "a shard syncs only the jobs whose hash falls in it",
    ),
    m(
        "engine.py",
        "backfill = self.call(lambda: backfill_streams(bookmark, self.selected))",
        "backfill = []",
        f"{OPERATOR}::test_a_result_stream_selected_later_is_backfilled_from_the_jobs_already_synced",
        "a result stream selected later is backfilled from the jobs already synced",
    ),
    m(
        "streams.py",
        "        super()._write_state_message()\n\n    def _write_record_message",
        "        pass\n\n    def _write_record_message",
        "tests/test_core.py::TestSDKStandard::test_the_record_limit_cut_the_sync_and_its_last_state_loses_nothing",
        "a record-limited run (--test, the SDK's standard tests) ends on a STATE of what it fully emitted",
    ),
    m(
        "engine.py",
        "if since is None or last <= SMALL_STATE or since >= 2 * last:",
        "if True:",
        f"{L}::test_state_output_stays_linear_with_thousands_of_pending_jobs_the_server_forgot",
        "with a large bookmark, STATE is written at most once a second, not after every job",
        slow=True,
    ),
    m(
        "state.py",
        "    if not isinstance(bookmark, dict):\n        raise StateError",
        "    if False:\n        raise StateError",
        f"{INPUT}::test_a_bookmark_of_the_wrong_shape_is_refused_by_its_path",
        "a state of the wrong shape is refused before any record",
    ),
    m(
        "streams.py",
        "            if run.reached_source:\n",
        "            if True:\n",
        f"{OPERATOR}::test_no_heartbeat_for_a_source_that_refused_the_credentials",
        "no sync_runs heartbeat for a source that refused the credentials",
    ),
    m(
        "engine.py",
        "        self.width = stream.width\n",
        "        self.width = 1\n",
        "tests/test_concurrency.py::test_each_source_keeps_exactly_its_width_of_requests_in_flight",
        "each source fetches max_concurrent_requests jobs at once",
    ),
    m(
        "tap.py",
        "os._exit(128 + signum)",
        "os._exit(0)",
        f"{S}::test_sigterm_exits_non_zero_with_a_clear_last_line",
        "an interrupted run exits 143, not 0",
    ),
    m(
        "tap.py",
        '                "\\n  ".join(self.failures.items),\n            )\n            sys.exit(1)',
        '                "\\n  ".join(self.failures.items),\n            )\n            sys.exit(0)',
        f"{F}::test_exhausted_retries_leave_the_job_unbookmarked_and_exit_non_zero",
        "a run with failed jobs exits 1",
    ),
    # -- sdk_hooks ----------------------------------------------------------------------------------
    m(
        "sdk_hooks.py",
        "        and not maps[0].flattening_enabled\n",
        "        and True\n",
        f"{HOOKS}::test_flattening_takes_the_sdk_record_path",
        "flattened streams take the SDK's record path",
    ),
    m(
        "sdk_hooks.py",
        "    stream.state_manager.is_flushed = False\n    stream._write_state_message()",
        "    stream._write_state_message()",
        f"{HOOKS}::test_write_state_message_writes_only_when_state_is_not_flushed",
        "STATE after a job even when no record went through the SDK since the last one (a failed fetch)",
    ),
]


def _files() -> list[str]:
    """The working tree as git sees it (tracked and new files; no virtualenvs, caches or outputs)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def _copy(files: list[str], target: Path) -> None:
    """The project's files into `target`, and its tools' virtualenvs (.venv-meltano, ...) linked in: tests
    that use them (Meltano's state merge) run in the copy as in the project."""
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, destination)
    for venv in ROOT.glob(".venv-*"):
        if venv.is_dir() and not (target / venv.name).exists():
            (target / venv.name).symlink_to(venv)


def _env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(scratch)  # ahead of the editable install's path entry
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["CI"] = env.get("CI", "1")  # hypothesis replays the same examples
    return env


def _pytest(scratch: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str, float]:
    started = time.monotonic()
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(
            argv,
            cwd=scratch,
            env=_env(scratch),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, out, time.monotonic() - started
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def check_applies(mutation: Mutation) -> str | None:
    path = ROOT / PACKAGE / mutation.file
    if not path.is_file():
        return f"{PACKAGE}/{mutation.file} does not exist"
    count = path.read_text().count(mutation.original)
    if count != 1:
        return f"snippet found {count} times in {PACKAGE}/{mutation.file} (must be exactly once): {mutation.original!r}"
    return None


def run_one(mutation: Mutation, files: list[str]) -> tuple[str, float, str]:
    """('caught' | 'SURVIVED' | 'ERROR', seconds, detail)."""
    with tempfile.TemporaryDirectory(prefix="tap-mutation-") as tmp:
        scratch = Path(tmp)
        _copy(files, scratch)
        target = scratch / PACKAGE / mutation.file
        target.write_text(target.read_text().replace(mutation.original, mutation.replacement, 1))
        code, output, seconds = _pytest(scratch, mutation.tests, TIMEOUT)
    tail = output.strip().splitlines()[-1] if output.strip() else ""
    if code is None:
        return "ERROR", seconds, f"timed out after {TIMEOUT} s"
    if code == 1:
        return "caught", seconds, tail
    if code == 0:
        return "SURVIVED", seconds, tail
    return "ERROR", seconds, f"pytest exit code {code}: {tail}\n{output[-3000:]}"


def preflight(files: list[str]) -> None:
    """The copy imports its own package, and the selected tests pass on it unmutated."""
    with tempfile.TemporaryDirectory(prefix="tap-mutation-") as tmp:
        scratch = Path(tmp)
        _copy(files, scratch)
        probe = subprocess.run(
            [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
            cwd=scratch,
            env=_env(scratch),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(probe).resolve().is_relative_to(scratch.resolve()):
            sys.exit(f"the scratch copy would not be tested: {PACKAGE} is imported from {probe}")


def baseline(files: list[str], mutations: list[Mutation], jobs: int) -> float:
    """Every selection passes unmutated: the test ids and files in one pytest run over `jobs` workers
    (pytest-xdist), then each -k selection in a run of its own."""
    plain = sorted({test for mu in mutations for test in mu.tests if "-k" not in mu.tests})
    keyed = sorted({mu.tests for mu in mutations if "-k" in mu.tests})
    groups = ([("-n", str(jobs), *plain)] if jobs > 1 else [tuple(plain)]) if plain else []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tap-mutation-") as tmp:
        scratch = Path(tmp)
        _copy(files, scratch)
        for tests in [*groups, *keyed]:
            code, output, _ = _pytest(scratch, tests, TIMEOUT * 4)
            if code != 0:
                print(output[-4000:])
                sys.exit(f"baseline: the selected tests do not pass unmutated ({' '.join(tests)})")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="mutations run at once (default 2)")
    parser.add_argument("-k", dest="only", help="only mutations whose file or description contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the selected tests unmutated first")
    args = parser.parse_args()

    selected = [mu for mu in MUTATIONS if not args.only or args.only in f"{mu.file} {mu.why}"]
    if args.list:
        for mu in selected:
            print(f"{mu.file:<20} {mu.why}\n{'':<20} {' '.join(mu.tests)}")
        return 0
    started = time.monotonic()
    stale = [(mu, problem) for mu in selected if (problem := check_applies(mu))]
    for mu, problem in stale:
        print(f"NO LONGER APPLIES  {mu.file}: {mu.why}\n    {problem}")
    runnable = [mu for mu in selected if mu not in {s for s, _ in stale}]
    files = _files()
    preflight(files)
    if not args.no_baseline:
        print(f"baseline: the selected tests pass unmutated ({baseline(files, runnable, args.jobs):.0f} s)", flush=True)

    results: dict[str, int] = {"caught": 0, "SURVIVED": 0, "ERROR": 0}
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        ordered = sorted(runnable, key=lambda mu: not mu.slow)  # the long ones first: a shorter tail
        futures = {pool.submit(run_one, mu, files): mu for mu in ordered}
        for future in concurrent.futures.as_completed(futures):
            mu = futures[future]
            outcome, seconds, detail = future.result()
            results[outcome] += 1
            print(f"{outcome:<8} {seconds:5.1f}s  {mu.file}: {mu.why}  [{' '.join(mu.tests).replace('tests/', '')}]")
            if outcome != "caught":
                print(f"    {detail}")
            sys.stdout.flush()

    elapsed = time.monotonic() - started
    print(
        f"{results['caught']} caught, {results['SURVIVED']} survived"
        + (f", {results['ERROR']} errors" if results["ERROR"] else "")
        + (f", {len(stale)} no longer apply" if stale else "")
        + f" ({len(selected)} mutations, {elapsed:.0f} s, {args.jobs} at a time)"
    )
    return 0 if results["caught"] == len(selected) else 1


if __name__ == "__main__":
    sys.exit(main())
