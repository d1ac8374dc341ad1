"""Hypothesis strategies: hostile values, and where in a world's bodies to put them.

Each corrupted job carries exactly one corruption (in its result body or its listing entry), so each
job's own outcome can be judged; a listing's envelope (cursor, pagination, the array of entries) may
carry one more, which concerns the whole listing.
"""

from __future__ import annotations

import typing as t

from hypothesis import strategies as st

from tests.fuzz.world import (
    BODY_ID,
    ENTRY_ID,
    SECRET_FORMS,
    Corruption,
    Hostile,
    Job,
    Path,
    World,
    _get,
    objects,
    paths,
)

# RFC 3339 times that parse but do not fit in UTC (year 0 or 10000 once the offset is applied), their
# near neighbours that do fit, and millisecond epochs past Python's datetime range.
TIMESTAMPS = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00:00.000000001+00:01",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999999-00:01",
    "9999-12-31T23:59:59+14:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    -62135596800001,
    253402300800000,
    2**63 - 1,
    -(2**63),
    1.7976931348623157e308,
]
OUT_OF_RANGE = ["1e400", "-1e400", "1E+999", "-0.5e400"]  # JSON numbers no float holds
BIG_NUMBERS = [2**64, -(2**64) - 1, 2**63, 10**40, "1e-400", "-0.0", "123456789012345678901234567890.5"]
BAD_UTF8 = ["ff", "fe", "c3", "c0af", "eda080", "f4908080", "80", "616263ff", "e282"]
SURROGATES = ['"\\ud800"', '"\\udfff"', '"a\\ud83d"', '"\\ud83d\\u0041"']
DEPTHS = [600, 1100, 5000, 100_000]
WRONG_TYPES: list[t.Any] = ["a string", "", 0, -1, 1.5, True, False, None, [], [1, "x"], {}, {"k": "v"}]
CONTROL = [
    "\x1b[31mred\x1b[0m",
    "one\n2026-01-01 00:00:00,000 | ERROR    | tap-jobresults | forged line",
    "\r\x1b[2Kerased",
    "nul\x00byte",
    "\u2028\u2029",
    "\x07\x08\x7f",
    "\x1b]0;title\x07",
    "\u202egnp.exe",
    "\ufeffbom",
    "\x1b[6n",
    "\x1bc",
]
LONG = [10_000, 300_000, 3_000_000]
PATH_IDS = [".", "..", "a/b", "../../x", "%2e%2e", "x?y=1", "#f", "a b", "", "..%2f"]
INSERT_KEYS = ["jobToken", "job_token", "token", "apiKey", "api_key", "Authorization", "headers", "X-Job-Token", "note"]


def hostile_values() -> st.SearchStrategy[Hostile]:
    return st.one_of(
        st.sampled_from(TIMESTAMPS).map(lambda v: Hostile("timestamp", v)),
        st.sampled_from(OUT_OF_RANGE).map(lambda v: Hostile("number_range", v)),
        st.sampled_from(BIG_NUMBERS).map(lambda v: Hostile("number", v) if isinstance(v, str) else Hostile("type", v)),
        st.sampled_from(BAD_UTF8).map(lambda v: Hostile("utf8", v)),
        st.sampled_from(SURROGATES).map(lambda v: Hostile("surrogate", v)),
        st.tuples(st.sampled_from(DEPTHS), st.sampled_from(["list", "dict"])).map(lambda v: Hostile("depth", list(v))),
        st.sampled_from(WRONG_TYPES).map(lambda v: Hostile("type", v)),
        st.sampled_from(CONTROL).map(lambda v: Hostile("control", v)),
        st.sampled_from(LONG).map(lambda v: Hostile("long", v)),
        st.sampled_from(LONG[:2]).map(lambda v: Hostile("long_key", v)),
        st.integers(0, 50).map(lambda v: Hostile("other_id", v)),
        st.tuples(st.integers(0, 20), st.sampled_from(SECRET_FORMS)).map(lambda v: Hostile("secret", list(v))),
        st.integers(0, 20).map(lambda v: Hostile("secret_key", v)),
        st.sampled_from(PATH_IDS).map(lambda v: Hostile("path_id", v)),
    )


def _target(world: World, job: Job, where: str) -> t.Any:
    if where == "body":
        return job.body
    listing = world.listings[t.cast(str, job.listing)]
    return _get(listing.body, (*listing.entries, job.index))


def _places(job: Job) -> list[str]:
    return ["body"] if job.listing is None else ["body", "listing"]


@st.composite
def job_corruption(draw: st.DrawFn, world: World, job: Job) -> Corruption:
    """One hostile value somewhere in one job's body or listing entry. Half the time at a shallow
    path (IDs, statuses, times, the result arrays), where the tap reads; half the time anywhere."""
    where = draw(st.sampled_from(_places(job)))
    target = _target(world, job, where)
    value = draw(hostile_values())
    if value.kind in ("other_id", "path_id") and where == "listing" and job.kind in ENTRY_ID and draw(st.booleans()):
        return Corruption(where, ENTRY_ID[job.kind], value, job=job.id)  # the entry names another job
    if value.kind in ("other_id", "path_id") and where == "body" and draw(st.booleans()):
        return Corruption(where, BODY_ID[job.kind], value, job=job.id)  # a body about another job
    if value.kind in ("secret", "secret_key") and draw(st.booleans()):
        at = draw(st.sampled_from(objects(target)))
        return Corruption(where, at, value, job=job.id, insert=draw(st.sampled_from(INSERT_KEYS)))
    every = paths(target)
    shallow = [p for p in every if len(p) <= (3 if job.kind == "clavata" and where == "body" else 2)]
    path: Path = draw(st.one_of(st.sampled_from(shallow), st.sampled_from(every)))
    return Corruption(where, path, value, job=job.id)


@st.composite
def envelope_corruption(draw: st.DrawFn, world: World) -> Corruption | None:
    """Maybe one hostile value in the envelope of one of the vendor's listings (not inside an entry,
    except the pipelines listing, whose entries are pipelines, not jobs)."""
    groups = {world.listings[j.listing].group for j in world.jobs if j.kind == world.vendor and j.listing}
    if world.vendor == "runs":
        groups.add("pipelines")
    names = [name for name, listing in world.listings.items() if listing.group in groups]
    if not names or not draw(st.integers(0, 3)) == 0:
        return None
    name = draw(st.sampled_from(sorted(names)))
    listing = world.listings[name]
    depth = len(listing.entries)
    candidates = [
        p
        for p in paths(listing.body)
        if listing.group == "pipelines" or not (len(p) > depth and p[:depth] == listing.entries)
    ]
    path = draw(st.sampled_from(candidates))
    return Corruption(f"envelope:{name}", path, draw(hostile_values()))


@st.composite
def corruptions(draw: st.DrawFn, world: World) -> list[Corruption]:
    found = [draw(job_corruption(world, job)) for job in world.jobs if not job.clean]
    envelope = draw(envelope_corruption(world))
    return [*found, *([envelope] if envelope else [])]
