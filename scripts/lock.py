"""Re-pin constraints.txt from this virtualenv (`make lock`), keeping the per-Python overrides.

The main pins are what a fresh install resolves to on the Python of `.venv` (3.11). Some of those
releases do not exist for Python 3.10, and 3.10 needs a few backports; those pins live in the
section below OVERRIDES, each with an environment marker, and this script keeps them: a package
pinned there gets the complementary marker on its main line, so that exactly one pin applies on
every Python.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
OVERRIDES = "# Python 3.10:"


def _name(line: str) -> str:
    return re.split(r"[=<>; ]", line, maxsplit=1)[0].lower().replace("_", "-")


def main() -> int:
    old = CONSTRAINTS.read_text().splitlines()
    start = next((i for i, line in enumerate(old) if line.startswith(OVERRIDES)), len(old))
    overrides = old[start:]
    overridden = {_name(line) for line in overrides if line and not line.startswith("#")}
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    pins = []
    for line in frozen:
        if not line or line.startswith("#") or _name(line) == "tap-jobresults":
            continue
        pins.append(f'{line} ; python_version >= "3.11"' if _name(line) in overridden else line)
    CONSTRAINTS.write_text("\n".join([*pins, *overrides]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
