"""The README and docs/ as a newcomer meets them: short, every link working, every shell block run or saying why
not, and the fake APIs that the recipes run against (`make fake-api`) on the ports and with the files the docs name.

The blocks themselves are run by tests/test_docs_run.py (slow); the site is built by `make docs` (mkdocs --strict).
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import typing as t
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from tests.conftest import ROOT, run_tap, tap_env

README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The pages in the order of the site's nav (and of tests/test_docs_run.py): mkdocs.yml's nav, README first.
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "cron"}
FENCE = re.compile(r"^(?P<fence>```+)(?P<info>[^\n`]*)\n(?P<code>.*?)^(?P=fence)[ \t]*$", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")


class Block(t.NamedTuple):
    page: str  # relative to ROOT
    line: int
    language: str
    attrs: dict[str, str]
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """The README, then the pages of mkdocs.yml's nav."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = [DOCS / next(iter(entry.values())) for entry in nav]
    return [README, *[p for p in listed if p.parent == DOCS and p.name != "index.md" and p.exists()]]


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        info = match["info"].strip()
        language, _, rest = info.partition(" ")
        attrs = dict(item.split("=", 1) for item in shlex.split(rest)) if rest.strip() else {}
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(str(path.relative_to(ROOT)), line, language, attrs, match["code"]))
    return found


def shell_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.language in SHELL_LANGUAGES]


def slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs makes), which is GitHub's for these headings."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def test_the_readme_is_read_in_five_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the details to docs/"
    for needed in ("make demo", "make test", "make check", "make fake-api", "meltano run", "| Setting "):
        assert needed in README.read_text(), f"the README lost `{needed}`"


def test_every_page_of_docs_is_in_the_site():
    in_nav = {p.name for p in pages()[1:]}
    on_disk = {p.name for p in DOCS.glob("*.md")}
    assert on_disk - in_nav == set(), "pages missing from mkdocs.yml's nav"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path):
    broken = []
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https://, mailto:
        file_part, _, anchor = unquote(target).partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shell_block_is_run_or_says_why_not(path: Path):
    problems = []
    for block in blocks(path):
        if not block.language:
            problems.append(f"{block.where}: a fenced block without a language (```bash, ```text, ```json, ...)")
        if block.language not in SHELL_LANGUAGES:
            continue
        if "norun" in block.attrs and not block.attrs["norun"].strip():
            problems.append(f'{block.where}: norun needs its reason: ```bash norun="needs real credentials"')
        unknown = set(block.attrs) - {"norun", "run"}
        if unknown or block.attrs.get("run", "background") != "background":
            problems.append(f"{block.where}: unknown fence attributes {block.attrs} (norun=..., run=background)")
    assert not problems, "\n".join(problems)


def test_the_docs_are_in_the_run_order_of_test_docs_run():
    """Every markdown page with a shell block is a page of the site: test_docs_run.py runs exactly those."""
    with_shell = {p for p in markdown_files() if shell_blocks(p)}
    assert with_shell <= set(pages()), with_shell - set(pages())


# -- make fake-api ---------------------------------------------------------------------------------------------


def _free_port_block(count: int = 4) -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65536:
            continue
        try:
            socks = []
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no 4 free ports in a row")


def serve(out_dir: Path, port: int) -> subprocess.Popen:
    """`python -m tests.fakeapi serve` as `make fake-api` runs it; returns once its files are written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "serve", "--port", str(port), "--out-dir", str(out_dir)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (out_dir / "meltano.env").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the fake APIs did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    return err


def _env_file(path: Path) -> dict[str, str]:
    """What `set -a; . file; set +a` exports."""
    out = subprocess.run(
        ["bash", "-c", f"set -a; . {shlex.quote(str(path))}; set +a; env -0"],
        capture_output=True,
        check=True,
        env={},
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item and "TAP_JOBRESULTS" in item)


def test_make_fake_api_serves_on_the_ports_given_and_writes_the_settings_the_docs_name(tmp_path):
    port = _free_port_block()
    proc = serve(tmp_path, port)
    try:
        config = json.loads((tmp_path / "config.json").read_text())
        assert config["talonic"]["base_url"] == f"http://127.0.0.1:{port + 3}"
        assert config["clavata"]["base_url"] == f"http://127.0.0.1:{port + 2}"
        assert config["cognite"]["base_url"] == f"http://127.0.0.1:{port + 1}"
        assert config["cognite"]["token_url"].startswith(f"http://127.0.0.1:{port}/")
        # tap.env is the bare tap's `--config ENV`: one JSON object per source, the same settings.
        tap_vars = _env_file(tmp_path / "tap.env")
        assert {k: json.loads(v) for k, v in tap_vars.items()} == {
            f"TAP_JOBRESULTS_{source.upper()}": settings for source, settings in config.items()
        }
        # meltano.env: Meltano's names, one per setting (dots as underscores).
        meltano_env = _env_file(tmp_path / "meltano.env")
        assert meltano_env["TAP_JOBRESULTS_TALONIC_API_KEY"] == config["talonic"]["api_key"]
        assert meltano_env["TAP_JOBRESULTS_TALONIC_BASE_URL"] == config["talonic"]["base_url"]
        assert (
            json.loads(meltano_env["TAP_JOBRESULTS_COGNITE_ENTITY_MATCHING_JOBS"])
            == (config["cognite"]["entity_matching_jobs"])
        )
        # The bare tap reads tap.env as the docs say and syncs what config.json syncs.
        from_file = run_tap(config, check=True)
        from_env = subprocess.run(
            [str(Path(sys.executable).parent / "tap-jobresults"), "--config", "ENV"],
            env={**tap_env(), **tap_vars},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert from_env.returncode == 0, from_env.stderr[-3000:]
        records = [json.loads(line) for line in from_env.stdout.splitlines() if '"RECORD"' in line]
        assert len(records) == sum(from_file.counts().values()) + len(from_file.records("sync_runs"))
        # A second instance on the same ports says what is wrong and how to pick others.
        second = subprocess.run(
            [sys.executable, "-m", "tests.fakeapi", "serve", "--port", str(port), "--out-dir", str(tmp_path / "2")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1 and "FAKE_API_PORT" in second.stderr, second.stderr
    finally:
        printed = stop(proc)
    assert str(tmp_path / "config.json") in printed and str(tmp_path / "meltano.env") in printed
    assert f"127.0.0.1:{port + 3}" in printed


def test_the_fake_apis_serve_the_same_jobs_at_every_start(tmp_path):
    """The demo shows the same rows at every run: the same seed, the same job IDs and values."""
    runs = []
    for n in (1, 2):
        proc = serve(tmp_path / str(n), _free_port_block())
        try:
            config = json.loads((tmp_path / str(n) / "config.json").read_text())
            run = run_tap(config, check=True)
            runs.append(
                {
                    stream: sorted(json.dumps(r, sort_keys=True) for r in run.records(stream))
                    for stream in ("extraction_rows", "clavata_reports", "match_results", "pipeline_matches")
                }
            )
        finally:
            stop(proc)
    assert runs[0] == runs[1]
