"""Rewrite the README settings table from `tap-jobresults --about --format markdown` (run after changing settings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAP = Path(sys.executable).parent / "tap-jobresults"

about = subprocess.run([str(TAP), "--about", "--format", "markdown"], capture_output=True, text=True, check=True).stdout
table = re.search(r"^\| Setting .*?(?=\n\n|\Z)", about, re.S | re.M)
assert table, about[:500]
readme = (ROOT / "README.md").read_text()
old = re.search(r"^\| Setting .*?(?=\n\n|\Z)", readme, re.S | re.M)
assert old, "README has no settings table"
(ROOT / "README.md").write_text(readme[: old.start()] + table.group(0).strip() + readme[old.end() :])
print("README settings table updated")
