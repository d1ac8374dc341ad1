"""Release metadata agrees with itself: the version in pyproject, the tap's --about and the changelog; the license."""

from __future__ import annotations

import json
import re
import sys

from tests.conftest import ROOT, run_tap

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli there
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()
SEMVER = r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?"


def _sections() -> list[tuple[str, str]]:
    """(heading, body) of each `## [...]` section, newest first."""
    parts = re.split(r"^## \[([^\]]+)\][^\n]*\n", CHANGELOG, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_version_is_the_same_in_pyproject_the_tap_and_the_changelog():
    version = PYPROJECT["version"]
    assert re.fullmatch(SEMVER, version), version
    about = run_tap({}, args=["--about", "--format", "json"])
    assert json.loads(about.stdout)["version"] == version, "reinstall (make install) after changing the version"
    headings = [heading for heading, _ in _sections()]
    assert headings[0] == "Unreleased", "the changelog starts with an [Unreleased] section"
    assert headings[1] == version, f"the newest release in CHANGELOG.md is {headings[1]}, pyproject says {version}"
    released = headings[1:]
    assert all(re.fullmatch(SEMVER, h) for h in released), released
    assert len(set(released)) == len(released)
    dated = re.findall(rf"^## \[({SEMVER})\] - (\d{{4}}-\d{{2}}-\d{{2}})$", CHANGELOG, re.M)
    assert [v for v, _ in dated] == released, "every release heading is `## [x.y.z] - YYYY-MM-DD`"
    assert [d for _, d in dated] == sorted((d for _, d in dated), reverse=True), "newest first"


def test_released_changelog_sections_have_no_placeholders():
    for heading, body in _sections()[1:]:
        assert "TODO" not in body, f"CHANGELOG.md [{heading}] still has a TODO placeholder"
        assert body.strip(), f"CHANGELOG.md [{heading}] is empty"


def test_license_is_the_apache_2_0_text_pyproject_declares():
    assert PYPROJECT["license"] == "Apache-2.0"
    assert "LICENSE" in PYPROJECT["license-files"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    sections = re.findall(r"^\s+(\d)\. [A-Z][a-z]+", text, re.M)
    assert sections == [str(n) for n in range(1, 10)], "the nine sections of the license, in full"


def test_secrets_virtualenvs_and_outputs_are_git_ignored():
    """`meltano config set` writes secrets to .env; `git add .` must not pick it up, nor virtualenvs or outputs."""
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert {".env", ".venv/", ".venv-*/", "output/", ".meltano/"} <= ignored
