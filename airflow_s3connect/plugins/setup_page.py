"""The ``s3connect`` setup page as an Airflow 3 plugin: a FastAPI app mounted in the API
server at ``/s3connect/``, linked from the UI's Admin menu.

Airflow loads plugins in every process, task processes included, and the app's imports
(Airflow's API security module, FastAPI) cost about 1.5 s. So the app is built only when
a process asks for ``fastapi_apps``: the API server does, a task never does.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/s3connect"


class S3ConnectSetupPlugin(AirflowPlugin):
    """Registers the page (API server) and its link in the Admin menu (UI)."""

    name = "s3connect_setup"
    external_views = [
        {
            "name": "S3 Connect setup",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "admin",
            "url_route": "s3connect-setup",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from airflow_s3connect.plugins.setup_app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "S3 Connect setup"}]
