"""Valid worlds for the fuzz test, and one hostile value at one JSON path of one job's body.

A world holds jobs of the four kinds (CDF predict jobs, CDF pipeline runs, Clavata jobs, Talonic jobs),
every one finished, with the listing and result bodies their vendor serves. The bodies come from the
fakes' own payload builders (tests/fakeapi: `_predict_body`, `_run_body`, `_job`, `_results`), in their
tidy and realistic shapes, with deterministic IDs. Each pipeline run sits in a pipeline of its own, so a
broken runs listing concerns one run only.

A corruption replaces the value at one path (or adds one key) in one body: a job's result body, the job's
entry in its listing, or a listing's envelope (cursor, pagination, the array of entries). `World.routes`
serves the corrupted world, `World.routes()` without corruptions the repaired one.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import re
import typing as t
import uuid
from datetime import datetime, timedelta, timezone

from tests.fakeapi.clavata import ClavataServer
from tests.fakeapi.cognite import CogniteServer
from tests.fakeapi.talonic import TalonicServer
from tests.fuzz.rawjson import Raw, dumps

KINDS = ("predict", "runs", "clavata", "talonic")
Path = tuple[t.Any, ...]  # keys and indexes from a body's root

PROJECT = "fuzzproj"
CDF = f"/api/v1/projects/{PROJECT}/context/entitymatching"

# The request paths each vendor's API has: a request outside them reached another resource.
ROUTE_SHAPES = {
    "cognite": [re.compile(CDF + p) for p in (r"/jobs/[^/]+", r"/pipelines", r"/pipelines/[^/]+/runs(/[^/]+)?")],
    "clavata": [re.compile(r"/v1/jobs(/[^/]+)?")],
    "talonic": [re.compile(r"/v1/jobs(/[^/]+(/results)?)?")],
}
SERVER_OF = {"predict": "cognite", "runs": "cognite", "clavata": "clavata", "talonic": "talonic"}

# Where each kind's job record and result records are, and which body array feeds each result stream.
JOB_STREAM = {
    "predict": "entity_matching_jobs",
    "runs": "pipeline_runs",
    "clavata": "clavata_jobs",
    "talonic": "extraction_jobs",
}
RESULT_ARRAYS: dict[str, dict[str, Path]] = {
    "predict": {"match_results": ("items",)},
    "runs": {
        "pipeline_matches": ("matches",),
        "suggested_rules": ("suggestedRules",),
        "generated_rules": ("generatedRules",),
    },
    "clavata": {"clavata_reports": ("job", "results")},
    "talonic": {"extraction_rows": ("data",)},
}
# The field of a job's own body that says which job it is about (contract: another ID is a failed fetch).
BODY_ID: dict[str, Path] = {
    "predict": ("jobId",),
    "runs": ("jobId",),
    "clavata": ("job", "jobUuid"),
    "talonic": ("job_id",),
}
ENTRY_ID: dict[str, Path] = {"runs": ("jobId",), "clavata": ("jobUuid",), "talonic": ("id",)}
# Values no JSON decoder may take as they are (the contract: decode errors of that job or listing).
MUST_FAIL_KINDS = frozenset({"number_range", "utf8"})
LABEL = {"predict": "CDF predict job", "runs": "CDF pipeline run", "clavata": "Clavata job", "talonic": "Talonic job"}


@dataclasses.dataclass
class Listing:
    """One page of a listing."""

    name: str  # "talonic", "talonic@1" (its second page), "clavata", "pipelines", "runs:<pipeline id>"
    server: str
    route: str  # the request path, with "#<cursor param>=<cursor>" for a page after the first
    body: t.Any
    entries: Path  # the array of job (or pipeline) entries
    names: tuple[str, ...]  # regexes an ERROR line matches when it names this listing's failure
    group: str = ""  # the listing this page belongs to ("talonic"); its name when empty
    page: int = 0
    continuation: tuple[Path, ...] = ()  # fields that lead to the next page (cursor, has_more)

    def __post_init__(self) -> None:
        self.group = self.group or self.name


@dataclasses.dataclass
class Job:
    kind: str
    id: str  # as the tap's records and logs show it
    raw_id: t.Any  # as the API sends it (int for CDF)
    partition: str  # "all", or the pipeline ID of a run
    server: str
    body_path: str
    body: t.Any
    listing: str | None  # key of its listing (runs: "runs:<pid>")
    index: int | None  # its entry's index in that listing
    clean: bool = True  # no corruption of its own
    created: str = ""  # creation time as the tap's bookmark writes it

    @property
    def key(self) -> tuple:
        """The job record's primary key as strings."""
        return (self.partition, self.id) if self.kind == "runs" else (self.id,)

    def counts(self) -> dict[str, int]:
        """Result records per stream the valid body makes."""
        return {stream: len(_get(self.body, path) or []) for stream, path in RESULT_ARRAYS[self.kind].items()}


