"""The connection form in a real browser: Airflow's API server on loopback, headless Chromium.

Debian's ``chromium`` is driven by the Python ``playwright`` package (``playwright install``
cannot download browsers here). ``.ci/run`` installs chromium and sets
S3CONNECT_REQUIRE_BROWSER=1, so a missing browser fails in CI instead of skipping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.connection import FIELDS, parse_settings
from tests.support.api_server import api

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "browser"
#: The screenshots the documentation shows: taken again by every run, from the newest line's UI.
DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images" / "screenshots"

if not CHROMIUM.exists():
    if os.environ.get("S3CONNECT_REQUIRE_BROWSER"):
        raise RuntimeError(
            "S3CONNECT_REQUIRE_BROWSER is set but /usr/bin/chromium is missing: apt-get install chromium"
        )
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@contextmanager
def _browser_page(height: int) -> Iterator[Any]:
    """A page of Debian's chromium, headless; screenshots go to OUTPUT."""
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": height})
        finally:
            browser.close()


def _for_docs(page: Any, element: Any, name: str, height: int = 1500) -> None:
    """The element alone, from its top (not the page around it), where the documentation shows it."""
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    box = element.bounding_box()
    clip = {"x": box["x"], "y": box["y"], "width": box["width"], "height": min(box["height"], height)}
    page.screenshot(path=str(DOCS_IMAGES / name), clip=clip)
    assert (DOCS_IMAGES / name).stat().st_size > 10_000


