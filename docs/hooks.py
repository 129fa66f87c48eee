"""MkDocs hook: pages that are files of the repository's root (the changelog, the benchmark
tables, what the tests verify) are included, not copied, so that each stays one file.

A line ``--8<-- "NAME.md"`` is replaced by that file; its links into ``docs/`` (the charts
BENCHMARKS.md shows) are made relative to the docs again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r'^--8<-- "([A-Z]+\.md)"$', re.MULTILINE)


def on_page_markdown(markdown: str, **_: Any) -> str:
    def included(match: re.Match[str]) -> str:
        return (ROOT / match.group(1)).read_text(encoding="utf-8").replace("](docs/", "](")

    return INCLUDE.sub(included, markdown)