@dataclasses.dataclass(frozen=True)
class Hostile:
    """A hostile value, described so that a report (and the corpus) can show and rebuild it."""

    kind: str  # timestamp | number | utf8 | depth | type | control | long | other_id | secret | path_id
    spec: t.Any  # JSON-able

    def __repr__(self) -> str:
        spec = repr(self.spec)
        return f"{self.kind}:{spec if len(spec) <= 80 else spec[:77] + '...'}"


@dataclasses.dataclass(frozen=True)
class Corruption:
    where: str  # "body" | "listing" (the job's entry) | "envelope:<listing name>"
    path: Path
    value: Hostile
    job: str | None = None  # the job whose body or entry it is in (None: an envelope)
    insert: str | None = None  # a key added at `path` (a dict) instead of replacing the value there

    def describe(self, world: World | None = None) -> str:
        where = self.where if self.job is None else f"{self.where} of {self.job}"
        at = "/".join(str(p) for p in self.path) or "<root>"
        op = f"insert key {self.insert!r} under {at}" if self.insert is not None else f"replace {at}"
        return f"{where}: {op} with {self.value!r}"


@dataclasses.dataclass
class World:
    jobs: list[Job]
    listings: dict[str, Listing]
    secrets: dict[str, str]  # name -> value: every configured secret and the issued token
    config_of: t.Callable[[dict[str, str]], dict]  # base URLs by server -> tap config
    extra: dict[tuple[str, str], t.Any]  # (server, path) -> body, never corrupted
    vendor: str
    realistic: bool = False
    oauth: bool = False
    corruptions: list[Corruption] = dataclasses.field(default_factory=list)

    def job(self, job_id: str) -> Job:
        return next(j for j in self.jobs if j.id == job_id)

    def config(self, urls: dict[str, str]) -> dict:
        return self.config_of(urls)

    # -- serving ---------------------------------------------------------------------------------

    def routes(self, corruptions: t.Sequence[Corruption] = ()) -> dict[str, dict[str, tuple[int, bytes]]]:
        """Per server: request path -> (status, body bytes), with the corruptions applied."""
        routes: dict[str, dict[str, tuple[int, bytes]]] = {"cognite": {}, "clavata": {}, "talonic": {}}
        for (server, path), body in self.served(corruptions).items():
            routes[server][path] = (200, dumps(body))
        return routes

    def offered_ids(self, corruptions: t.Sequence[Corruption]) -> set[str]:
        """Every ID the served world names: the jobs', the pipelines', and what the listings' entries say."""
        found = {j.id for j in self.jobs} | {j.partition for j in self.jobs}
        served = self.served(corruptions)
        for listing in self.listings.values():
            entries = _get(served[(listing.server, listing.route)], listing.entries)
            field = (
                "id"
                if listing.group == "pipelines"
                else {"clavata": "jobUuid", "talonic": "id"}.get(listing.group, "jobId")
            )
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get(field), (str, int)):
                    found.add(str(entry[field]))
        return found

    def served(self, corruptions: t.Sequence[Corruption] = ()) -> dict[tuple[str, str], t.Any]:
        bodies: dict[tuple[str, str], t.Any] = dict(self.extra)
        for listing in self.listings.values():
            bodies[(listing.server, listing.route)] = listing.body
        for job in self.jobs:
            bodies[(job.server, job.body_path)] = job.body
        for corruption in corruptions:
            server, path, inner = self._locate(corruption)
            bodies[(server, path)] = apply(
                bodies[(server, path)], inner, self.materialize(corruption), corruption.insert
            )
        return bodies

    def _locate(self, corruption: Corruption) -> tuple[str, str, Path]:
        if corruption.where.startswith("envelope:"):
            listing = self.listings[corruption.where.split(":", 1)[1]]
            return listing.server, listing.route, corruption.path
        job = self.job(t.cast(str, corruption.job))
        if corruption.where == "body":
            return job.server, job.body_path, corruption.path
        listing = self.listings[t.cast(str, job.listing)]
        return listing.server, listing.route, (*listing.entries, job.index, *corruption.path)

    def materialize(self, corruption: Corruption) -> t.Any:
        return materialize(self, corruption)

    # -- what each job should come to ------------------------------------------------------------

    def visible(self, job: Job) -> bool:
        """Can the tap know this job exists in the corrupted world? Not when its listing entry or the
        entry's ID was replaced, nor when the array of entries of its page (or, for a run, its pipeline's
        entry) was, nor when a page before its page lost the way to the next one (cursor, has_more)."""
        pages = [self.listings[job.listing]] if job.listing else []
        if job.kind == "runs":
            pages.append(self.pipeline_page(job))
        for c in self.corruptions:
            if c.insert is not None:
                continue
            if c.job == job.id and c.where == "listing" and (c.path == () or _prefix(c.path, ENTRY_ID[job.kind])):
                return False
            if not c.where.startswith("envelope:"):
                continue
            hit = self.listings[c.where.split(":", 1)[1]]
            for page in pages:
                if hit.name == page.name:
                    index = job.index if page.name == job.listing else self.pipeline_index(job)
                    entry_id = ENTRY_ID.get(job.kind, ()) if page.name == job.listing else ("id",)
                    if _prefix(c.path, (*page.entries, index, *entry_id)):
                        return False
                if hit.group == page.group and hit.page < page.page:
                    if any(_prefix(c.path, cont) for cont in hit.continuation):
                        return False
        return True

    def pipeline_page(self, job: Job) -> Listing:
        return next(
            lst
            for lst in self.listings.values()
            if lst.group == "pipelines" and any(str(p["id"]) == job.partition for p in lst.body["items"])
        )

    def pipeline_index(self, job: Job) -> int:
        return [str(p["id"]) for p in self.pipeline_page(job).body["items"]].index(job.partition)

    def expected_counts(self, job: Job) -> dict[str, int] | None:
        """Result records per stream the served (corrupted) body makes, or None: the job must fail
        (a body about another job, a result array or element of the wrong type, a number outside the
        float range or bytes that are not UTF-8 in its body, entry or listing)."""
        counts = job.counts()
        for c in self.corruptions:
            if c.value.kind in MUST_FAIL_KINDS and self._concerns(c, job):
                return None
            if c.job != job.id or c.where != "body":
                continue
            if self.about_another_job(job):
                return None
            for stream, array in RESULT_ARRAYS[job.kind].items():
                if c.insert is not None:
                    continue
                value = self.materialize(c)
                if _prefix(c.path, array):
                    if c.path != array:
                        return None  # the body, or an object above the array, replaced
                    if value is None:
                        counts[stream] = 0
                    elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
                        counts[stream] = len(value)
                    else:
                        return None
                elif len(c.path) == len(array) + 1 and _prefix(array, c.path) and not isinstance(value, dict):
                    return None  # an element of the array that is not an object
        return counts

    def _concerns(self, c: Corruption, job: Job) -> bool:
        """Must the tap decode the body holding `c` to sync `job`? Its own body or listing entry, or the
        envelope of its listing page or of an earlier page (whose cursor leads to it). A bad value in another
        job's entry may fail that entry alone or the whole page: either is fine."""
        if c.job == job.id:
            return True
        if not c.where.startswith("envelope:"):
            return False
        hit = self.listings[c.where.split(":", 1)[1]]
        pages = [self.listings[job.listing]] if job.listing else []
        if job.kind == "runs":
            pages.append(self.pipeline_page(job))
        return any(hit.group == page.group and hit.page <= page.page for page in pages)

    def about_another_job(self, job: Job) -> bool:
        """Does the job's body say it is about another job (its ID field replaced by another string or
        integer: another job's ID, a path-like ID, any text)?"""
        for c in self.corruptions:
            if c.job != job.id or c.where != "body" or c.insert is not None or c.path != BODY_ID[job.kind]:
                continue
            value = self.materialize(c)
            # "" is "unset" in proto3 JSON: taken as absent, not as another ID.
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) not in (job.id, ""):
                return True
        return False

    def listing_names(self, job: Job) -> list[str]:
        """Regexes of ERROR text that names a failure of this job's listing (which fails its source)."""
        names: list[str] = []
        if job.listing:
            names += self.listings[job.listing].names
        if job.kind == "runs":
            names += self.listings["pipelines"].names
        return names


