"""Rewrite the README's settings table from `tap-jobresults --about --format=markdown` (`make readme-settings`).

The table in the README is exactly what the tap prints, so it cannot drift from the code;
tests/test_plugin_definition.py fails until this has been run after a settings change, and until
meltano.yml declares the same settings.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TABLE = re.compile(r"^\| Setting .*?(?=\n\n|\Z)", re.S | re.M)


def about_table() -> str:
    tap = shutil.which("tap-jobresults", path=str(Path(sys.executable).parent)) or "tap-jobresults"
    about = subprocess.run([tap, "--about", "--format", "markdown"], check=True, capture_output=True, text=True)
    found = TABLE.search(about.stdout)
    if not found:
        raise SystemExit("no settings table in `tap-jobresults --about --format markdown`")
    return found.group(0).strip()


def main() -> int:
    readme = README.read_text()
    if not TABLE.search(readme):
        raise SystemExit("no settings table (a line starting with '| Setting ') in README.md")
    table = about_table()
    updated = TABLE.sub(lambda _: table, readme, count=1)
    if updated != readme:
        README.write_text(updated)
        print("README.md: settings table updated")
    else:
        print("README.md: settings table already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
