"""Snowflake-ready types: the tap's schemas through target-snowflake's own type mapping.

The column type the loader would create for every property of the catalog, without loading anything (cheap, and
covering properties the fake APIs' data leaves null). tests/test_snowflake_load.py loads for real into a local
emulator and checks the created tables. The loader runs in its own virtualenv (.venv-target-snowflake), as Meltano
installs it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_tap

pytestmark = pytest.mark.slow
LOADER_PYTHON = ROOT / ".venv-target-snowflake" / "bin" / "python"
CONFIG = {
    "cognite": {"base_url": "http://127.0.0.1:9", "project": "p", "token": "t-abcdef"},
    "clavata": {"base_url": "http://127.0.0.1:9", "api_key": "k-abcdef"},
    "talonic": {"base_url": "http://127.0.0.1:9", "api_key": "k-abcdef"},
}


def test_every_column_gets_a_sensible_snowflake_type():
    if not LOADER_PYTHON.exists():
        pytest.fail("run `make test`: it installs target-snowflake into .venv-target-snowflake")
    discovered = run_tap(CONFIG, args=["--discover"])
    assert discovered.returncode == 0, discovered.stderr[-2000:]
    catalog = json.loads(discovered.stdout)
    mapped = json.loads(
        subprocess.run(
            [str(LOADER_PYTHON), str(Path(__file__).parent / "tools" / "snowflake_types.py")],
            input=discovered.stdout,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert len(mapped) > 90
    for entry in catalog["streams"]:
        for name, prop in entry["schema"]["properties"].items():
            sql = mapped[f"{entry['stream']}.{name}"]
            types = set(prop["type"]) - {"null"} if isinstance(prop["type"], list) else {prop["type"]}
            where = f"{entry['stream']}.{name}: {sql}"
            if types & {"object", "array"}:
                assert sql == "VARIANT", where
            elif prop.get("format") == "date-time":
                assert sql.startswith("TIMESTAMP_"), where
            elif types == {"integer"}:
                assert sql in ("DECIMAL", "NUMBER") or sql.startswith("NUMBER"), where
            elif types == {"number"}:
                assert sql in ("FLOAT", "DOUBLE"), where
            elif types == {"boolean"}:
                assert sql == "BOOLEAN", where
            else:
                assert types == {"string"} and sql.startswith("VARCHAR"), where