def _prefix(path: Path, of: Path) -> bool:
    """`path` is `of` or above it."""
    return tuple(of[: len(path)]) == tuple(path)


def _get(body: t.Any, path: Path) -> t.Any:
    for key in path:
        if isinstance(body, dict) and key in body:
            body = body[key]
        elif isinstance(body, list) and isinstance(key, int) and key < len(body):
            body = body[key]
        else:
            return None
    return body


def apply(body: t.Any, path: Path, value: t.Any, insert: str | None) -> t.Any:
    """A copy of `body` with the value at `path` replaced (or `insert` added to the object at `path`)."""
    if not path and insert is None:
        return value
    body = copy.deepcopy(body)
    parent = body
    for key in path[:-1] if insert is None else path:
        parent = parent[key]
    if insert is not None:
        key = insert
        while key in parent:
            key += "_"
        parent[key] = value
    else:
        parent[path[-1]] = value
    return body


def paths(value: t.Any, prefix: Path = ()) -> list[Path]:
    """Every node of a JSON value, the root first."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def objects(value: t.Any, prefix: Path = ()) -> list[Path]:
    """Every object of a JSON value (where a key can be added)."""
    return [p for p in paths(value, prefix) if isinstance(_get(value, p[len(prefix) :]), dict)]


# -- hostile values, made concrete ----------------------------------------------------------------


def materialize(world: World, corruption: Corruption) -> t.Any:
    kind, spec = corruption.value.kind, corruption.value.spec
    if kind in ("timestamp", "type", "control", "path_id"):
        return spec
    if kind in ("number", "number_range"):
        return Raw(spec.encode(), spec)
    if kind == "utf8":
        return Raw(b'"' + bytes.fromhex(spec) + b'"', f"bytes {spec}")
    if kind == "surrogate":
        return Raw(spec.encode(), spec)
    if kind == "depth":
        depth, shape = spec
        if shape == "list":
            return Raw(b"[" * depth + b"]" * depth, f"[ x {depth}")
        return Raw(b'{"a":' * depth + b"1" + b"}" * depth, f"{{ x {depth}")
    if kind == "long":
        return "A" * spec
    if kind == "long_key":
        return {"K" * spec: "v"}
    if kind == "other_id":
        others = [j for j in world.jobs if j.id != corruption.job]
        same = [j for j in others if corruption.job and j.kind == world.job(corruption.job).kind] or others
        return same[spec % len(same)].raw_id
    if kind == "secret":
        index, form = spec
        return secret_form(_secret(world, index), form)
    if kind == "secret_key":  # the secret as an object key
        return {_secret(world, spec): "x"}
    raise ValueError(kind)


def _secret(world: World, which: int | str) -> str:
    """A secret of the world by position, or by name ("job token": the first configured job token)."""
    names = sorted(world.secrets)
    if isinstance(which, str):
        if which == "job token":
            which = next(n for n in names if n.endswith(".job_token"))
        return world.secrets[which]
    return world.secrets[names[which % len(names)]]


SECRET_FORMS = ("plain", "bearer", "url", "embedded", "headers", "list")


def secret_form(secret: str, form: str) -> t.Any:
    if form == "plain":
        return secret
    if form == "bearer":
        return f"Bearer {secret}"
    if form == "url":
        return f"https://svc:{secret}@api.example.com/v1?token={secret}"
    if form == "embedded":
        return f"request failed: key={secret}; retry"
    if form == "headers":
        return {"request": {"headers": {"Authorization": f"Bearer {secret}", "X-Job-Token": secret}}}
    return [secret]


# -- building worlds --------------------------------------------------------------------------------


def _pages(
    group: str,
    server: str,
    path: str,
    param: str,
    entries: list,
    envelope: t.Callable[[list, str | None], dict],
    at: Path,
    continuation: tuple[Path, ...],
    names: tuple[str, ...],
) -> list[Listing]:
    """A listing in two pages when it has two entries or more (the second asked for with a cursor)."""
    half = (len(entries) + 1) // 2 if len(entries) > 1 else len(entries)
    chunks = [entries[:half], entries[half:]] if len(entries) > 1 else [entries]
    cursor = f"fuzz-{group}-page-2"
    pages = []
    for page, chunk in enumerate(chunks):
        last = page == len(chunks) - 1
        body = envelope(chunk, None if last else cursor)
        route = path if page == 0 else f"{path}#{param}={cursor}"
        name = group if page == 0 else f"{group}@{page}"
        pages.append(Listing(name, server, route, body, at, names, group, page, continuation))
    return pages


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def build(
    vendor: str,
    *,
    corrupt: int,
    clean: int,
    realistic: bool,
    oauth: bool,
    seed: int = 0,
    others: dict[str, int] | None = None,
) -> World:
    """`corrupt` + `clean` finished jobs of `vendor`, one clean job of every other kind; nothing corrupted yet.
    The first `corrupt` jobs of the vendor are the ones meant to carry a corruption; `others` gives other
    kinds jobs meant to carry one too (kind -> how many, before their clean one)."""
    others = others or {}
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = now - timedelta(hours=3)
    clock = iter(range(10_000))

    def created() -> datetime:
        return start + timedelta(minutes=next(clock))

    def iso(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    wanted = {kind: (corrupt if kind == vendor else others.get(kind, 0)) for kind in KINDS}
    counts = {kind: wanted[kind] + (clean if kind == vendor else 1) for kind in KINDS}
    hexes = rng.getrandbits(64)
    secrets: dict[str, str] = {
        "clavata.api_key": f"clavata-fuzz-key-{hexes:016x}",
        "talonic.api_key": f"tlnc_test_fuzz{hexes:016x}",
    }
    if oauth:
        secrets["cognite.client_secret"] = f"cdf-fuzz-client-secret-{hexes:016x}"
        secrets["cognite issued token"] = f"eyJfuzzIssuedToken{hexes:016x}"
    else:
        secrets["cognite.token"] = f"cdf-fuzz-static-token-{hexes:016x}"

    jobs: list[Job] = []
    listings: dict[str, Listing] = {}
    extra: dict[tuple[str, str], t.Any] = {}

    # CDF predict jobs: bodies only (configured IDs, no listing).
    cog = CogniteServer(idp=None)
    cog.realistic = realistic
    predict_config = []
    for n in range(counts["predict"]):
        job_id = 7_100_000_000_000 + n
        ms = int(created().timestamp() * 1000)
        token = f"fuzz-job-token-{n}-{hexes:016x}" if n % 2 else None
        cog.add_predict_job(items=1 + n % 3, matches_per_item=2, job_id=job_id, created_ms=ms, job_token=token)
        entry: dict[str, t.Any] = {"job_id": job_id}
        if token:
            entry["job_token"] = token
            secrets[f"cognite.entity_matching_jobs[{n}].job_token"] = token
        predict_config.append(entry)
        body = cog._predict_body(cog.predict_jobs[job_id])
        jobs.append(Job("predict", str(job_id), job_id, "all", "cognite", f"{CDF}/jobs/{job_id}", body, None, None))

    # CDF pipeline runs: one pipeline per run.
    pipelines = []
    for n in range(counts["runs"]):
        pid, run_id = 7_200_000_000_000 + n, 7_300_000_000_000 + n
        cog.add_pipeline(pipeline_id=pid, name=f"fuzz pipeline {n}")
        ms = int(created().timestamp() * 1000)
        cog.add_run(pid, matches=1 + n % 3, suggested_rules=n % 2, generated_rules=1, run_id=run_id, created_ms=ms)
        run = cog.runs[pid][run_id]
        pipelines.append(cog._pipeline_body(pid))
        name = f"runs:{pid}"
        listings[name] = Listing(
            name,
            "cognite",
            f"{CDF}/pipelines/{pid}/runs",
            {"items": [cog._summary(run)], "nextCursor": None},
            ("items",),
            (rf"(?i)listing runs of CDF pipeline {pid}\b", rf"(?i)CDF pipeline {pid}\b(?! run)"),
        )
        body = cog._run_body(run)
        path = f"{CDF}/pipelines/{pid}/runs/{run_id}"
        jobs.append(Job("runs", str(run_id), run_id, str(pid), "cognite", path, body, name, 0))
        jobs[-1].created = iso(datetime.fromtimestamp(ms / 1000, timezone.utc))
    for listing in _pages(
        "pipelines",
        "cognite",
        f"{CDF}/pipelines",
        "cursor",
        pipelines,
        lambda items, cursor: {"items": items, "nextCursor": cursor},
        ("items",),
        (("nextCursor",),),
        (r"(?i)listing CDF pipelines", r"(?i)CDF pipeline runs\b"),
    ):
        listings[listing.name] = listing

    # Clavata.
    clav = ClavataServer()
    clav.realistic = realistic
    clav.customer_id, clav.default_policy = _uuid(rng), _uuid(rng)
    clavata_jobs = []
    for n in range(counts["clavata"]):
        old = clav.add_job(results=1 + n % 3, created=created(), deprecated_result_only=n % 3 == 2)
        job = clav.jobs.pop(old)
        job["uuid"], job["policy_version"] = _uuid(rng), _uuid(rng)
        clav.jobs[job["uuid"]] = job
        clavata_jobs.append(job)
        body = {"job": clav._job(job, full=True)}
        jobs.append(
            Job("clavata", job["uuid"], job["uuid"], "all", "clavata", f"/v1/jobs/{job['uuid']}", body, None, None)
        )
        jobs[-1].created = iso(job["created"])
    order = sorted(clavata_jobs, key=lambda j: (j["created"], j["uuid"]), reverse=True)
    for listing in _pages(
        "clavata",
        "clavata",
        "/v1/jobs",
        "pageToken",
        [clav._job(j, full=False) for j in order],
        lambda items, cursor: {"jobs": items, "nextPageToken": cursor or ""},
        ("jobs",),
        (("nextPageToken",),),
        (r"(?i)listing Clavata jobs", r"(?i)\bclavata\b.*\blisting\b"),
    ):
        listings[listing.name] = listing

    # Talonic.
    tal = TalonicServer()
    tal.realistic = realistic
    talonic_jobs = []
    for n in range(counts["talonic"]):
        old = tal.add_job(rows=1 + n % 3, created_at=created(), flags_as_objects=n % 2 == 1)
        job = tal.jobs.pop(old)
        job["id"] = _uuid(rng)
        job["schema"] = {"id": _uuid(rng), "name": "Invoice"}
        job["row_ids"] = [_uuid(rng) for _ in job["row_ids"]]
        tal.jobs[job["id"]] = job
        talonic_jobs.append(job)
        body = tal._results(job)
        extra[("talonic", f"/v1/jobs/{job['id']}")] = tal._job(job)
        path = f"/v1/jobs/{job['id']}/results"
        jobs.append(Job("talonic", job["id"], job["id"], "all", "talonic", path, body, None, None))
        jobs[-1].created = iso(job["created"])
    order = sorted(talonic_jobs, key=lambda j: (j["created"], j["id"]), reverse=True)
    total = len(order)
    for listing in _pages(
        "talonic",
        "talonic",
        "/v1/jobs",
        "cursor",
        [tal._job(j) for j in order],
        lambda items, cursor: {
            "data": items,
            "pagination": {"total": total, "limit": 100, "has_more": cursor is not None, "next_cursor": cursor},
        },
        ("data",),
        (("pagination", "has_more"), ("pagination", "next_cursor")),
        (r"(?i)listing Talonic jobs", r"(?i)\btalonic\b.*\blisting\b"),
    ):
        listings[listing.name] = listing

    # Where each job's entry is.
    for listing in listings.values():
        if listing.group not in ("clavata", "talonic"):
            continue
        for index, entry in enumerate(_get(listing.body, listing.entries)):
            job_id = entry["jobUuid"] if listing.group == "clavata" else entry["id"]
            job = next(j for j in jobs if j.id == job_id)
            job.listing, job.index = listing.name, index

    # The jobs meant to carry a corruption: the vendor's first `corrupt`.
    for kind in KINDS:
        for job in [j for j in jobs if j.kind == kind][: wanted[kind]]:
            job.clean = False

    def config_of(urls: dict[str, str]) -> dict:
        cognite: dict[str, t.Any] = {"base_url": urls["cognite"], "project": PROJECT}
        if oauth:
            cognite.update(
                client_id="fuzz-client",
                client_secret=secrets["cognite.client_secret"],
                token_url=f"{urls['cognite']}/oauth2/token",
                scopes=[f"{urls['cognite']}/.default"],
            )
        else:
            cognite["token"] = secrets["cognite.token"]
        cognite["entity_matching_jobs"] = predict_config
        return {
            "lookback_window": 30 * 86400,
            "max_retries": 1,
            "max_retry_wait": 0.2,
            "connect_timeout": 5,
            "read_timeout": 30,
            "max_listing_pages": 20,
            "max_concurrent_requests": 4,
            "cognite": cognite,
            "clavata": {"base_url": urls["clavata"], "api_key": secrets["clavata.api_key"]},
            "talonic": {"base_url": urls["talonic"], "api_key": secrets["talonic.api_key"]},
        }

    return World(jobs, listings, secrets, config_of, extra, vendor, realistic, oauth)
