"""Build the wheel and sdist as the release workflow does, and inspect them (`make release-check`).

From a clean clone of HEAD (tracked files only: nothing from the working tree, no generated dbt file):
`python -m build`, `twine check --strict`, then the contents of each artifact. Prints what was built;
exits 1 naming every problem. Run with the release tools' Python (.venv-release, `--group release`); `--keep DIR` copies the artifacts there.
"""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "tap_jobresults"
# Never shipped: tests and their fixtures, the Meltano/dbt project files, dbt's generated user file.
FORBIDDEN = re.compile(
    r"(^|/)(tests|transform|orchestrate|benchmarks|scripts|\.github|\.ci)/|(^|/)\.user\.yml$|meltano[^/]*\.yml$"
)
REQUIRED_DEPENDENCIES = ("urllib3<3,>=2", "singer-sdk[msgspec]~=0.54.9")


def expected_files() -> set[str]:
    """What the package must carry: its modules, every stream schema, and the PEP 561 marker."""
    names = {str(p.relative_to(ROOT)) for p in (ROOT / PACKAGE).rglob("*") if p.is_file()}
    return {n for n in names if n.endswith((".py", ".json", "py.typed")) and "__pycache__" not in n}


def inspect_wheel(path: Path, problems: list[str]) -> str:
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())
        entry_points = wheel.read(metadata_name.replace("METADATA", "entry_points.txt")).decode()
    missing = expected_files() - names
    if missing:
        problems.append(f"{path.name}: missing {sorted(missing)[:5]}")
    if f"{PACKAGE}/py.typed" not in names:
        problems.append(f"{path.name}: no {PACKAGE}/py.typed")
    schemas = [n for n in names if n.startswith(f"{PACKAGE}/schemas/") and n.endswith(".json")]
    if len(schemas) < 11:
        problems.append(f"{path.name}: {len(schemas)} stream schemas, expected 11")
    shipped = sorted(n for n in names if FORBIDDEN.search(n) or not (n.startswith(f"{PACKAGE}/") or ".dist-info/" in n))
    if shipped:
        problems.append(f"{path.name}: ships {shipped[:5]}")
    requires = metadata.get_all("Requires-Dist") or []
    for dependency in REQUIRED_DEPENDENCIES:
        if not any(r.replace(" ", "").startswith(dependency) for r in requires):
            problems.append(f"{path.name}: Requires-Dist lacks {dependency} ({requires})")
    extras = metadata.get_all("Provides-Extra") or []
    if "test" in extras:
        problems.append(f"{path.name}: publishes a `test` extra (development tools belong in dependency groups)")
    if not metadata.get_all("Project-URL"):
        problems.append(f"{path.name}: no Project-URL")
    if "tap-jobresults = tap_jobresults.cli:main" not in entry_points:
        problems.append(f"{path.name}: no tap-jobresults console script")
    return metadata["Version"]


def inspect_sdist(path: Path, problems: list[str]) -> None:
    with tarfile.open(path) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = (expected_files() | {"pyproject.toml", "LICENSE", "README.md"}) - names
    if missing:
        problems.append(f"{path.name}: missing {sorted(missing)[:5]}")
    shipped = sorted(n for n in names if FORBIDDEN.search(n))
    if shipped:
        problems.append(f"{path.name}: ships {shipped[:5]}")


def main() -> int:
    problems: list[str] = []
    keep = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else None
    with tempfile.TemporaryDirectory() as tmp:
        clone, dist = Path(tmp) / "clone", Path(tmp) / "dist"
        subprocess.run(["git", "clone", "--quiet", "--no-local", str(ROOT), str(clone)], check=True)
        subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(dist), str(clone)], check=True, stdout=subprocess.DEVNULL
        )
        artifacts = sorted(dist.iterdir())
        subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, artifacts)], check=True)
        wheels = [a for a in artifacts if a.suffix == ".whl"]
        sdists = [a for a in artifacts if a.name.endswith(".tar.gz")]
        if len(wheels) != 1 or len(sdists) != 1:
            problems.append(f"expected one wheel and one sdist, got {[a.name for a in artifacts]}")
        version = inspect_wheel(wheels[0], problems) if wheels else "?"
        for sdist in sdists:
            inspect_sdist(sdist, problems)
        print(f"built {', '.join(a.name for a in artifacts)} (version {version})")
        if keep is not None:  # the release workflow publishes exactly what was inspected
            keep.mkdir(parents=True, exist_ok=True)
            for artifact in artifacts:
                shutil.copy(artifact, keep / artifact.name)
    for problem in problems:
        print(f"release check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
