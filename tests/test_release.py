"""Release metadata agrees with itself: the version in pyproject, the tap's --about and the changelog; the license."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT, run_tap

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli there
    import tomli as tomllib

BUILD = tomllib.loads((ROOT / "pyproject.toml").read_text())
PYPROJECT = BUILD["project"]
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()
SEMVER = r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?"


def _sections() -> list[tuple[str, str]]:
    """(heading, body) of each `## [...]` section, newest first."""
    parts = re.split(r"^## \[([^\]]+)\][^\n]*\n", CHANGELOG, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_the_version_comes_from_the_git_tag_with_the_last_release_as_fallback():
    """Released from a tag `vX.Y.Z` (hatch-vcs); a clone without tags builds as a dev release after the fallback,
    which is the newest release in the changelog (`make release-check` builds from such a clone)."""
    assert "version" not in PYPROJECT and PYPROJECT["dynamic"] == ["version"]
    assert "hatch-vcs" in " ".join(BUILD["build-system"]["requires"])
    hatch = BUILD["tool"]["hatch"]["version"]
    assert hatch["source"] == "vcs"
    fallback = hatch["raw-options"]["fallback_version"]
    headings = [heading for heading, _ in _sections()]
    assert headings[0] == "Unreleased", "the changelog starts with an [Unreleased] section"
    assert headings[1] == fallback, f"the newest release in CHANGELOG.md is {headings[1]}, the fallback {fallback}"
    released = headings[1:]
    assert all(re.fullmatch(SEMVER, h) for h in released), released
    assert len(set(released)) == len(released)
    dated = re.findall(rf"^## \[({SEMVER})\] - (\d{{4}}-\d{{2}}-\d{{2}})$", CHANGELOG, re.M)
    assert [v for v, _ in dated] == released, "every release heading is `## [x.y.z] - YYYY-MM-DD`"
    assert [d for _, d in dated] == sorted((d for _, d in dated), reverse=True), "newest first"
    about = run_tap({}, args=["--about", "--format", "json"])
    installed = json.loads(about.stdout)["version"]
    assert installed == importlib.metadata.version("tap-jobresults")
    assert re.fullmatch(rf"{SEMVER}|\d+\.\d+\.\d+\.dev\d+\+g[0-9a-f]+(\.d\d{{8}})?", installed), installed


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


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _providers(module: str) -> list[str]:
    """Distributions whose installed files hold `module`: Python 3.10's packages_distributions() reads
    only top_level.txt, which some wheels (python-backoff's) do not have."""
    found = [
        dist.metadata["Name"]
        for dist in importlib.metadata.distributions()
        if any(str(f) in (f"{module}/__init__.py", f"{module}.py") for f in dist.files or ())
    ]
    return found or [module]


def test_every_third_party_import_of_the_package_is_a_declared_dependency():
    declared = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["dependencies"]}
    provided = importlib.metadata.packages_distributions()
    undeclared = {}
    for path in sorted((ROOT / "tap_jobresults").rglob("*.py")):
        for module in _imports(path) - set(sys.stdlib_module_names) - {"tap_jobresults", "__future__"}:
            distributions = {canonicalize_name(d) for d in provided.get(module) or _providers(module)}
            if not distributions & declared:
                undeclared[f"{path.relative_to(ROOT)}: {module}"] = sorted(distributions)
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_dependencies_are_bounded_where_a_major_release_is_untested():
    requirements = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PYPROJECT["dependencies"]}
    # http.py subclasses urllib3 2's connection classes and reads its exception names (1.26 crashed).
    assert str(requirements["urllib3"].specifier) in ("<3,>=2", ">=2,<3")
    for name, requirement in requirements.items():
        specs = {spec.operator for spec in requirement.specifier}
        assert specs & {"<", "~=", "=="}, f"{name}: no upper bound ({requirement})"
    import urllib3

    assert int(urllib3.__version__.split(".")[0]) == 2


def test_development_tools_are_dependency_groups_not_a_published_extra():
    assert "test" not in PYPROJECT.get("optional-dependencies", {}), "a `test` extra is published with the package"
    groups = BUILD["dependency-groups"]
    flat = {key: " ".join(str(item) for item in items) for key, items in groups.items()}
    assert "pytest" in flat["test"] and "hypothesis" in flat["test"]
    assert "ruff==" in flat["lint"] and "mypy==" in flat["lint"]
    assert "build==" in flat["release"] and "twine==" in flat["release"]
    for place in (".ci/run", "Makefile", ".github/workflows/release.yml"):
        text = (ROOT / place).read_text()
        assert ".[test]" not in text and "--group" in text, place
        assert "pip>=25.1" in text, f"{place}: --group needs pip 25.1 or later"


def test_the_package_is_typed_and_says_where_it_lives():
    assert (ROOT / "tap_jobresults" / "py.typed").exists()
    urls = PYPROJECT["urls"]
    assert {"Homepage", "Repository", "Documentation", "Issues", "Changelog"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())


def test_generated_dbt_files_are_neither_tracked_nor_shipped():
    tracked = subprocess.run(["git", "ls-files", "transform"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "transform/.user.yml" not in tracked.stdout.split()
    ignored = subprocess.run(["git", "check-ignore", "-q", "transform/.user.yml"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "transform/.user.yml (written by every dbt run) is not git-ignored"


def test_the_release_workflow_builds_inspects_tests_and_publishes_on_a_tag():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert "v*" in triggers["push"]["tags"]
    jobs = workflow["jobs"]
    build = " ".join(str(step.get("run", "")) for step in jobs["build"]["steps"])
    assert "scripts/release_check.py" in build  # what `make release-check` runs
    assert jobs["build"]["steps"][0]["with"]["fetch-depth"] == 0  # tags, for the version
    assert jobs["test"]["strategy"]["matrix"]["python-version"] == ["3.10", "3.11", "3.12", "3.13"]
    publish = jobs["publish"]
    assert publish["if"].startswith("startsWith(github.ref, 'refs/tags/v')")
    assert set(publish["needs"]) == {"build", "test"}
    assert publish["permissions"] == {"id-token": "write"}  # trusted publishing: no stored token
    assert any(str(step.get("uses", "")).startswith("pypa/gh-action-pypi-publish") for step in publish["steps"])
    assert "make release-check" in (ROOT / ".ci" / "run").read_text()
