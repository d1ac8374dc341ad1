"""Bad config fails before any request, with a message that names the setting; never a traceback."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT, run_tap

BASE = {"talonic": {"base_url": "http://127.0.0.1:9", "api_key": "tlnc_test_abcdef"}}


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({}, "no source configured"),
        ({"talonic": {"base_url": "http://127.0.0.1:9"}}, "api_key"),
        ({**BASE, "bogus_setting": 1}, "bogus_setting"),
        ({"talonic": {**BASE["talonic"], "apikey": "x"}}, "apikey"),
        ({"clavata": {"api_key": "clv_test_abcdef", "policyid": "p1"}}, "policyid"),
        ({"cognite": {"base_url": "http://127.0.0.1:9", "projct": "p", "token": "tok-abcdef"}}, "projct"),
        ({"talonic": {"base_url": "http://api.example.com", "api_key": "tlnc_test_abcdef"}}, "talonic.base_url"),
        ({**BASE, "max_concurrent_requests": "eight"}, "max_concurrent_requests"),
        ({**BASE, "max_concurrent_requests": 0}, "max_concurrent_requests"),
        ({**BASE, "start_date": "yesterday"}, "start_date"),
        ({"cognite": {"base_url": "http://127.0.0.1:9", "project": "p"}}, "cognite.token"),
        (
            {
                "cognite": {
                    "base_url": "http://127.0.0.1:9",
                    "project": "p",
                    "token": "tok-abcdef",
                    "client_id": "c",
                    "client_secret": "s-abcdef",
                    "token_url": "http://127.0.0.1:9/t",
                    "scopes": ["x"],
                }
            },
            "not both",
        ),
        (
            {
                "cognite": {
                    "base_url": "http://127.0.0.1:9",
                    "project": "p",
                    "token": "tok-abcdef",
                    "entity_matching_jobs": [{"job_id": "12"}],
                }
            },
            "job_id",
        ),
    ],
)
def test_bad_config_fails_fast_and_names_the_setting(config, named):
    run = run_tap(config, timeout=60)
    assert run.returncode != 0
    assert named in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    assert "tlnc_test_abcdef" not in run.stderr and "s-abcdef" not in run.stderr


def test_about_markdown_is_the_readme_settings_table():
    run = run_tap({}, args=["--about", "--format", "markdown"])
    assert run.returncode == 0
    table = re.search(r"^\| Setting .*?(?=\n\n|\Z)", run.stdout, re.S | re.M)
    assert table, run.stdout[:500]
    readme = (ROOT / "README.md").read_text()
    assert table.group(0).strip() in readme, "README settings table differs from --about --format markdown"


@pytest.mark.parametrize("args", [["--about"], ["--discover"], []], ids=["about", "discover", "sync"])
def test_about_discover_and_sync_never_show_a_secret_even_in_validation_errors(args):
    # A secret of the wrong type makes the validator quote the value ("['...'] is not of type 'string'"):
    # only the scrubbing keeps it out of the output. `--about` reads no config values at all.
    secret = "tlnc_live_supersecret"
    run = run_tap({"talonic": {"api_key": [secret]}, "clavata": {"api_key": secret, "base_url": 5}}, args=args)
    output = run.stdout + run.stderr
    assert secret not in output
    if args != ["--about"]:
        assert run.returncode != 0 and "api_key" in run.stderr, run.stderr[-1500:]


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:9", False),
        ("http://localhost:9", False),
        ("http://[::1]:9", False),
        ("http://127.0.0.2:9", False),
        ("https://api.example.com", False),
        ("http://api.example.com", True),
        ("http://10.0.0.1:9", True),
        ("http://localhost.example.com", True),
        ("http://", True),
    ],
)
def test_plain_http_is_for_loopback_hosts_only(url, refused):
    from tap_jobresults.settings import check_url

    problem = check_url("talonic.base_url", url)
    assert (problem is not None) == refused, problem
    if refused:
        assert problem.startswith("talonic.base_url: ")


SECTION = {"base_url": "https://api.example.com", "api_key": "tlnc_test_abcdef"}
CDF = {"base_url": "https://x.cognitedata.com", "project": "p", "token": "tok-abcdefgh"}


@pytest.mark.parametrize(
    ("config", "errors"),
    [
        ({"talonic": SECTION}, []),
        (
            {"talonic": {**SECTION, "base_url": "http://[::1"}},
            ["talonic.base_url: <an invalid URL> is not a valid URL"],
        ),
        (
            {"talonic": {**SECTION, "base_url": "https://h:port/"}},
            ["talonic.base_url: <an invalid URL> is not a valid URL"],
        ),
        ({"talonic": {**SECTION, "base_url": "ftp://h/"}}, ["talonic.base_url: ftp://h/ is not an http(s) URL"]),
        (
            {"talonic": {**SECTION, "base_url": "http://:8080/x"}},
            ["talonic.base_url: http://?:8080/x is not an http(s) URL"],
        ),
        ({"talonic": {**SECTION, "base_url": "http://localhost:8/"}}, []),
        (
            {"talonic": {**SECTION, "base_url": "http://api.example.com/"}},
            [
                "talonic.base_url: plain http:// is refused for 'api.example.com' (credentials would travel "
                "unencrypted); use https://, or a loopback host for local tests"
            ],
        ),
        ({"talonic": {**SECTION, "base_url": "http://[::1]:8/"}}, []),
        (
            {"talonic": {**SECTION, "api_key": "xxx"}},
            ["talonic.api_key: too short to be a real credential (fewer than 8 characters); check the value"],
        ),
        (
            {"cognite": {**CDF, "entity_matching_jobs": [{"job_id": 1}, {"job_id": 2}, {"job_id": 1}]}},
            ["cognite.entity_matching_jobs: job_id 1 is listed twice"],
        ),
        ({"cognite": {**CDF, "entity_matching_jobs": [{"job_id": 1}, {"job_id": 2}]}}, []),
        # shard: one shard of one is the whole world; the last index of a count is the last shard
        ({"talonic": SECTION, "shard": {"index": 0, "count": 1}}, []),
        ({"talonic": SECTION, "shard": {"index": 2, "count": 3}}, []),
        ({"talonic": SECTION, "shard": {"index": 0, "count": 0}}, ["shard.count: 0 must be at least 1"]),
        (
            {"talonic": SECTION, "shard": {"index": 3, "count": 3}},
            ["shard.index: 3 must be between 0 and shard.count - 1 (2)"],
        ),
    ],
)
def test_semantic_errors_are_exact(config, errors):
    """settings.semantic_errors in-process: the exact lines an operator reads (the CLI test above checks that
    they reach stderr; this one that each says what it should, and nothing else is said)."""
    from tap_jobresults import settings

    assert settings.shape_errors(config) == []
    assert settings.semantic_errors(config) == errors


@pytest.mark.parametrize(
    ("config", "errors"),
    [
        ([], ["the config must be a JSON object"]),
        ({"talonic": SECTION, "clavata": []}, ["clavata: must be an object of settings, got list"]),
        (
            {"talonic": "x", "cognite": 1},
            ["cognite: must be an object of settings, got int", "talonic: must be an object of settings, got str"],
        ),
    ],
)
def test_shape_errors_are_exact(config, errors):
    from tap_jobresults import settings

    assert sorted(settings.shape_errors(config)) == errors
    assert settings.secret_values(config) == ([("talonic.api_key", SECTION["api_key"])] if "clavata" in config else [])


def test_a_schema_error_about_a_secret_never_quotes_it_whatever_the_validator():
    """settings.schema_error_message on validators the config schema does not use on secrets today (a
    future minLength or pattern): the message names the setting and the rule, never the value."""
    import jsonschema

    from tap_jobresults import settings

    schema = {"properties": {"talonic": {"properties": {"api_key": {"type": "string", "minLength": 40}}}}}
    config = {"talonic": {"api_key": "tlnc_short_secret"}}
    [error] = jsonschema.Draft7Validator(schema).iter_errors(config)
    message = settings.schema_error_message(error)
    assert message == "talonic.api_key: invalid value for 'minLength' (the value is a secret and is not shown)"
