"""The three places that list the tap's settings agree: the tap (`--about`), the README table, meltano.yml.

A setting added to the tap fails here until the README table is regenerated (`make readme-settings`)
and meltano.yml declares it with a label, a description and the matching kind; a setting declared in
meltano.yml that the tap does not know fails too (the tap refuses unknown keys, so Meltano would pass
a config the tap rejects).
"""

from __future__ import annotations

import json
import re
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


def test_capabilities_python_versions_and_groups_match_the_tap():
    tap = extractor()
    assert sorted(tap["capabilities"]) == sorted(about()["capabilities"])
    classifiers = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["classifiers"]
    from_classifiers = [c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*Python :: 3\.\d+", c)]
    assert tap["supported_python_versions"] == from_classifiers == about()["supported_python_versions"]
    declared = {s["name"] for s in tap["settings"]}
    for group in tap["settings_group_validation"]:
        assert set(group) <= declared, group
    assert tap["keywords"] and tap["label"] and tap["description"]


def test_meltano_yml_has_no_deprecated_version_field():
    assert "version" not in meltano_yml(), "Meltano 4 warns on every command about `version`"


@pytest.mark.slow
def test_meltano_yml_is_valid_for_meltano_4():
    """Against the JSON schema that ships with the installed Meltano (4.4.1 from `make test`)."""
    jsonschema = pytest.importorskip("jsonschema")
    schemas = sorted(Path(ROOT, ".venv-meltano").glob("lib/python3*/site-packages/meltano/schemas/meltano.schema.json"))
    if not schemas:
        pytest.fail("Meltano is not installed in .venv-meltano: run `make test` (or make .venv-meltano/bin/meltano)")
    schema = json.loads(schemas[-1].read_text())
    project = json.loads(json.dumps(meltano_yml()))
    for plugin in project["plugins"]["extractors"]:
        # Read by Meltano 4.4 (python_compatibility.py) and the Hub, not yet in the project schema.
        plugin.pop("supported_python_versions", None)
        plugin.pop("keywords", None)
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(project)]
    assert not errors, errors[:10]
