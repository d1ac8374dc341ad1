"""The README's demo command: fake APIs -> tap -> target-duckdb, one line per stream."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import CONTRACT_KEYS, ROOT

pytestmark = pytest.mark.slow
LOADER = ROOT / ".venv-target-duckdb" / "bin"


def test_demo_loads_rows_for_all_ten_streams():
    if not (LOADER / "target-duckdb").exists():
        pytest.fail("run `make test` or `make demo`: they install target-duckdb into .venv-target-duckdb")
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{LOADER}:{os.environ['PATH']}"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    proc = subprocess.run([sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+) rows$", proc.stdout, re.M))
    assert set(counts) == set(CONTRACT_KEYS)
    assert all(int(n) > 0 for n in counts.values()), counts
