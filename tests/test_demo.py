"""The README's demo command: fake APIs -> tap -> target-duckdb, one line per stream."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import CONTRACT_KEYS, ROOT, run_tap
from tests.fakeapi import FakeAPIs
from tests.fakeapi.__main__ import demo

pytestmark = pytest.mark.slow
LOADER = ROOT / ".venv-target-duckdb" / "bin"


def test_demo_lands_every_record_of_all_ten_streams():
    if not (LOADER / "target-duckdb").exists():
        pytest.fail("run `make test` or `make demo`: they install target-duckdb into .venv-target-duckdb")
    with FakeAPIs() as apis:  # what the tap emits for the demo scenario
        emitted = run_tap(demo(apis), check=True).counts()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{LOADER}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    landed = {stream: int(n) for stream, n in re.findall(r"^(\w+)\s+(\d+) rows$", proc.stdout, re.M)}
    assert set(landed) == set(CONTRACT_KEYS)
    assert landed == emitted
