"""Shared fixtures: moto servers over loopback HTTP, IAM factories, Airflow home, connections.

Airflow reads its configuration at import time, so the environment below is set before
any test module imports it. Each session gets its own AIRFLOW_HOME and SQLite file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="s3connect-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # OpenLineage events of every DAG run go to a file that tests read back.
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(_HOME / "openlineage.jsonl"), "append": True}
        ),
        # The worker's default AWS chain must be empty unless a test fills it.
        "AWS_CONFIG_FILE": str(_HOME / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(_HOME / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _name in (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
):
    os.environ.pop(_name, None)

from tests.support.moto_server import IamFactory, MotoServer  # noqa: E402
from tests.support.stores import STORES, store_for  # noqa: E402

REGION = "eu-west-1"
BUCKET = "s3connect-test"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def moto_plain() -> Iterator[MotoServer]:
    """A moto server that accepts any credentials (behaviour tests)."""
    server = MotoServer.start(_HOME / "moto-plain")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_iam() -> Iterator[MotoServer]:
    """A second moto server on which tests switch IAM enforcement on (permission tests)."""
    server = MotoServer.start(_HOME / "moto-iam")
    yield server
    server.stop()


@pytest.fixture
def moto(moto_plain: MotoServer) -> MotoServer:
    """The plain server, emptied, with the test bucket created."""
    moto_plain.reset()
    moto_plain.admin_client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return moto_plain


@pytest.fixture
def client(moto: MotoServer) -> Any:
    """Our client for the emptied moto server (engine tests)."""
    from tests.support.stores import make_client

    return make_client(moto)


@pytest.fixture
def iam(moto_iam: MotoServer) -> Iterator[IamFactory]:
    """Users, roles and policies on the IAM server; call ``iam.enforce()`` once set up."""
    moto_iam.reset()
    factory = IamFactory(moto_iam, REGION)
    factory.bucket(BUCKET)
    yield factory
    moto_iam.set_auth(enforced=False)


@pytest.fixture
def make_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define a connection through ``AIRFLOW_CONN_<ID>`` (JSON), as a deployment would."""

    def make(
        conn_id: str = "s3connect_default",
        login: str | None = None,
        password: str | None = None,
        **extra: Any,
    ) -> str:
        from tests.support.stores import ENGINE

        body: dict[str, Any] = {"conn_type": "s3connect", "extra": {**ENGINE, **extra}}
        if login is not None:
            body["login"] = login
        if password is not None:
            body["password"] = password
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))
        return conn_id

    return make


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata database (SQLite in the session's AIRFLOW_HOME), migrated once."""
    import subprocess
    import sys

    airflow_bin = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow_bin, "db", "migrate"], check=True, capture_output=True, timeout=300)
    return _HOME


#: A connection only the API server's environment defines (the setup page must find it).
ENV_ONLY_CONNECTION = {
    "conn_type": "s3connect",
    "extra": {"bucket": "env-dropbox", "path_prefix": "exports/{tenant}/{date}", "tenant": "acme"},
}


@pytest.fixture(scope="session")
def api_server(airflow_db: Path) -> Iterator[str]:
    """Airflow's API server on loopback (the Test button's route, the setup page, the UI)."""
    from tests.support.api_server import running_api_server

    env = {"AIRFLOW_CONN_ENV_PARTNER": json.dumps(ENV_ONLY_CONNECTION)}
    with running_api_server(airflow_db, env) as url:
        yield url


@pytest.fixture(scope="session")
def rgw() -> Iterator[Any]:
    """Ceph's RADOS Gateway (HTTP and HTTPS) from Debian's packages, for the whole session."""
    from tests.support.rgw_server import RgwServer

    server = RgwServer.start(_HOME / "rgw")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def swift() -> Iterator[Any]:
    """OpenStack Swift's S3 API from Debian's packages, for the whole session."""
    from tests.support.swift_server import SwiftServer

    server = SwiftServer.start(_HOME / "swift")
    yield server
    server.stop()


def running_store(request: pytest.FixtureRequest, name: str, moto_plain: MotoServer) -> Any:
    """The :class:`~tests.support.stores.Store` called ``name``, its server started once."""
    rgw = request.getfixturevalue("rgw") if name.startswith("rgw") else None
    swift = request.getfixturevalue("swift") if name == "swift" else None
    return store_for(name, moto_plain, rgw, swift)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, moto_plain: MotoServer) -> Any:
    """Each behaviour test once per S3 server: moto, RGW over HTTP and HTTPS, Swift."""
    return running_store(request, request.param, moto_plain)


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[Any]:
    """The fault proxy in front of the (emptied) moto server; schedule faults on it."""
    from tests.support.fault_proxy import FaultProxy

    running = FaultProxy(moto.url).start()
    yield running
    running.stop()
