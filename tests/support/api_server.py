"""Airflow's API server on loopback, on the session's metadata database, and a REST helper.

Started by the ``api_server`` fixture (conftest) for the tests that need the real server:
the Test button's route, the setup page, the browser tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.moto_server import free_port


@contextmanager
def running_api_server(
    home: Path, env: dict[str, str], base_env: dict[str, str] | None = None, bin_dir: Path | None = None
) -> Iterator[str]:
    """``airflow api-server`` on a free loopback port; every user is an admin. By default the
    session's own Airflow; ``bin_dir`` and ``base_env`` run another line's (its environment)."""
    port = free_port()
    env = dict(os.environ if base_env is None else base_env, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="true",
               **env)  # fmt: skip
    log = open(home / f"api-server-{port}.log", "wb")  # noqa: SIM115 - lives as long as the server
    airflow = str((bin_dir or Path(sys.executable).parent) / "airflow")
    process = subprocess.Popen(
        [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/api/v2/version", timeout=5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the API server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def request(url: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    """Call the server as the (all-admins) simple auth manager's user; POST when ``body``."""
    with urllib.request.urlopen(url + "/auth/token", timeout=10) as response:
        token = json.load(response)["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(url + path, data=data, headers=headers, method="POST" if body else "GET")
    with urllib.request.urlopen(call, timeout=timeout) as response:
        return response.status, bytes(response.read())


def api(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A REST call's JSON answer."""
    return json.loads(request(url, path, body)[1])
