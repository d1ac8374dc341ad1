"""A full sync against the fake APIs: every stream, its keys, its schema, its vendor quirks."""

from __future__ import annotations

import collections

import jsonschema
import pytest

from tests.conftest import BOTH_MODES, CONTRACT_KEYS, populate, run_tap

pytestmark = BOTH_MODES


@pytest.fixture
def full_run(apis):
    made = populate(apis)
    run = run_tap(apis.config(), check=True)
    return apis, made, run


def test_every_stream_is_emitted_with_the_contract_key_properties(full_run):
    _, _, run = full_run
    schemas = run.schemas()
    assert set(schemas) == set(CONTRACT_KEYS)
    for stream, keys in CONTRACT_KEYS.items():
        assert schemas[stream]["key_properties"] == keys, stream
        assert run.records(stream), f"no records for {stream}"


def test_primary_keys_are_unique_within_a_run(full_run):
    _, _, run = full_run
    for stream in CONTRACT_KEYS:
        duplicates = [key for key, n in collections.Counter(run.keys(stream)).items() if n > 1]
        assert not duplicates, f"{stream}: duplicate keys {duplicates[:5]}"


def test_every_record_is_valid_against_its_schema(full_run):
    _, _, run = full_run
    # Without rfc3339-validator jsonschema skips `format: date-time` silently and "not a date" validates.
    assert "date-time" in jsonschema.Draft7Validator.FORMAT_CHECKER.checkers, "pip install rfc3339-validator"
    validators = {
        stream: jsonschema.Draft7Validator(m["schema"], format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
        for stream, m in run.schemas().items()
    }
    for message in run.messages:
        if message["type"] == "RECORD":
            errors = list(validators[message["stream"]].iter_errors(message["record"]))
            assert not errors, (message["stream"], errors[0].message)


def test_record_counts_match_what_the_apis_hold(full_run):
    _apis, made, run = full_run
    counts = run.counts()
    assert counts["entity_matching_jobs"] == len(made["predict"])
    assert counts["match_results"] == 4 + 3  # finished jobs only; the failed one has no items
    assert counts["pipeline_runs"] == len(made["runs"])
    assert counts["pipeline_matches"] == 5
    assert counts["suggested_rules"] == 2
    assert counts["generated_rules"] == 1
    assert counts["clavata_jobs"] == len(made["clavata"])
    assert counts["clavata_reports"] == 3 + 2
    assert counts["extraction_jobs"] == len(made["talonic"])
    # Rows of the processing job are emitted early (partial results), as the contract allows.
    finished_rows = 3 + 2
    assert finished_rows <= counts["extraction_rows"] <= finished_rows + 2


def test_stdout_holds_only_singer_messages_and_logs_go_to_stderr(full_run):
    _, _, run = full_run
    assert all(line.startswith("{") for line in run.stdout.splitlines())
    assert "Sync complete" not in run.stdout and "Beginning sync" not in run.stdout
    assert "Sync complete" in run.stderr.splitlines()[-1]


def test_timestamps_are_utc_iso_strings(full_run):
    _, _, run = full_run
    job = run.records("entity_matching_jobs")[0]
    assert job["created_time"].endswith("Z") and "T" in job["created_time"]
    run_record = run.records("pipeline_runs")[0]
    assert run_record["status_time"].endswith("Z")


def test_match_results_carry_the_top_match(full_run):
    apis, _, run = full_run
    unsorted = unscored = 0
    for row in run.records("match_results"):
        assert row["match_count"] == len(row["matches"])
        scored = [m for m in row["matches"] if isinstance(m.get("score"), (int, float))]
        unscored += len(row["matches"]) - len(scored)
        if not scored:  # no match, or none with a score
            assert row["top_score"] is None and row["top_target"] is None
            continue
        best_score = sorted((m["score"] for m in scored), reverse=True)[0]
        assert row["top_score"] == best_score
        # The target in either spelling (realistic: every 4th item in the JS SDK's older `matchTo`).
        assert row["top_target"] in [m.get("target") or m["matchTo"] for m in scored if m["score"] == best_score]
        unsorted += row["matches"][0].get("score") != best_score
    if apis.realistic:  # the fake sent what makes "the first match" or "max over every match" wrong
        assert unsorted and unscored


def settled_talonic_jobs(apis, run) -> list[dict]:
    """Talonic job records once the results' job_status caught up with the listing (realistic mode: one more run)."""
    jobs = run.records("extraction_jobs")
    if apis.realistic:
        jobs += run_tap(apis.config(), state=run.state, check=True).records("extraction_jobs")
    return jobs


def test_failed_jobs_land_with_their_error(full_run):
    apis, _, run = full_run
    failed = [j for j in run.records("entity_matching_jobs") if j["status"] == "Failed"]
    assert failed and failed[0]["error_message"] == "model not found"
    failed_runs = [r for r in run.records("pipeline_runs") if r["status"] == "Failed"]
    assert failed_runs and failed_runs[0]["error_message"] == "boom"
    assert any(j["status"] == "failed" and j["finished"] for j in settled_talonic_jobs(apis, run))


def test_unfinished_jobs_are_visible_at_job_level(full_run):
    _, _, run = full_run
    assert any(j["status"] == "Running" and j["item_count"] is None for j in run.records("entity_matching_jobs"))
    assert any(r["status"] == "Queued" for r in run.records("pipeline_runs"))
    running = [j for j in run.records("clavata_jobs") if j["status"] == "JOB_STATUS_RUNNING"]
    assert running and running[0]["completed"] is None and running[0]["result_count"] is None


def test_clavata_outcome_falls_back_to_the_deprecated_result(full_run):
    _, _, run = full_run
    outcomes = {r["outcome"] for r in run.records("clavata_reports")}
    assert outcomes and None not in outcomes
    assert all(o.startswith("OUTCOME_") for o in outcomes)


def test_talonic_accepts_both_status_spellings_and_both_flag_shapes(full_run):
    apis, _, run = full_run
    statuses = {j["status"] for j in settled_talonic_jobs(apis, run) if j["finished"]}
    assert {"completed", "complete"} <= statuses
    flags = [f for r in run.records("extraction_rows") for f in r["validation_flags"]]
    assert any(isinstance(f, dict) for f in flags)


def test_job_token_and_beta_header_are_sent(full_run):
    apis, made, _ = full_run
    log = apis.cognite.request_log
    tokened = [r for r in log if r["path"].endswith(f"/jobs/{made['predict'][1]}")]
    assert tokened and all(r["headers"].get("X-Job-Token") == "job-token-secret-1" for r in tokened)
    pipeline_calls = [r for r in log if "/pipelines" in r["path"]]
    assert pipeline_calls
    assert all(r["headers"].get("cdf-version") == "20230101-beta" for r in pipeline_calls)


def test_each_job_is_fetched_once_per_sync(full_run):
    apis, made, run = full_run
    finished_runs = {r["run_id"] for r in run.records("pipeline_runs") if r["finished"]}
    finished_clavata = {r["job_uuid"] for r in run.records("clavata_jobs") if r["finished"]}
    for job_id in made["predict"]:  # no listing: every configured job is fetched, once
        assert apis.cognite.requests(job_id) == 1
    for _, run_id in made["runs"]:  # the listing's summary is enough for an unfinished run
        assert apis.cognite.requests(run_id) == (1 if run_id in finished_runs else 0)
    for uuid in made["clavata"]:
        assert apis.clavata.requests(uuid) == (1 if uuid in finished_clavata else 0)
    for job_id in made["talonic"]:  # results (partial while processing); the job itself came listed
        assert apis.talonic.requests(job_id) == 1


def test_with_flattening_every_record_key_is_a_property_of_its_flattened_schema(apis):
    """Flattening renames nested fields (`grid_stats__total_rows`); a null typed object must not go out under
    its own name, which the flattened schema no longer has (a loader rejects the record)."""
    populate(apis)
    apis.talonic.add_job(rows=1, status="processing")  # grid_stats and error both null
    config = {**apis.config(cognite_auth="token"), "flattening_enabled": True, "flattening_max_depth": 2}
    run = run_tap(config, check=True)
    schemas = {m["stream"]: m["schema"]["properties"] for m in run.messages if m["type"] == "SCHEMA"}
    assert "grid_stats__total_cells" in schemas["extraction_jobs"] and "grid_stats" not in schemas["extraction_jobs"]
    assert "extra_fields" in schemas["extraction_jobs"]  # an object without properties stays one column
    seen = collections.Counter()
    for message in run.messages:
        if message["type"] == "RECORD":
            stream, record = message["stream"], message["record"]
            assert set(record) <= set(schemas[stream]), (stream, sorted(set(record) - set(schemas[stream])))
            seen[stream] += 1
    assert seen["extraction_jobs"] >= 2 and seen["clavata_reports"] >= 1
