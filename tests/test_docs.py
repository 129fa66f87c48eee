"""The documentation site: it builds with warnings as errors, every internal link and anchor of
the built site resolves, and every Python example on its pages runs.

Examples run page by page (the blocks of one page share a namespace, in order), in an empty
working directory, against moto's S3 on loopback with the connections the pages name:
``s3connect_default`` (bucket ``my-bucket``), ``s3connect_team`` (the same bucket below
``team/``) and the amazon provider's ``aws_default``, for the migration page's "before".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import REGION
from tests.support.moto_server import MotoServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = sorted(p.name for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert "WARNING" not in built.stderr, built.stderr[-3000:]
    return target


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)
            if name == "id" and value:
                self.ids.add(value)


def _parsed(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_the_site_builds_and_every_internal_link_and_anchor_resolves(site: Path) -> None:
    # (404.html is served from any depth, so its links are absolute: not checked here)
    pages = {page.resolve(): _parsed(page) for page in site.rglob("*.html") if page.name != "404.html"}
    assert len(pages) > 20
    broken: list[str] = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith(("//", "mailto:", "data:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page}: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parsed(target).ids
                if parts.fragment not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert broken == []
    # The pages a user looks for, each reached from the navigation.
    index = (site / "index.html").read_text()
    for page in ("connection", "security", "operators", "events", "hook", "storage", "observability", "stores",
                 "reliability", "performance", "benchmarks", "migration", "reference", "changelog"):  # fmt: skip
        assert f'href="{page}/"' in index, page
    reference = (site / "reference" / "index.html").read_text()
    assert "S3PutObjectOperator" in reference
    assert "overwrite" in reference  # parameters from the docstrings


@pytest.fixture
def example_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    admin = moto.admin_client("s3")
    admin.create_bucket(Bucket="my-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    common = {"endpoint_url": moto.url, "region_name": REGION, "bucket": "my-bucket"}
    connections = {
        "s3connect_default": {"conn_type": "s3connect", "login": "AKIAEXAMPLE", "password": "secret", "extra": common},
        "s3connect_team": {"conn_type": "s3connect", "login": "AKIAEXAMPLE", "password": "secret",
                           "extra": {**common, "path_prefix": "team/"}},
        "aws_default": {"conn_type": "aws", "login": "AKIAEXAMPLE", "password": "secret",
                        "extra": {"endpoint_url": moto.url, "region_name": REGION}},
    }  # fmt: skip
    for conn_id, body in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PAGES)
def test_every_python_example_on_the_page_runs(page: str, example_env: Path, airflow_db: Path) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_{page.removesuffix('.md')}"}
    blocks = BLOCK.findall((DOCS / page).read_text())
    for number, source in enumerate(blocks, 1):
        try:
            exec(compile(source, f"docs/{page} (example {number})", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"docs/{page}, example {number} of {len(blocks)} fails: {exc!r}\n{source}")
