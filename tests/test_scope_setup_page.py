"""The setup page authorizes each connection by its id: a user allowed one team's connections
neither lists nor opens another's bucket, prefix and external ID."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


class _Manager:
    """An auth manager that lets the user read connections of team A only (and the page)."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    def is_authorized_connection(self, *, method: str, details: Any, user: Any) -> bool:
        self.asked.append(details.conn_id if details else None)
        return method == "GET" and (details is None or details.conn_id is None or details.conn_id.startswith("team_a"))


@pytest.fixture
def page(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.api_fastapi.core_api import security
    from fastapi.testclient import TestClient

    from airflow_s3connect.plugins import setup_app

    manager = _Manager()
    monkeypatch.setattr(setup_app, "get_auth_manager", lambda: manager)
    monkeypatch.setattr(security, "get_auth_manager", lambda: manager)
    for conn_id, bucket, external in (
        ("team_a_drop", "team-a-bucket", "ext-a-0001"),
        ("team_b_drop", "team-b-bucket", "ext-b-0002"),
    ):
        body = {"conn_type": "s3connect", "extra": {"bucket": bucket, "path_prefix": "in", "auth_type": "assume_role",
                "role_arn": "arn:aws:iam::123456789012:role/r", "external_id": external}}  # fmt: skip
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
    setup_app.app.dependency_overrides[security.get_user] = lambda: object()
    client = TestClient(setup_app.app)
    yield client, manager
    setup_app.app.dependency_overrides.clear()


def test_only_readable_connections_are_listed_and_opened(page: Any) -> None:
    client, manager = page
    listed = client.get("/").text
    assert "team_a_drop" in listed
    assert "team_b_drop" not in listed
    assert "team-b-bucket" not in listed
    assert "ext-b-0002" not in listed
    opened = client.get("/", params={"conn_id": "team_b_drop"}).text
    assert "You may not read connection team_b_drop" in opened
    assert "team-b-bucket" not in opened
    assert "ext-b-0002" not in opened
    assert "team_b_drop" in manager.asked  # asked by id, not only "connections in general"
    mine = client.get("/", params={"conn_id": "team_a_drop"}).text
    assert "team-a-bucket" in mine
    assert "ext-a-0001" in mine


def test_the_page_shows_the_notification_setup_for_a_queue(page: Any) -> None:
    client, _ = page
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/team-a-events"
    shown = client.get("/", params={"conn_id": "team_a_drop", "operations": ["watch-sqs"], "queue_url": url}).text
    assert "arn:aws:sqs:eu-west-1:123456789012:team-a-events" in shown
    assert "sqs:ReceiveMessage" in shown
    assert "Bucket notification configuration" in shown
    assert "s3:ObjectCreated:*" in shown
    assert "arn:aws:s3:::team-a-bucket" in shown  # the queue policy's source bucket
    missing = client.get("/", params={"conn_id": "team_a_drop", "operations": ["watch-sqs"]}).text
    assert "watch-sqs reads one queue: give its URL" in missing
