"""The three places that list the tap's settings agree: the tap (`--about`), the README table, meltano.yml.

A setting added to the tap fails here until the README table is regenerated (`make readme-settings`)
and meltano.yml declares it with a label, a description and the matching kind; a setting declared in
meltano.yml that the tap does not know fails too (the tap refuses unknown keys, so Meltano would pass
a config the tap rejects).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_tap

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli there
    import tomli as tomllib

TABLE = re.compile(r"^\| Setting .*?(?=\n\n|\Z)", re.S | re.M)
SOURCES = ("cognite", "clavata", "talonic")
# Meltano 4.4's meltano.schema.json: `hidden` and `password` are deprecated kinds.
KINDS = set("string integer boolean decimal date_iso8601 email options file array object oauth".split())


@cache
def about() -> dict:
    run = run_tap({}, args=["--about", "--format", "json"])
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


@cache
def about_markdown_table() -> str:
    run = run_tap({}, args=["--about", "--format", "markdown"])
    assert run.returncode == 0, run.stderr[-2000:]
    found = TABLE.search(run.stdout)
    assert found, run.stdout[:500]
    return found.group(0).strip()


@cache
def meltano_yml() -> dict:
    return yaml.safe_load((ROOT / "meltano.yml").read_text())


def extractor() -> dict:
    (tap,) = [p for p in meltano_yml()["plugins"]["extractors"] if p["name"] == "tap-jobresults"]
    return tap


def about_paths() -> dict[str, dict]:
    """Every setting of `--about`, nested ones by dotted path (`cognite.project`), with its JSON schema."""
    paths: dict[str, dict] = {}

    def walk(prefix: str, schema: dict) -> None:
        for name, sub in schema.get("properties", {}).items():
            paths[prefix + name] = sub
            walk(f"{prefix}{name}.", sub)

    walk("", about()["settings"])
    return paths


def table_names(table: str) -> list[str]:
    return [line.split("|")[1].strip() for line in table.splitlines()[2:]]


def test_readme_settings_table_is_exactly_the_about_markdown_output():
    readme = (ROOT / "README.md").read_text()
    tables = TABLE.findall(readme)
    assert len(tables) == 1, "the README has one settings table"
    assert tables[0].strip() == about_markdown_table(), (
        "README settings table differs from `tap-jobresults --about --format markdown`: run `make readme-settings`"
    )
    assert table_names(tables[0]) == list(about_paths()), "the table lists every setting of --about, in order"


def test_meltano_yml_declares_exactly_the_settings_of_the_tap():
    """Each --about setting is declared in meltano.yml, itself, as an ancestor (`stream_maps` covers
    `stream_maps.__else__`) or through its leaves (`cognite.project` covers `cognite`); nothing else is."""
    paths = about_paths()
    declared = [s["name"] for s in extractor()["settings"]]
    assert len(declared) == len(set(declared)), "a setting is declared twice"
    unknown = [name for name in declared if name not in paths]
    assert not unknown, f"meltano.yml declares settings the tap does not have (it would refuse them): {unknown}"
    missing = [
        path
        for path in paths
        if path not in declared
        and not any(path.startswith(f"{name}.") for name in declared)
        and not any(name.startswith(f"{path}.") for name in declared)
    ]
    assert not missing, f"settings of `tap-jobresults --about` that meltano.yml does not declare: {missing}"
    for name in declared:
        assert not any(other.startswith(f"{name}.") for other in declared), f"{name} is declared with its leaves"


@pytest.mark.parametrize("plugin_type", ["extractors", "loaders"])
def test_every_setting_has_a_label_a_description_and_a_current_kind(plugin_type):
    for plugin in meltano_yml()["plugins"][plugin_type]:
        for setting in plugin.get("settings", []):
            where = f"{plugin['name']}: {setting['name']}"
            assert str(setting.get("label", "")).strip(), f"{where} has no label"
            assert str(setting.get("description", "")).strip(), f"{where} has no description"
            assert setting.get("kind") in KINDS, f"{where}: kind {setting.get('kind')!r} (Meltano 4 kinds: {KINDS})"


def _expected_kind(schema: dict) -> str | None:
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else [t for t in types if t != "null"]
    if not types:
        return None  # untyped in the SDK (faker_config.seed): any kind
    (json_type,) = types
    if json_type == "string":
        if "enum" in schema:
            return "options"
        return "date_iso8601" if schema.get("format") == "date-time" else "string"
    return {"number": "decimal"}.get(json_type, json_type)


def test_kinds_defaults_and_secrets_match_the_tap():
    paths = about_paths()
    for setting in extractor()["settings"]:
        name, schema = setting["name"], paths.get(setting["name"], {})
        expected = _expected_kind(schema)
        if expected is not None:
            assert setting["kind"] == expected, f"{name}: kind {setting['kind']}, the tap says {expected}"
        if setting["kind"] == "options":
            assert [o["value"] for o in setting["options"]] == [v for v in schema["enum"] if v is not None], name
        if schema.get("secret") or schema.get("writeOnly"):
            assert setting.get("sensitive") is True, f"{name} is a secret: declare it `sensitive: true`"
        if "value" in setting:
            assert setting["value"] == schema.get("default"), f"{name}: default {setting['value']!r} is not the tap's"
        if name.split(".", 1)[0] in SOURCES:
            # A value would make the section present, and a present section is an active source.
            assert "value" not in setting, f"{name}: no default inside a source section"


def test_capabilities_and_groups_match_the_tap():
    tap = extractor()
    assert sorted(tap["capabilities"]) == sorted(about()["capabilities"])
    declared = {s["name"] for s in tap["settings"]}
    for group in tap["settings_group_validation"]:
        assert set(group) <= declared, group
    assert tap["label"] and tap["description"]


def test_meltano_yml_has_no_deprecated_version_field():
    assert "version" not in meltano_yml(), "Meltano 4 warns on every command about `version`"


def _meltano_site() -> Path:
    sites = sorted(Path(ROOT, ".venv-meltano").glob("lib/python3*/site-packages/meltano"))
    if not sites:
        pytest.fail("Meltano is not installed in .venv-meltano: run `make test` (or make .venv-meltano/bin/meltano)")
    return sites[-1]


@pytest.mark.slow  # needs Meltano's virtualenv (`make test` builds it)
@pytest.mark.parametrize("name", ["meltano.yml", "meltano-shards.yml"])
def test_meltano_files_are_valid_against_the_installed_meltano_s_own_schema(name):
    """Meltano 4.4.1's meltano.schema.json (draft 2020-12, `unevaluatedProperties`): no key it does not know,
    such as the Hub-only `keywords` and `supported_python_versions` (those are in hub/tap-jobresults.yml)."""
    import jsonschema.validators

    schema = json.loads((_meltano_site() / "schemas" / "meltano.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    project = json.loads(json.dumps(yaml.safe_load((ROOT / name).read_text())))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(project)]
    assert not errors, errors[:10]


@pytest.mark.slow
def test_meltano_config_set_changes_only_the_lines_it_sets(meltano_project_lock, tmp_path):
    """meltano.yml and meltano-shards.yml are written as Meltano writes YAML, so `meltano config set` (which
    rewrites the files) adds the lines it sets and touches no other line. Comments are in the docs instead."""
    meltano = shutil.which("meltano") or str(ROOT / ".venv-meltano" / "bin" / "meltano")
    for name in ("meltano.yml", "meltano-shards.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MELTANO_", "TAP_JOBRESULTS_"))}
    env["MELTANO_DISABLE_USER_YAML_CONFIG"] = "true"
    sets = [
        ("tap-jobresults", "max_retries", "7"),
        ("tap-jobresults", "clavata.policy_id", "policy-1"),
        ("target-postgres", "host", "db.example"),
        ("tap-jobresults--shard-1", "max_concurrent_requests", "4"),
        ("tap-jobresults", "talonic.api_key", "tlnc_secret"),  # a secret: to .env, not meltano.yml
    ]
    for plugin, setting, value in sets:
        proc = subprocess.run(
            [meltano, "config", "set", plugin, setting, value],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    changed: list[str] = []
    for name in ("meltano.yml", "meltano-shards.yml"):
        before = (ROOT / name).read_text().splitlines()
        after = (tmp_path / name).read_text().splitlines()
        diff = [line for line in difflib.unified_diff(before, after, lineterm="", n=0) if line[:1] in "+-"]
        diff = [line for line in diff if not line.startswith(("+++", "---"))]
        assert not [line for line in diff if line.startswith("-")], f"{name}: lines Meltano rewrote: {diff[:10]}"
        changed += [line[1:].strip() for line in diff]
    expected = ["config:", "max_retries: 7", "clavata:", "policy_id: policy-1", "config:", "host: db.example"]
    assert sorted(changed) == sorted([*expected, "max_concurrent_requests: 4"]), changed
    assert "tlnc_secret" in (tmp_path / ".env").read_text()


# The Meltano Hub's schema for an extractor definition, as this test needs it: built from the Hub's own
# schemas (meltano/hub: schemas/plugin_definitions/extractors.schema.json @ 1362a2e6, hub_metadata.schema.json
# @ 52e50244, common/common.schema.json @ 052894dd, common/extractors_specific.schema.json @ 44192efe,
# common/base_setting.schema.json @ 32b29566), with Meltano 4's setting kinds (`decimal`) and `sensitive`, and
# the keys the Hub needs to list a plugin (variant, repo, docs, logo_url, maintenance_status, quality) required.
HUB_SETTING = {
    "type": "object",
    "required": ["name", "label", "kind", "description"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "aliases": {"type": "array", "items": {"type": "string"}},
        "label": {"type": "string"},
        "value": {},
        "placeholder": {"type": "string"},
        "kind": {"enum": sorted(KINDS)},
        "description": {"type": "string"},
        "tooltip": {"type": "string"},
        "documentation": {"type": "string"},
        "protected": {"type": "boolean"},
        "sensitive": {"type": "boolean"},
        "env": {"type": "string"},
        "value_processor": {"enum": ["upcase_string", "nest_object", "stringify"]},
        "value_post_processor": {"enum": ["upcase_string", "nest_object", "stringify"]},
        "options": {"type": "array", "items": {"type": "object", "required": ["label", "value"]}},
        "docs": {"type": "string"},
    },
}
CAPABILITIES = [
    "properties",
    "catalog",
    "discover",
    "state",
    "about",
    "stream-maps",
    "schema-flattening",
    "activate-version",
    "batch",
    "test",
    "log-based",
    "structured-logging",
]
HUB_EXTRACTOR = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "name",
        "namespace",
        "variant",
        "label",
        "description",
        "repo",
        "docs",
        "logo_url",
        "pip_url",
        "executable",
        "maintenance_status",
        "quality",
        "capabilities",
        "settings",
        "keywords",
        "domain_url",
    ],
    "properties": {
        **{key: {"type": "string"} for key in ("name", "namespace", "variant", "label", "description", "executable")},
        **{key: {"type": "string", "pattern": "^https://"} for key in ("repo", "docs", "logo_url", "domain_url")},
        "pip_url": {"type": "string"},
        "maintenance_status": {"enum": ["active", "beta", "development", "inactive", "unknown"]},
        "quality": {"enum": ["gold", "silver", "bronze", "unknown"]},
        "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "supported_python_versions": {"type": "array", "items": {"type": "string", "pattern": r"^3\.\d+$"}},
        "capabilities": {"type": "array", "items": {"enum": CAPABILITIES}, "uniqueItems": True},
        "settings": {"type": "array", "items": HUB_SETTING},
        "settings_group_validation": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        "select": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object"},
        "hidden": {"type": "boolean"},
        "commands": {"type": "object"},
        "definition": {"type": "string"},
        "next_steps": {"type": "string"},
        "settings_preamble": {"type": "string"},
        "usage": {"type": "string"},
        "prereq": {"type": "string"},
    },
}


@cache
def hub_definition() -> dict:
    return yaml.safe_load((ROOT / "hub" / "tap-jobresults.yml").read_text())


def test_the_hub_definition_is_valid_for_the_hub():
    import jsonschema

    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(HUB_EXTRACTOR).iter_errors(hub_definition())
    ]
    assert not errors, errors[:10]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    hub = hub_definition()
    assert hub["pip_url"] == project["name"]  # installed from PyPI, not `-e .`
    assert hub["repo"] == project["urls"]["Repository"] and hub["docs"] == project["urls"]["Documentation"]
    assert hub["variant"] == hub["repo"].rstrip("/").split("/")[-2]  # the Hub's variant: the repository owner


def test_the_hub_definition_matches_the_tap_and_meltano_yml():
    """Settings and capabilities are the tap's (`--about`, through meltano.yml's declarations, checked above);
    the file is what scripts/hub_definition.py writes from meltano.yml and pyproject.toml."""
    hub, tap = hub_definition(), extractor()
    assert sorted(hub["capabilities"]) == sorted(about()["capabilities"])
    assert hub["settings"] == tap["settings"] and hub["settings_group_validation"] == tap["settings_group_validation"]
    names = [s["name"] for s in hub["settings"]]
    paths = about_paths()
    assert all(name in paths for name in names)
    assert all(p in names or any(p.startswith(f"{n}.") or n.startswith(f"{p}.") for n in names) for p in paths)
    classifiers = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["classifiers"]
    from_classifiers = [c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*Python :: 3\.\d+", c)]
    assert hub["supported_python_versions"] == from_classifiers == about()["supported_python_versions"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "hub_definition.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
