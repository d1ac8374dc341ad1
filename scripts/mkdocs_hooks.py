"""MkDocs hooks (mkdocs.yml `hooks:`): the README is the site's home page, and the repository files it and the
pages link to (CHANGELOG.md, LICENSE, sample_config.json) are part of the site, so that a link works the same on
GitHub and in the built site.

- The README becomes `index.md`; its links `docs/page.md` become `page.md`.
- In the pages, `../README.md` becomes `index.md` and `../CHANGELOG.md` (...) the site's copy.
- A fence's attributes after the language (```bash norun="why"), read by tests/test_docs_run.py, are dropped
  from the rendered page (Python-Markdown would not see a fence in them).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
FROM_ROOT = ("CHANGELOG.md", "LICENSE", "sample_config.json")
FENCE = re.compile(r"^(\s*```+)([\w-]+)[ \t]+[^\n`]*$", re.M)


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / "README.md")))
    for name in FROM_ROOT:
        files.append(File.generated(config, name, abs_src_path=str(ROOT / name)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "index.md":
        markdown = re.sub(r"\]\(docs/", "](", markdown)
    else:
        markdown = markdown.replace("](../README.md", "](index.md")
        for name in FROM_ROOT:
            markdown = markdown.replace(f"](../{name}", f"]({name}")
    return FENCE.sub(r"\1\2", markdown)
