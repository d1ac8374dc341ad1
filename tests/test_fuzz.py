"""Fuzz at the HTTP boundary (issue 18): one hostile value is one job's failure.

For each vendor (CDF predict jobs, CDF pipeline runs, Clavata, Talonic), hypothesis builds a world of
finished jobs with valid listing and result bodies (tests/fakeapi's shapes, tidy and realistic), gives
several of them one hostile value each at one JSON path of their result body or listing entry (and
maybe one more in a listing's envelope), serves it from a purpose-made loopback server (tests/fuzz),
and runs the real tap binary three times: against the corrupted server, against the repaired server
from the first run's final STATE, and once more. tests/fuzz/check.py lists the invariants.

- `FUZZ_EXAMPLES` (default 6 per vendor; ~3-4 min in all) goes deeper locally: FUZZ_EXAMPLES=100.
- The seed is fixed (a red CI is reproducible); failures are saved to tests/fuzz/db and replayed first.
- A failure reports each broken invariant with the corruption behind it, then each corruption alone
  (a minimal reproduction), in the form tests/fuzz/corpus/cases.json takes.
- tests/fuzz/corpus/cases.json: minimal reproductions found so far, checked on every run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.control import current_build_context

from tests.conftest import KeptExamples
from tests.fuzz.check import Violation, check, isolate
from tests.fuzz.hostile import corruptions
from tests.fuzz.world import KINDS, Corruption, Hostile, World, build

# Several minutes of tap runs: in CI (`make test` runs everything), out of the quick `-m "not slow"` loop.
pytestmark = pytest.mark.slow

FUZZ = Path(__file__).parent / "fuzz"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
MAX_CORRUPTED = int(os.environ.get("FUZZ_MAX_CORRUPTED", "6"))
CASES = json.loads((FUZZ / "corpus" / "cases.json").read_text())


def as_case(world: World, corruption: Corruption, name: str = "") -> dict:
    """A corruption as a corpus entry (its job by position among the vendor's corrupted jobs)."""
    mine = [j.id for j in world.jobs if not j.clean]
    return {
        "name": name,
        "vendor": world.vendor,
        "realistic": world.realistic,
        "oauth": world.oauth,
        "where": corruption.where,
        "job": mine.index(corruption.job) if corruption.job else None,
        "path": list(corruption.path),
        "insert": corruption.insert,
        "value": {"kind": corruption.value.kind, "spec": corruption.value.spec},
    }


def corpus_worlds(cases: list[dict]) -> list[tuple[str, list[dict]]]:
    """Corpus cases to check together, so that the corpus costs a few tap runs, not one per case. Cases on
    result bodies of a source share a world (each on a job of its own: bodies do not mask one another); a
    listing case has its source to itself in its world (a listing that fails hides its source's jobs)."""

    def source(case: dict) -> str:
        return "cognite runs" if case["vendor"] == "runs" else case["vendor"]

    worlds: list[tuple[tuple, list[dict]]] = []
    for case in cases:
        shape = (case["realistic"], case["oauth"])
        for key, members in worlds:
            same = [m for m in members if source(m) == source(case)]
            fits = not same if case["where"] != "body" else all(m["where"] == "body" for m in same)
            if key == shape and fits:
                members.append(case)
                break
        else:
            worlds.append((shape, [case]))
    return [("+".join(c["name"] for c in members)[:90], members) for _, members in worlds]


def from_cases(cases: list[dict]) -> tuple[World, list[Corruption]]:
    """One world for these cases (one shape), each case on a corrupted job of its own vendor."""
    per_kind = {kind: sum(1 for c in cases if c["vendor"] == kind and c["job"] is not None) for kind in KINDS}
    vendor = cases[0]["vendor"]
    world = build(
        vendor,
        corrupt=per_kind[vendor],
        clean=1,
        realistic=cases[0]["realistic"],
        oauth=cases[0]["oauth"],
        others={k: n for k, n in per_kind.items() if k != vendor},
    )
    free = {kind: [j.id for j in world.jobs if j.kind == kind and not j.clean] for kind in KINDS}
    found = []
    for case in cases:
        job = free[case["vendor"]].pop(0) if case["job"] is not None else None
        value = Hostile(case["value"]["kind"], case["value"]["spec"])
        found.append(Corruption(case["where"], tuple(case["path"]), value, job=job, insert=case.get("insert")))
    world.vendor = vendor
    return world, found


def report(violations: list[Violation], isolated: list[tuple[Corruption, list[Violation]]], world: World) -> str:
    lines = [f"{len(violations)} broken invariant(s):"]
    lines += [f"  {v.describe()}" for v in violations[:30]]
    if isolated:
        lines.append("each corruption alone (minimal reproductions; corpus form):")
        for corruption, found in isolated:
            lines.append(f"  {corruption.describe()}")
            lines += [f"    -> {v.check}: {v.detail[:200]}" for v in found[:6]]
            lines.append(f"    {json.dumps(as_case(world, corruption), ensure_ascii=True)[:600]}")
    return "\n".join(lines)


@pytest.mark.parametrize("vendor", KINDS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=KeptExamples(str(FUZZ / "db")),
    derandomize=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: each job carries one corruption already
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
@seed(18)
@given(data=st.data())
def test_one_hostile_value_is_one_jobs_failure(vendor, data):
    corrupt = data.draw(st.integers(1, MAX_CORRUPTED), label="corrupted jobs")
    realistic = data.draw(st.booleans(), label="realistic shapes")
    oauth = data.draw(st.booleans(), label="CDF OAuth")
    world = build(vendor, corrupt=corrupt, clean=1, realistic=realistic, oauth=oauth)
    chosen = data.draw(corruptions(world), label="corruptions")
    outcome = check(world, chosen)
    if outcome.violations:
        isolated = isolate(world, chosen) if current_build_context().is_final else []
        pytest.fail(report(outcome.violations, isolated, world), pytrace=False)


CORPUS = corpus_worlds(CASES)


@pytest.mark.parametrize("cases", [c for _, c in CORPUS], ids=[name for name, _ in CORPUS])
def test_corpus(cases):
    world, chosen = from_cases(cases)
    outcome = check(world, chosen)
    names = "\n".join(f"  {case['name']}: {c.describe()}" for case, c in zip(cases, chosen, strict=True))
    assert not outcome.violations, f"corpus cases:\n{names}\n" + report(outcome.violations, [], world)