@pytest.fixture(scope="module")
def oldest_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API server of the oldest supported Airflow line, from the built wheel in a clean
    environment: its UI builds the form from the hook's widget methods, not ``conn-fields``."""
    import subprocess

    from tests.support.airflow_lines import OLDEST, build, clean_env, install
    from tests.support.api_server import running_api_server

    work = tmp_path_factory.mktemp("oldest")
    bin_dir = install(OLDEST, build(work / "dist"), work / "venv")
    home = work / "home"
    home.mkdir()
    env = clean_env(home)
    subprocess.run([str(bin_dir / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    with running_api_server(home, {}, base_env=env, bin_dir=bin_dir) as url:
        yield url


@pytest.fixture(params=["installed", "oldest"])
def form_server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The UI of this session's Airflow (the newest line) and of the oldest line."""
    fixture = "api_server" if request.param == "installed" else "oldest_api_server"
    return request.param, request.getfixturevalue(fixture)


def test_connection_form_shows_every_field_and_saves_an_assume_role_connection(form_server: tuple[str, str]) -> None:
    line, api_server = form_server
    with _browser_page(height=2600) as page:
        page.goto(api_server + "/connections")
        page.get_by_role("button", name="Add Connection").click()
        page.locator("input[name=connection_id]").fill("partner_role")
        page.get_by_role("combobox").first.click()
        page.keyboard.type("s3connect")
        page.get_by_role("option", name="Amazon S3 (S3 Connect)").click()
        page.locator("input[name=login]").fill("AKIABASEEXAMPLE")
        page.locator("input[name=password]").fill("base-secret-not-shown")
        page.get_by_text("Extra Fields", exact=True).click()

        labels = {label.inner_text().replace("*", "").strip() for label in page.locator("label").all()}
        assert {"AWS Access Key ID", "AWS Secret Access Key"} <= labels
        assert {f.label for f in FIELDS} <= labels, sorted({f.label for f in FIELDS} - labels)
        required = [label.inner_text() for label in page.locator("label").all() if "*" in label.inner_text()]
        assert sorted(r.replace("*", "").strip() for r in required) == ["Connection ID", "Connection Type"]
        # Airflow 3.0's form shows a field of format "password" as plain text while it is typed
        # (the schema says password: tests/test_compat.py); later lines mask it.
        masked = page.locator("#element_aws_session_token").get_attribute("type")
        assert masked == ("password" if line == "installed" else None)

        auth = page.locator("label", has_text="Authentication").locator("xpath=../..").get_by_role("combobox")
        auth.click()
        assert [o.inner_text() for o in page.get_by_role("option").all()] == ["access_key", "assume_role"]
        page.get_by_role("option", name="assume_role").click()
        page.locator("#element_role_arn").fill("arn:aws:iam::210987654321:role/partner-writer")
        page.locator("#element_external_id").fill("acme-7f3a9c")
        page.locator("#element_bucket").fill("partner-dropbox")
        page.locator("#element_path_prefix").fill("deliveries/{tenant}")
        page.screenshot(path=str(OUTPUT / f"s3connect-connection-form-{line}.png"), full_page=True)
        if line == "installed":
            page.locator("input[name=connection_id]").scroll_into_view_if_needed()
            _for_docs(page, page.get_by_role("dialog").first, "connection-form.png")
        page.get_by_role("button", name="Save").click()
        page.get_by_text("partner_role").first.wait_for(timeout=15_000)
        page.screenshot(path=str(OUTPUT / f"s3connect-connection-saved-{line}.png"), full_page=True)

    saved = api(api_server, "/api/v2/connections/partner_role")
    assert saved["conn_type"] == "s3connect"
    assert saved["login"] == "AKIABASEEXAMPLE"
    assert saved["password"] == "***"  # the API never returns the secret
    extra = json.loads(saved["extra"])
    settings = parse_settings("partner_role", saved["login"], "base-secret-not-shown", extra)
    assert settings.auth_type.value == "assume_role"
    assert settings.role_arn == "arn:aws:iam::210987654321:role/partner-writer"
    assert settings.external_id == "acme-7f3a9c"
    assert settings.bucket == "partner-dropbox"
    assert settings.path_prefix == "deliveries/{tenant}"
    assert settings.session_duration == 3600  # the form's default
    assert (OUTPUT / f"s3connect-connection-form-{line}.png").stat().st_size > 10_000


def test_setup_page_in_the_ui_gives_external_id_and_both_policies(api_server: str) -> None:
    """The plugin's page, reached from the Admin menu, for an assume_role connection."""
    extra = {
        "auth_type": "assume_role",
        "role_arn": "arn:aws:iam::210987654321:role/acme-delivery",
        "external_id": "acme-ext-42",
        "bucket": "acme-dropbox",
        "path_prefix": "deliveries/{tenant}",
    }
    api(api_server, "/api/v2/connections", {"connection_id": "setup_acme", "conn_type": "s3connect",
                                                   "login": "AKIABASE", "password": "s3cr3t-not-shown",
                                                   "extra": json.dumps(extra)})  # fmt: skip
    with _browser_page(height=1800) as page:
        page.goto(api_server + "/")
        page.get_by_role("button", name="Admin").click()
        page.get_by_role("menuitem", name="S3 Connect setup").click()
        page.wait_for_url("**/plugin/s3connect-setup", timeout=60_000)  # the UI is slow on a loaded machine
        frame = page.frame_locator("iframe")
        frame.locator("#conn_id").fill("setup_acme")
        frame.locator("#principal").fill("arn:aws:iam::111122223333:role/airflow-worker")
        frame.get_by_role("button", name="Show").click()
        # The page opened on another connection: wait for this one's answer, not any policy.
        frame.locator("code", has_text="acme-dropbox").wait_for(timeout=15_000)
        external_id = frame.locator("#external-id").inner_text()
        trust = json.loads(frame.locator("#trust-policy").inner_text())
        policy = json.loads(frame.locator("#policy").inner_text())
        page.screenshot(path=str(OUTPUT / "s3connect-setup-page.png"), full_page=True)
        _for_docs(page, page.locator("iframe"), "setup-page.png")
        content = frame.locator("body").inner_text()

    assert external_id == "acme-ext-42"
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"AWS": "arn:aws:iam::111122223333:role/airflow-worker"}
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": "acme-ext-42"}}
    listing, objects = policy["Statement"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["deliveries/*/*"]}}
    assert objects["Resource"] == "arn:aws:s3:::acme-dropbox/deliveries/*/*"
    assert objects["Action"] == ["s3:GetObject", "s3:PutObject"]  # delete only when ticked
    assert "s3cr3t-not-shown" not in content
    assert "AKIABASE" not in content
