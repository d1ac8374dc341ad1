"""Which classes of corruption still break the tap: a sweep, one corruption per world (so each finding
is a minimal reproduction), over vendor x place (body, listing entry, listing envelope) x hostile kind.

    python -m tests.fuzz.survey --samples 1 --out /tmp/survey.jsonl [--vendor talonic] [--kind utf8]

Prints a table of (vendor, place, kind) -> broken invariants, and writes every finding (with its corpus
form, for tests/fuzz/corpus/cases.json) to --out. Not a test: the lead's and the fixers' map of what fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
import time
import typing as t

from tests.fuzz import hostile
from tests.fuzz.check import check
from tests.fuzz.world import BODY_ID, ENTRY_ID, KINDS, Corruption, Hostile, _get, build, objects, paths

TIME_KEY = re.compile(r"(?i)(time|created|updated|completed|_at)$")


def values_of(kind: str) -> list[Hostile]:
    return {
        "timestamp": [Hostile("timestamp", v) for v in hostile.TIMESTAMPS],
        "number_range": [Hostile("number_range", v) for v in hostile.OUT_OF_RANGE],
        "number": [Hostile("type", v) for v in hostile.BIG_NUMBERS if not isinstance(v, str)]
        + [Hostile("number", v) for v in hostile.BIG_NUMBERS if isinstance(v, str)],
        "utf8": [Hostile("utf8", v) for v in hostile.BAD_UTF8],
        "surrogate": [Hostile("surrogate", v) for v in hostile.SURROGATES],
        "depth": [Hostile("depth", [d, s]) for d in hostile.DEPTHS for s in ("list", "dict")],
        "type": [Hostile("type", v) for v in hostile.WRONG_TYPES],
        "control": [Hostile("control", v) for v in hostile.CONTROL],
        "long": [Hostile("long", v) for v in hostile.LONG],
        "long_key": [Hostile("long_key", v) for v in hostile.LONG[:2]],
        "other_id": [Hostile("other_id", v) for v in range(5)],
        "secret": [Hostile("secret", [i, f]) for i in range(6) for f in hostile.SECRET_FORMS],
        "secret_key": [Hostile("secret_key", i) for i in range(6)],
        "path_id": [Hostile("path_id", v) for v in hostile.PATH_IDS],
    }[kind]


KIND_NAMES = [
    "timestamp",
    "number_range",
    "number",
    "utf8",
    "surrogate",
    "depth",
    "type",
    "control",
    "long",
    "long_key",
    "other_id",
    "secret",
    "secret_key",
    "path_id",
]


def pick_path(rng: random.Random, kind: str, target: t.Any, id_path: tuple | None) -> tuple:
    every = paths(target)
    if kind == "timestamp":
        timed = [p for p in every if p and isinstance(p[-1], str) and TIME_KEY.search(p[-1])]
        if timed:
            return rng.choice(timed)
    if kind in ("number_range", "number"):
        numbers = [
            p for p in every if isinstance(_get(target, p), (int, float)) and not isinstance(_get(target, p), bool)
        ]
        if numbers:
            return rng.choice(numbers)
    if kind in ("other_id", "path_id") and id_path is not None and rng.random() < 0.7:
        return id_path
    shallow = [p for p in every if len(p) <= 2]
    return rng.choice(shallow if rng.random() < 0.5 else every)


def sweep(vendors: t.Sequence[str], kinds: t.Sequence[str], samples: int, seed: int) -> t.Iterator[dict]:
    rng = random.Random(seed)
    for vendor in vendors:
        for kind in kinds:
            for place in ("body", "listing", "envelope"):
                for _ in range(samples):
                    realistic, oauth = rng.random() < 0.5, rng.random() < 0.5
                    world = build(vendor, corrupt=1, clean=1, realistic=realistic, oauth=oauth)
                    job = next(j for j in world.jobs if not j.clean)
                    value = rng.choice(values_of(kind))
                    insert = None
                    if place == "body":
                        target, id_path = job.body, BODY_ID[job.kind]
                    elif place == "listing":
                        if job.listing is None:
                            continue
                        listing = world.listings[job.listing]
                        target, id_path = _get(listing.body, (*listing.entries, job.index)), ENTRY_ID.get(job.kind)
                    else:
                        group = world.listings[job.listing].group if job.listing else None
                        groups = {group, "pipelines"} if vendor == "runs" else {group}
                        names = sorted(n for n, lst in world.listings.items() if lst.group in groups)
                        if not names:
                            continue
                        name = rng.choice(names)
                        listing = world.listings[name]
                        depth = len(listing.entries)
                        candidates = [
                            p
                            for p in paths(listing.body)
                            if listing.group == "pipelines" or not (len(p) > depth and p[:depth] == listing.entries)
                        ]
                        corruption = Corruption(f"envelope:{name}", rng.choice(candidates), value)
                        yield run_one(world, corruption, place, kind)
                        continue
                    if kind in ("secret", "secret_key") and rng.random() < 0.5:
                        path = rng.choice(objects(target))
                        insert = rng.choice(hostile.INSERT_KEYS)
                    else:
                        path = pick_path(rng, kind, target, id_path)
                    corruption = Corruption(place, path, value, job=job.id, insert=insert)
                    yield run_one(world, corruption, place, kind)


def run_one(world: t.Any, corruption: Corruption, place: str, kind: str) -> dict:
    from tests.test_fuzz import as_case

    started = time.monotonic()
    outcome = check(world, [corruption])
    return {
        "vendor": world.vendor,
        "place": place,
        "kind": kind,
        "corruption": corruption.describe(),
        "checks": sorted({v.check for v in outcome.violations}),
        "violations": [v.describe() for v in outcome.violations][:10],
        "case": as_case(world, corruption, f"{world.vendor}-{place}-{kind}"),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vendor", action="append", choices=KINDS)
    parser.add_argument("--kind", action="append", choices=KIND_NAMES)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    table: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    with open(args.out, "w") as out:
        for finding in sweep(args.vendor or KINDS, args.kind or KIND_NAMES, args.samples, args.seed):
            out.write(json.dumps(finding) + "\n")
            out.flush()
            key = (finding["vendor"], finding["place"], finding["kind"])
            table[key]["runs"] += 1
            for name in finding["checks"]:
                table[key][name] += 1
            status = ", ".join(finding["checks"]) or "ok"
            print(f"{key[0]:8} {key[1]:9} {key[2]:13} {status}  | {finding['corruption'][:150]}", flush=True)
    print("\nsummary (vendor, place, kind: failing checks / runs)")
    for key, counter in sorted(table.items()):
        runs = counter.pop("runs")
        if counter:
            print(f"  {key}: {dict(counter)} / {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
