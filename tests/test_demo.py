"""The README's demo commands: fake APIs -> tap -> target-duckdb / target-postgres, one line per stream, then
dbt over what landed and the first rows of the review models."""

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
LOADER_VENVS = {"duckdb": ".venv-target-duckdb", "postgres": ".venv-target-postgres"}
REVIEW_MODELS = {
    "review_low_score_matches",
    "review_ambiguous_matches",
    "review_policy_outcomes",
    "review_flagged_extraction_fields",
    "review_running_jobs",
    "review_failed_jobs",
}


@pytest.mark.parametrize("loader", sorted(LOADER_VENVS))
def test_demo_lands_every_record_of_all_ten_streams(loader):
    bin_dir = ROOT / LOADER_VENVS[loader] / "bin"
    if not (bin_dir / f"target-{loader}").exists():
        pytest.fail(f"run `make test`: it installs target-{loader} into {LOADER_VENVS[loader]}")
    with FakeAPIs() as apis:  # what the tap emits for the demo scenario
        emitted = run_tap(demo(apis), check=True).counts()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py", "--loader", loader],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    landed = {stream: int(n) for stream, n in re.findall(r"^(\w+)\s+(\d+) rows$", proc.stdout, re.M)}
    assert set(landed) == set(CONTRACT_KEYS)
    assert landed == emitted
    # It ends with dbt's build over what landed and the first rows of each review model.
    assert re.search(r"^Done\. PASS=\d+ WARN=0 ERROR=0 ", proc.stdout, re.M), proc.stdout[-3000:]
    shown = dict(re.findall(r"^== (review_\w+): (\d+) in all", proc.stdout, re.M))
    assert set(shown) == REVIEW_MODELS, proc.stdout[-3000:]
    # The demo has a failed and a running job of each of the four kinds.
    assert int(shown["review_failed_jobs"]) >= 4 and int(shown["review_running_jobs"]) >= 4
