"""Run the real tap binary against a corrupted world, the repaired world, and again; list what broke.

Invariants (issue 18, contract "Failure semantics"):
- run 1 (corrupted): no traceback; exit 0 or 1 (1 when a job failed); stdout is whole Singer messages
  in strict JSON and valid Unicode; no configured secret (or issued token) on stdout or stderr; no
  request outside the API's routes; for every job:
    bookmarked  => its job record (finished) and exactly the result records its served body holds;
                   and its body could be right (not about another job, no undecodable value);
    not bookmarked and not legitimately unfinished => named in an ERROR line (its ID, or its
                   listing/source), unless the tap could not know it (its listing entry was replaced);
    a job carrying no corruption is synced, unless its listing failed (named).
- run 2 (repaired, from run 1's final STATE): exit 0, no ERROR; every job not bookmarked in run 1 is
  synced whole; no job bookmarked in run 1 is emitted again.
- run 3 (from run 2's final STATE): emits none of the jobs' records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

from tests.conftest import TAP, tap_env
from tests.fuzz.server import FuzzServer
from tests.fuzz.world import JOB_STREAM, RESULT_ARRAYS, ROUTE_SHAPES, Corruption, Job, World

TAP_TIMEOUT = float(os.environ.get("FUZZ_TAP_TIMEOUT", "120"))
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \| (\w+)\s*\|")
INDEX = {
    "match_results": "item_index",
    "pipeline_matches": "match_index",
    "suggested_rules": "rule_index",
    "generated_rules": "rule_index",
    "clavata_reports": "result_index",
    "extraction_rows": None,  # keyed by row id: counted
}
PARENT_KEY = {
    "predict": ("job_id",),
    "runs": ("pipeline_id", "run_id"),
    "clavata": ("job_uuid",),
    "talonic": ("job_id",),
}


@dataclasses.dataclass
class Violation:
    check: str  # a short name of the invariant
    detail: str
    job: str | None = None
    corruption: Corruption | None = None
    run: int = 1

    def describe(self) -> str:
        where = f" [{self.job}]" if self.job else ""
        what = f"\n      corruption: {self.corruption.describe()}" if self.corruption else ""
        return f"run {self.run}: {self.check}{where}: {self.detail}{what}"


@dataclasses.dataclass
class TapRun:
    rc: int | None  # None: killed at the timeout
    messages: list[dict]
    stdout: bytes
    stderr: str
    problems: list[str]  # stdout that is not whole strict-JSON Singer messages
    errors: list[str]  # ERROR/CRITICAL log records, continuation lines included
    seconds: float

    @property
    def state(self) -> dict | None:
        states = [m["value"] for m in self.messages if m.get("type") == "STATE"]
        return states[-1] if states else None

    def records(self, stream: str) -> list[dict]:
        return [
            m["record"]
            for m in self.messages
            if m.get("type") == "RECORD" and m.get("stream") == stream and isinstance(m.get("record"), dict)
        ]


# -- running the tap ---------------------------------------------------------------------------------


def run_tap(config: dict, state: dict | None) -> TapRun:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))
        argv = [TAP, "--config", str(config_path)]
        if state is not None:
            state_path = Path(tmp) / "state.json"
            state_path.write_text(json.dumps(state))
            argv += ["--state", str(state_path)]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=TAP_TIMEOUT, stdin=subprocess.DEVNULL, env=tap_env()
            )
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = None, exc.stdout or b"", exc.stderr or b""
        seconds = time.monotonic() - started
    messages, problems = parse_stdout(out)
    stderr = err.decode("utf-8", errors="replace")
    return TapRun(rc, messages, out, stderr, problems, error_records(stderr), seconds)


def _no_constants(name: str) -> t.NoReturn:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_stdout(out: bytes) -> tuple[list[dict], list[str]]:
    problems: list[str] = []
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"stdout is not UTF-8 ({exc})")
        text = out.decode("utf-8", errors="replace")
    messages = []
    lines = text.split("\n")
    if lines and lines[-1] != "":
        problems.append(f"stdout ends in a partial line: {lines[-1][:120]!r}")
    for number, line in enumerate(lines):
        if not line:
            continue
        try:
            message = json.loads(line, parse_constant=_no_constants)
        except ValueError as exc:
            if number != len(lines) - 1:
                problems.append(f"stdout line {number} is not strict JSON ({exc}): {line[:120]!r}")
            continue
        if not isinstance(message, dict) or message.get("type") not in {
            "SCHEMA",
            "RECORD",
            "STATE",
            "ACTIVATE_VERSION",
            "BATCH",
        }:
            problems.append(f"stdout line {number} is not a Singer message: {line[:120]!r}")
            continue
        bad = _unencodable(message)
        if bad:
            problems.append(f"stdout line {number} carries a string that is not valid Unicode ({bad}): {line[:120]!r}")
        messages.append(message)
    return messages, problems


def _unencodable(value: t.Any) -> str | None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return exc.reason
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def error_records(stderr: str) -> list[str]:
    records: list[list[str]] = []
    level = None
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if match:
            level = match.group(1)
            if level in ("ERROR", "CRITICAL"):
                records.append([line])
        elif level in ("ERROR", "CRITICAL") and records:
            records[-1].append(line)
    return ["\n".join(r) for r in records]


# -- judging -----------------------------------------------------------------------------------------


def _by_id(collection: t.Any) -> dict:
    """A bookmark's job collection as {id: value}: state format 3 stores [id, value] pairs (older
    formats an object keyed by ID)."""
    if isinstance(collection, dict):
        return collection
    return {pair[0]: pair[1] for pair in collection or () if isinstance(pair, list) and len(pair) == 2}


def bookmarked(state: dict | None, job: Job) -> bool:
    """Does the state say this job is finished and synced (never fetched again)?"""
    partitions = ((state or {}).get("bookmarks", {}).get(JOB_STREAM[job.kind]) or {}).get("job_bookmarks") or {}
    if job.kind == "predict":
        return _by_id((partitions.get("all") or {}).get("finished")).get(job.id) in ("finished", "missing")
    mark = partitions.get(job.partition) or {}
    if job.id in _by_id(mark.get("pending")):
        return False
    if job.id in _by_id(mark.get("seen")):
        return True
    floor = mark.get("floor")
    return bool(floor and job.created) and [job.created, job.id] <= floor


def job_records(run: TapRun, job: Job) -> list[dict]:
    stream = JOB_STREAM[job.kind]
    keys = PARENT_KEY[job.kind]
    return [r for r in run.records(stream) if tuple(str(r.get(k)) for k in keys) == job.key]


def result_records(run: TapRun, job: Job) -> dict[str, list[dict]]:
    keys = PARENT_KEY[job.kind]
    return {
        stream: [r for r in run.records(stream) if tuple(str(r.get(k)) for k in keys) == job.key]
        for stream in RESULT_ARRAYS[job.kind]
    }


def results_match(found: dict[str, list[dict]], expected: dict[str, int]) -> tuple[str, str] | None:
    """None, or (check, detail): records missing, or records that are not the body's (twice, or another job's)."""
    for stream, records in found.items():
        want = expected[stream]
        column = INDEX[stream]
        got = sorted(r.get(column) for r in records) if column else list(range(len(records)))
        if got != list(range(want)):
            check = "bookmarked without records" if set(range(want)) - set(got) else "records not the body's"
            return check, f"{stream}: expected {want} records, got {len(records)} (indexes {got[:10]})"
    return None


def named(run: TapRun, world: World, job: Job, by_listing_only: bool = False) -> bool:
    patterns = list(world.listing_names(job))
    if not by_listing_only:
        patterns.append(rf"(?<![\w-]){re.escape(job.id)}(?![\w-])")
    return any(re.search(p, record) for record in run.errors for p in patterns)


def run_level(run: TapRun, world: World, n: int, servers: dict[str, FuzzServer] | None) -> list[Violation]:
    found: list[Violation] = []
    if run.rc is None:
        found.append(Violation("timeout", f"the tap did not finish within {TAP_TIMEOUT:g} s", run=n))
    elif run.rc not in (0, 1):
        found.append(Violation("exit code", f"exit {run.rc}", run=n))
    if "Traceback (most recent call last)" in run.stderr:
        tail = run.stderr[run.stderr.index("Traceback (most recent call last)") :]
        last = [line for line in tail.splitlines() if line and not line.startswith(" ")][-1:]
        found.append(Violation("traceback", (last[0] if last else "")[:300], run=n))
    for problem in run.problems[:3]:
        found.append(Violation("protocol", problem, run=n))
    for name, secret in world.secrets.items():
        if secret.encode() in run.stdout:
            found.append(
                Violation("secret on stdout", f"{name} appears {run.stdout.count(secret.encode())} times", run=n)
            )
        if secret in run.stderr:
            found.append(Violation("secret on stderr", f"{name} appears {run.stderr.count(secret)} times", run=n))
    ids = world.offered_ids(world.corruptions)
    for server_name, server in (servers or {}).items():
        for request in server.unexpected_paths(ROUTE_SHAPES[server_name], ids)[:3]:
            found.append(Violation("request outside the API", request, run=n))
    return found


def judge(
    world: World, first: TapRun, second: TapRun | None, third: TapRun | None, servers: dict | None = None
) -> list[Violation]:
    found = run_level(first, world, 1, servers)
    state = first.state
    failed_any = False
    synced_first: set[str] = set()
    by_job = {c.job: c for c in world.corruptions if c.job}
    for job in world.jobs:
        mine = by_job.get(job.id)

        def violation(check: str, detail: str, job: Job = job, mine: Corruption | None = mine) -> None:
            found.append(Violation(check, detail, job=f"{job.kind} {job.id}", corruption=mine))

        records = job_records(first, job)
        results = result_records(first, job)
        if bookmarked(state, job):
            synced_first.add(job.id)
            expected = world.expected_counts(job)
            if expected is None:
                reason = "about another job" if world.about_another_job(job) else "one the tap cannot decode or trust"
                violation("bookmarked a bad body", f"the body served was {reason}, yet the job was bookmarked finished")
                continue
            if not records:
                violation("bookmarked without records", "bookmarked finished, but its job record was not emitted")
            elif records[-1].get("finished") is False:
                violation("bookmarked without records", "bookmarked finished, but its last job record says unfinished")
            mismatch = results_match(results, expected)
            if mismatch:
                violation(*mismatch)
            continue
        if records and records[-1].get("finished") is False:
            continue  # emitted as unfinished (a corrupted status): pending, fetched again next run
        if not world.visible(job):
            continue  # its listing entry was replaced: the tap cannot know the job
        failed_any = True
        if job.clean and not named(first, world, job, by_listing_only=True):
            violation(
                "clean job not synced", "carries no corruption, was not synced, and its listing failure is not named"
            )
        elif not job.clean and not named(first, world, job):
            violation(
                "failure not named", "not synced and not named in any ERROR line (neither its ID nor its listing)"
            )
    if failed_any and first.rc == 0:
        found.append(Violation("exit code", "some jobs were not synced, yet the tap exited 0"))
    if second is None:
        return found

    found += run_level(second, world, 2, None)
    if second.rc != 0:
        found.append(Violation("rerun", f"the rerun against the repaired server exited {second.rc}", run=2))
    for record in second.errors[:3]:
        found.append(Violation("rerun", f"ERROR line in the rerun: {record[:300]}", run=2))
    emitted_again: list[Job] = []
    for job in world.jobs:
        mine = by_job.get(job.id)
        records = job_records(second, job)
        results = result_records(second, job)
        if job.id in synced_first:
            if records or any(results.values()):
                found.append(
                    Violation(
                        "synced twice",
                        "bookmarked in run 1, emitted again in run 2",
                        job=f"{job.kind} {job.id}",
                        corruption=mine,
                        run=2,
                    )
                )
            continue
        emitted_again.append(job)
        problem = None
        if not records:
            problem = "its job record was not emitted"
        elif records[-1].get("finished") is False:
            problem = "its job record says unfinished"
        elif not bookmarked(second.state, job):
            problem = "not bookmarked"
        else:
            mismatch = results_match(results, job.counts())
            problem = mismatch[1] if mismatch else None
        if problem:
            found.append(
                Violation(
                    "rerun did not sync",
                    f"after run 1 left it unsynced: {problem}",
                    job=f"{job.kind} {job.id}",
                    corruption=mine,
                    run=2,
                )
            )
    if third is None:
        return found
    found += run_level(third, world, 3, None)
    for job in world.jobs:
        if job_records(third, job) or any(result_records(third, job).values()):
            found.append(
                Violation(
                    "synced twice",
                    "emitted again by a third run",
                    job=f"{job.kind} {job.id}",
                    corruption=by_job.get(job.id),
                    run=3,
                )
            )
    return found


# -- the whole check ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    violations: list[Violation]
    runs: list[TapRun]


def check(world: World, corruptions: t.Sequence[Corruption]) -> Outcome:
    world.corruptions = list(corruptions)
    with FuzzServer("cognite") as cognite, FuzzServer("clavata") as clavata, FuzzServer("talonic") as talonic:
        servers = {"cognite": cognite, "clavata": clavata, "talonic": talonic}
        cognite.token = world.secrets.get("cognite issued token")
        urls = {name: server.base_url for name, server in servers.items()}
        config = world.config(urls)

        def serve(routes: dict) -> None:
            for name, server in servers.items():
                server.serve(routes[name])

        serve(world.routes(corruptions))
        first = run_tap(config, None)
        runs = [first]
        second = third = None
        quick = run_level(first, world, 1, servers)
        serve(world.routes())
        if first.rc is not None:
            second = run_tap(config, first.state)
            runs.append(second)
            emitted = any(job_records(second, j) or any(result_records(second, j).values()) for j in world.jobs)
            if second.rc == 0 and emitted:
                third = run_tap(config, second.state)
                runs.append(third)
        violations = judge(world, first, second, third, None)
        violations[:0] = [v for v in quick if v.check == "request outside the API"]
    return Outcome(violations, runs)


def isolate(
    world: World, corruptions: t.Sequence[Corruption], limit: int = 8
) -> list[tuple[Corruption, list[Violation]]]:
    """Each corruption alone (a minimal reproduction: one value, one path, one job), up to `limit`."""
    found = []
    for corruption in list(corruptions)[:limit]:
        outcome = check(world, [corruption])
        if outcome.violations:
            found.append((corruption, outcome.violations))
    world.corruptions = list(corruptions)
    return found
