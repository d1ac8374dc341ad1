"""The dbt package in transform/: a real load through target-postgres, then `dbt build` and `dbt source freshness`.

The tap runs against the fake APIs, its output goes through the real `target-postgres` (from
.venv-target-postgres) into a schema of its own, and the real dbt (from .venv-dbt) builds the models into a
second schema, reading PG* and DBT_SCHEMA as a user's shell would. Twice: the second load finishes the running
jobs and adds new ones, and the review models must follow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import CONTRACT_KEYS, ROOT, populate, run_tap
from tests.test_meltano_postgres import MELTANO, _env, meltano_installed  # noqa: F401  (a fixture)

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.slow
PG_URL = os.environ.get("TAP_JOBRESULTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG = urlsplit(PG_URL)
TARGET_POSTGRES = ROOT / ".venv-target-postgres" / "bin" / "target-postgres"
DBT = ROOT / ".venv-dbt" / "bin" / "dbt"


@pytest.fixture
def schemas():
    """(the tap's schema, the models' schema), both dropped afterwards."""
    name = f"jr_dbt_{uuid.uuid4().hex[:10]}"
    yield name, f"{name}_models"
    with psycopg.connect(PG_URL, autocommit=True) as con:
        for schema in (name, f"{name}_models"):
            con.execute(f'drop schema if exists "{schema}" cascade')


def _query(sql: str, *params) -> list[tuple]:
    with psycopg.connect(PG_URL) as con:
        return con.execute(sql, params).fetchall()


def _load(config: dict, state: dict | None, schema: str, tmp_path: Path) -> dict | None:
    """tap | target-postgres into `schema`; returns the tap's last state."""
    if not TARGET_POSTGRES.exists():
        pytest.fail(f"run `make test`: it installs target-postgres into {TARGET_POSTGRES.parent.parent}")
    run = run_tap(config, state, check=True)
    target_config = tmp_path / "target-postgres.json"
    target_config.write_text(
        json.dumps(
            {
                "host": PG.hostname or "127.0.0.1",
                "port": PG.port or 5432,
                "user": PG.username or "postgres",
                # target-postgres insists on a password; a trust-auth server ignores it.
                "password": PG.password or "unused-with-trust-auth",
                "database": PG.path.lstrip("/") or "postgres",
                "default_target_schema": schema,
                "load_method": "upsert",
                "add_record_metadata": True,
            }
        )
    )
    loaded = subprocess.run(
        [str(TARGET_POSTGRES), "--config", str(target_config)],
        input=run.stdout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    return run.state


def _dbt(
    command: list[str], source_schema: str, model_schema: str, tmp_path: Path, extra_vars: dict | None = None
) -> tuple[int, dict, str]:
    """Runs dbt as a user would (PG*, DBT_SCHEMA, --vars source_schema); returns rc, the results file, output."""
    if not DBT.exists():
        pytest.fail(f"run `make test`: it installs dbt into {DBT.parent.parent}")
    tables = {
        r[0] for r in _query("select table_name from information_schema.tables where table_schema = %s", source_schema)
    }
    dbt_vars = {"source_schema": source_schema}
    if "sync_runs" not in tables:  # a tap from before the heartbeat stream
        dbt_vars["sync_runs_enabled"] = False
    dbt_vars.update(extra_vars or {})
    target_path = tmp_path / "dbt-target"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBT_"))},
        "PGHOST": PG.hostname or "127.0.0.1",
        "PGPORT": str(PG.port or 5432),
        "PGUSER": PG.username or "postgres",
        "PGPASSWORD": PG.password or "",
        "PGDATABASE": PG.path.lstrip("/") or "postgres",
        "DBT_SCHEMA": model_schema,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    proc = subprocess.run(
        [
            str(DBT),
            *command,
            "--project-dir",
            "transform",
            "--profiles-dir",
            "transform",
            "--target-path",
            str(target_path),
            "--log-path",
            str(tmp_path / "dbt-logs"),
            "--vars",
            json.dumps(dbt_vars),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results_file = target_path / ("sources.json" if command[:2] == ["source", "freshness"] else "run_results.json")
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    return proc.returncode, results, proc.stdout + proc.stderr


def _build_and_check_freshness(
    source_schema: str, model_schema: str, tmp_path: Path, *, warnings: bool = False
) -> dict:
    rc, results, output = _dbt(["build"], source_schema, model_schema, tmp_path)
    assert rc == 0, output[-5000:]
    statuses = {r["unique_id"]: r["status"] for r in results["results"]}
    ok = ("success", "pass", "warn") if warnings else ("success", "pass")
    bad = {uid: status for uid, status in statuses.items() if status not in ok}
    assert not bad, bad
    models = sum(uid.startswith("model.") for uid in statuses)
    tests = sum(uid.startswith("test.") for uid in statuses)
    assert models >= 10 and tests >= 25, (models, tests)

    rc, freshness, output = _dbt(["source", "freshness"], source_schema, model_schema, tmp_path)
    assert rc == 0, output[-5000:]
    sources = {r["unique_id"].rsplit(".", 1)[1]: r["status"] for r in freshness["results"]}
    assert len(sources) >= 10, sources
    stale = {name for name, status in sources.items() if status != "pass"}
    assert all(sources[name] == "warn" for name in stale) if warnings else not stale, sources
    return {"models": models, "tests": tests, "stale": sorted(stale)}


def _rows(model_schema: str, model: str, order: str = "1") -> list[tuple]:
    return _query(f'select * from "{model_schema}"."{model}" order by {order}')


def test_dbt_build_and_freshness_pass_after_each_of_two_loads(apis, schemas, tmp_path):
    source_schema, model_schema = schemas
    made = populate(apis)
    state = _load(apis.config(), None, source_schema, tmp_path)
    counts = _build_and_check_freshness(source_schema, model_schema, tmp_path)

    # The review models say what the load holds: one running job per job-level stream, the failures with errors.
    running = _query(f'select job_stream, job_key from "{model_schema}".review_running_jobs')
    assert sorted(s for s, _ in running) == ["clavata_jobs", "entity_matching_jobs", "extraction_jobs", "pipeline_runs"]
    failed = dict(
        _query(
            f'select job_stream, error_message from "{model_schema}".review_failed_jobs where job_stream <> %s',
            "clavata_jobs",
        )
    )
    assert failed["entity_matching_jobs"] == "model not found" and failed["pipeline_runs"] == "boom"
    assert failed["extraction_jobs"]  # the Talonic job's error.message
    # Unnested: 4 items x 2 candidates + 3 x 1; every candidate of the finished jobs, ranked.
    assert _query(f'select count(*), max(candidate_rank) from "{model_schema}".stg_match_candidates')[0] == (11, 2)
    sections = _query(f'select count(*) from "{model_schema}".stg_clavata_section_reports')[0][0]
    assert sections > 0
    fields = _query(f'select count(distinct row_id), count(*) from "{model_schema}".stg_extraction_fields')[0]
    assert fields[0] > 0 and fields[1] > fields[0]
    flagged = _query(f'select sum(flag_count) from "{model_schema}".review_flagged_extraction_fields')[0][0]
    assert (
        flagged
        == _query(
            f'select coalesce(sum(jsonb_array_length(validation_flags)), 0) from "{source_schema}".extraction_rows'
        )[0][0]
    )

    # Second load: the running jobs finish, new jobs arrive.
    apis.cognite.finish_all()
    apis.clavata.finish_all()
    apis.talonic.finish_all()
    new_predict = apis.cognite.add_predict_job(items=3, matches_per_item=3)
    apis.clavata.add_job(results=2)
    apis.talonic.add_job(rows=2)
    apis.talonic.add_job(status="processing", rows=1)
    _load(apis.config(), state, source_schema, tmp_path)
    again = _build_and_check_freshness(source_schema, model_schema, tmp_path)
    assert again == counts

    running = _query(f'select job_stream from "{model_schema}".review_running_jobs')
    assert running == [("extraction_jobs",)]
    candidates = _query(f'select count(*) from "{model_schema}".stg_match_candidates where job_id = %s', new_predict)
    assert candidates == [(9,)]
    jobs = _query(f'select count(*) from "{model_schema}".jobs')[0][0]
    assert jobs == sum(len(made[k]) for k in ("predict", "runs", "clavata", "talonic")) + 4


def test_dbt_build_copes_with_odd_but_possible_rows(apis, schemas, tmp_path):
    """Rows the vendors may send and the loader keeps: JSON null, empty tables, mixed flag types, values that are
    not an object, unscored candidates. The build and the freshness check still pass, and the odd rows land."""
    source_schema, model_schema = schemas
    populate(apis)
    _load(apis.config(), None, source_schema, tmp_path)
    s = f'"{source_schema}"'
    with psycopg.connect(PG_URL, autocommit=True) as con:
        for table in ("pipeline_matches", "suggested_rules", "generated_rules"):
            con.execute(f"truncate {s}.{table}")
        job_id = con.execute(f"select job_id from {s}.match_results limit 1").fetchone()[0]
        con.execute(
            f"insert into {s}.match_results (job_id, item_index, source, matches, match_count, top_score, top_target, "
            "_sdc_batched_at) values (%s, 1000, 'null', %s, 4, null, 'null', now()), (%s, 1001, 'null', null, null, "
            "null, 'null', now())",
            (
                job_id,
                '[{"score": "0.9", "target": null}, {"target": {"id": "x"}}, 5, {"score": 0.2, "target": {"id": 7}}]',
                job_id,
            ),
        )
        rows = con.execute(f"select id from {s}.extraction_rows order by id limit 4").fetchall()
        odd = [
            ('"just a string"', '[null, "bare_flag", {"field": "a"}, {"code": "c", "field": "n"}, 3]'),
            ("[1, 2]", '{"not": "an array"}'),
            ('{"a": {"b": 1}, "n": null, "t": true, "s": "x"}', "null"),
            ("null", '["missing_required_field:"]'),
        ]
        for (row_id,), (values, flags) in zip(rows, odd, strict=True):
            con.execute(
                f'update {s}.extraction_rows set "values" = %s::jsonb, validation_flags = %s::jsonb where id = %s',
                (values, flags, row_id),
            )
        con.execute(
            f"update {s}.clavata_reports set section_evaluation_reports = case when result_index = 0 then 'null'::jsonb "
            'else \'[{"name": null, "reviewResult": {"score": "high"}}]\'::jsonb end, outcome = null, created = null'
        )
        con.execute(f"update {s}.clavata_jobs set policy_id = null")
        con.execute(f"update {s}.extraction_jobs set error = 'null', error_code = null, error_message = null")
        # A heartbeat row with nothing but its key (a run that died early), beside the tap's own rows.
        con.execute(
            f"insert into {s}.sync_runs (run_id, job_stream, source, started_at, _sdc_batched_at) "
            "values ('r-odd', 'extraction_jobs', 'talonic', now() at time zone 'UTC', now() at time zone 'UTC')"
        )

    # A failed Talonic job without an error is worth a warning (severity warn), not a failed build.
    # Empty result tables make freshness warn (a stream may stay empty for good), never error.
    checked = _build_and_check_freshness(source_schema, model_schema, tmp_path, warnings=True)
    assert checked["stale"] == ["generated_rules", "pipeline_matches", "suggested_rules"]
    m = f'"{model_schema}"'
    candidates = _query(
        f"select candidate_index, candidate_rank, score, target_id from {m}.stg_match_candidates where item_index = 1000 order by candidate_index"
    )
    # Strings and missing scores are not numbers: ranked after the scored candidate.
    assert candidates == [(0, 2, None, None), (1, 3, None, "x"), (2, 4, None, None), (3, 1, 0.2, "7")]
    fields = _query(
        f"select field, value_type, value_text from {m}.stg_extraction_fields where field in ('a', 'n', 't', 's') order by field"
    )
    assert fields == [("a", "object", '{"b": 1}'), ("n", "null", None), ("s", "string", "x"), ("t", "boolean", "true")]
    flags = _query(
        f"select flag_code, field from {m}.stg_extraction_flags where row_id = %s order by flag_index", rows[0][0]
    )
    assert flags == [("bare_flag", None), ('{"field": "a"}', "a"), ("c", "n"), ("3", None)]
    assert _query(f"select count(*) from {m}.review_policy_outcomes where policy_id is null and day is not null")
    assert _query(f"select count(*) from {m}.stg_clavata_section_reports where section_name is null") != [(0,)]
    assert _query(f"select job_stream, jobs_pending from {m}.stg_sync_runs where run_id = 'r-odd'") == [
        ("extraction_jobs", None)
    ]
    beats = dict(_query(f"select job_stream, status from {m}.stg_sync_runs where run_id <> 'r-odd'"))
    assert set(beats) == {"entity_matching_jobs", "pipeline_runs", "clavata_jobs", "extraction_jobs"}


VENDORS = ("cognite", "clavata", "talonic")
# What each vendor brings: its source tables, and the models and singular tests that read only them.
VENDOR_NODES = {
    "cognite": {
        "entity_matching_jobs", "match_results", "pipeline_runs", "pipeline_matches", "suggested_rules",
        "generated_rules", "stg_entity_matching_jobs", "stg_match_results", "stg_match_candidates",
        "stg_pipeline_runs", "stg_pipeline_matches", "stg_suggested_rules", "stg_generated_rules",
        "review_low_score_matches", "review_ambiguous_matches", "ambiguous_matches_are_the_two_best_candidates",
        "low_score_matches_are_every_candidate_below_threshold", "match_candidates_map_to_one_match_result",
    },
    "clavata": {
        "clavata_jobs", "clavata_reports", "stg_clavata_jobs", "stg_clavata_reports", "stg_clavata_section_reports",
        "review_policy_outcomes", "policy_outcomes_count_every_report", "section_reports_map_back_to_their_report",
    },
    "talonic": {
        "extraction_jobs", "extraction_rows", "stg_extraction_jobs", "stg_extraction_rows", "stg_extraction_fields",
        "stg_extraction_flags", "review_flagged_extraction_fields", "flagged_fields_count_every_flag",
    },
}  # fmt: skip
JOB_STREAMS = {"cognite": {"entity_matching_jobs", "pipeline_runs"}, "clavata": {"clavata_jobs"},
               "talonic": {"extraction_jobs"}}  # fmt: skip


def _node_names(results: dict) -> set[str]:
    """Model and source names, and singular test names, of a run_results / sources file."""
    names = set()
    for r in results["results"]:
        kind, *_, name = r["unique_id"].split(".")
        if kind in ("model", "source") or (kind == "test" and len(r["unique_id"].split(".")) == 3):
            names.add(name)
    return names


@pytest.mark.parametrize(
    "vendors", [("cognite",), ("clavata",), ("talonic",), ("clavata", "talonic")], ids=lambda v: "+".join(v)
)
def test_dbt_builds_with_any_subset_of_vendors(vendors, apis, schemas, tmp_path):
    """The tap configured for some vendors lands only their tables; with the other vendors switched off
    (`<vendor>_enabled: false`) `dbt build` and `dbt source freshness` pass and read only what exists."""
    source_schema, model_schema = schemas
    populate(apis)
    _load(apis.config(sources=vendors), None, source_schema, tmp_path)
    tables = {
        r[0] for r in _query("select table_name from information_schema.tables where table_schema = %s", source_schema)
    }
    assert tables == {t for v in vendors for t in VENDOR_NODES[v] if t in CONTRACT_KEYS} | {"sync_runs"}
    off = {f"{v}_enabled": False for v in VENDORS if v not in vendors}

    if vendors == ("talonic",):
        # Left on, a vendor without tables stops the build at the start, naming its tables and the var to set.
        rc, _, output = _dbt(["build"], source_schema, model_schema, tmp_path)
        assert rc != 0
        for vendor, table in (("cognite", "entity_matching_jobs"), ("clavata", "clavata_jobs")):
            assert f'"{vendor}_enabled": false' in output, output[-3000:]
            assert f"{source_schema}.{table}" in output, output[-3000:]

    rc, results, output = _dbt(["build"], source_schema, model_schema, tmp_path, off)
    assert rc == 0, output[-5000:]
    bad = {r["unique_id"]: r["status"] for r in results["results"] if r["status"] not in ("success", "pass")}
    assert not bad, bad
    built = _node_names(results)
    for vendor in VENDORS:
        mine = VENDOR_NODES[vendor] - set(CONTRACT_KEYS)
        assert (mine <= built) if vendor in vendors else not (mine & built), (vendor, sorted(built))
    assert {"jobs", "review_running_jobs", "review_failed_jobs", "stg_sync_runs"} <= built
    streams = {r[0] for r in _query(f'select distinct job_stream from "{model_schema}".jobs')}
    assert streams == {s for v in vendors for s in JOB_STREAMS[v]}
    running = _query(f'select job_stream from "{model_schema}".review_running_jobs')
    assert sorted(r[0] for r in running) == sorted(s for v in vendors for s in JOB_STREAMS[v])

    rc, freshness, output = _dbt(["source", "freshness"], source_schema, model_schema, tmp_path, off)
    assert rc == 0, output[-5000:]
    checked = {r["unique_id"].rsplit(".", 1)[1]: r["status"] for r in freshness["results"]}
    assert set(checked) == tables and set(checked.values()) == {"pass"}, checked


RECIPE = ROOT / "docs" / "warehouses.md"
RECIPE_HEADING = "## The dbt-with-Meltano recipe"


def _recipe_blocks() -> list[str]:
    """The ```bash blocks of the recipe's section, in order."""
    text = RECIPE.read_text()
    section = text[text.index(RECIPE_HEADING) :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return re.findall(r"^```bash[^\n]*\n(.*?)^```", section, flags=re.S | re.M)  # norun="..." fences too


@pytest.mark.usefixtures("meltano_installed")
@pytest.mark.usefixtures("meltano_project_lock")
@pytest.mark.parametrize("vendors", [("talonic",), VENDORS], ids=["talonic-only", "all-three"])
def test_readme_recipe_dbt_with_meltano(vendors, apis, schemas, tmp_path):
    """The dbt-with-Meltano recipe as written: its blocks run in one bash, against the fake APIs and the test
    database. Only the user's own values are filled in: password, database, the models' schema, and (in the
    environment) the loader's schema, which dbt's source_schema follows. All three vendors: the block that
    switches vendors off is left out, as the recipe says."""
    source_schema, model_schema = schemas
    populate(apis)
    blocks = _recipe_blocks()
    assert len(blocks) == 3 and "DBT_COGNITE_ENABLED=false" in blocks[1], blocks
    if len(vendors) == 3:
        blocks = [blocks[0], blocks[2]]
    script = "set -eo pipefail\n" + "\n".join(blocks)
    for old, new in (
        ("PGPASSWORD=change-me", f"PGPASSWORD={PG.password or 'unused-with-trust-auth'}"),
        ("PGDATABASE=postgres", f"PGDATABASE={PG.path.lstrip('/') or 'postgres'}"),
        ("DBT_SCHEMA=tap_jobresults_dbt", f"DBT_SCHEMA={model_schema}"),
    ):
        assert old in script, old
        script = script.replace(old, new)
    tap_env = {k: v for k, v in _env(apis, source_schema).items() if k.startswith("TAP_JOBRESULTS_")}
    tap_env = {k: v for k, v in tap_env.items() if k.split("_")[2].lower() in vendors}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBT_", "TAP_JOBRESULTS_", "TARGET_"))},
        **tap_env,
        "PATH": f"{Path(MELTANO).parent}:{os.environ['PATH']}",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": source_schema,
        "DBT_SOURCE_SCHEMA": source_schema,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    tables = {
        r[0] for r in _query("select table_name from information_schema.tables where table_schema = %s", source_schema)
    }
    assert tables == {t for v in vendors for t in VENDOR_NODES[v] if t in CONTRACT_KEYS} | {"sync_runs"}
    streams = {r[0] for r in _query(f'select distinct job_stream from "{model_schema}".jobs')}
    assert streams == {s for v in vendors for s in JOB_STREAMS[v]}
    running = _query(f'select job_stream from "{model_schema}".review_running_jobs')
    assert sorted(r[0] for r in running) == sorted(s for v in vendors for s in JOB_STREAMS[v])
