"""Installs as users install it: the built wheel into a clean virtual environment with only
Airflow, for the oldest and the newest supported Airflow lines, the oldest at the floors of
our own dependencies (boto3/botocore/s3transfer, common-compat).

Airflow's published constraint files cannot be reached from these machines, only the
package registries: what a plain resolution breaks is pinned here, as measured, and the
README says so. Each environment must list the provider, offer the form's fields, import
every public module, and run a DAG that puts, senses, lists and gets against the embedded S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_s3connect.connection import FIELDS
from tests.support.moto_server import MotoServer

ROOT = Path(__file__).resolve().parent.parent
UV = str(Path(sys.executable).parent / "uv")

#: Airflow line → what must be pinned beside it, measured: a plain resolution of 3.2.2 takes
#: fastapi, cadwyn and svcs versions with which no task runs ("svcs_registry", pydantic
#: discriminator errors): those are the versions its own constraints hold. The 3.2 line also
#: holds our dependencies at their lowest declared versions (the floor environment). 3.0.6
#: gets the FAB provider: that line's UI builds a provider's form fields only where
#: WTForms and Flask-AppBuilder are importable, as they are in its usual deployments.
LINES: dict[str, list[str]] = {
    "3.0.6": ["apache-airflow-providers-fab", "fastapi==0.116.1", "cadwyn==5.4.6"],
    "3.1.8": [],
    "3.2.2": [
        "svcs==25.1.0", "cadwyn==7.0.0", "fastapi==0.136.3",
        "boto3==1.36.0", "botocore==1.36.0", "s3transfer==0.11.0", "apache-airflow-providers-common-compat==1.22.0",
        "pendulum==3.1.0", "pyarrow==15.0.0",
    ],
    "3.3.2": [],
}  # fmt: skip

DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import (
    S3CopyObjectsOperator, S3DeleteObjectsOperator, S3GetObjectOperator, S3ListObjectsOperator, S3PutObjectOperator,
)
from airflow_s3connect.sensors import S3ObjectSensor

with DAG("s3c_compat", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")):
    put = S3PutObjectOperator(task_id="put", data="hello {{ ds }}", key="compat/{run_id}.txt", overwrite=False)
    table = S3PutObjectOperator(
        task_id="parquet", records=[{"n": 1, "s": "a"}], format="parquet", key="compat/t.parquet"
    )
    sensed = S3ObjectSensor(task_id="sense", prefix="compat/", poke_interval=1, timeout=60, deferrable=True)
    listed = S3ListObjectsOperator(task_id="list", prefix="compat/")
    copied = S3CopyObjectsOperator(task_id="copy", source_key="compat/t.parquet", target_key="copies/t.parquet")
    got = S3GetObjectOperator(task_id="get", prefix="compat/", local_dir="OUT", after="delete")
    dropped = S3DeleteObjectsOperator(task_id="delete", key="copies/t.parquet")
    [put, table] >> sensed >> listed >> copied >> got >> dropped
"""

#: In each environment: every public module imports, and the form offers every field on
#: that line's own path (``conn-fields`` from 3.2, the hook's widget methods before).
CHECKS = """
import json, logging
logging.disable(logging.WARNING)
import airflow_s3connect.cli, airflow_s3connect.hooks.s3connect, airflow_s3connect.links
import airflow_s3connect.plugins.setup_page, airflow_s3connect.sensors, airflow_s3connect.triggers
import airflow_s3connect.hooks.fs, airflow_s3connect.hooks.task_logs, airflow_s3connect.copies
import airflow_s3connect.plugins.setup_app, airflow_s3connect.triggers.restore
assert airflow_s3connect.__file__.startswith(VENV), airflow_s3connect.__file__  # the wheel's, not the checkout's
from airflow_s3connect.operators import *
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
(meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "s3connect"]
fields = {name: value["schema"] for name, value in (meta.extra_fields or {}).items()}
print("RESULT", json.dumps({"fields": fields, "login": meta.standard_fields.login.title}))
"""

#: The event watcher on that line's trigger machinery (no asset state before 3.3): a
#: first poll announces what is there (start="all"), in one event.
WATCH = """
import asyncio, json
from airflow_s3connect.triggers import S3ObjectEventTrigger
trigger = S3ObjectEventTrigger(prefix="watched/", start="all", batch=True, poll_interval=1)
async def first():
    async for event in trigger.run():
        return event.payload
print("RESULT", json.dumps(asyncio.run(asyncio.wait_for(first(), 60))))
"""


def _excerpt(output: str) -> str:
    """The lines of a failed command that say what failed, then its end."""
    said = [line for line in output.splitlines() if any(w in line for w in ("ERROR", "Error", "Traceback"))]
    return "\n".join(said[:60]) + "\n...\n" + output[-3000:]


def result(output: str) -> Any:
    """What a script run in an environment printed after ``RESULT`` (its logs aside)."""
    (line,) = [line for line in output.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built as a release builds them."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([UV, "build", "-o", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (built,) = dist.glob("airflow_s3connect-*.whl")
    return built


def test_artifacts_carry_the_licence_and_a_user_facing_description(dist: Path, wheel: Path) -> None:
    (sdist,) = dist.glob("airflow_s3connect-*.tar.gz")
    with tarfile.open(sdist) as archive:
        assert {"LICENSE", "CHANGELOG.md", "README.md"} <= {name.split("/", 1)[-1] for name in archive.getnames()}
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
        (metadata,) = (archive.read(name).decode() for name in names if name.endswith(".dist-info/METADATA"))
    headers, _, description = metadata.partition("\n\n")
    assert "License-Expression: Apache-2.0" in headers
    assert "Project-URL: Homepage, https://pypi.org/project/airflow-s3connect/" in headers
    assert [line for line in headers.splitlines() if line.startswith("Provides-Extra")] == ["Provides-Extra: parquet"]
    first_screen = description[:2500]
    assert "pip install" in first_screen
    assert first_screen.index("pip install") < first_screen.index("make test")


@pytest.mark.parametrize("line", list(LINES))
def test_the_wheel_works_on_each_supported_airflow_line(
    line: str, wheel: Path, moto: MotoServer, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "-p", sys.executable, str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [UV, "pip", "install", "-q", "--python", python, f"apache-airflow=={line}", f"{wheel}[parquet]", *LINES[line]],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    moto.admin_client("s3").create_bucket(
        Bucket="compat", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "compat.py").write_text(DAG.replace("OUT", str(tmp_path / "out")))
    connection = {"conn_type": "s3connect", "login": "AKIAEXAMPLE", "password": "secret",
                  "extra": {"endpoint_url": moto.url, "region_name": "eu-west-1", "bucket": "compat"}}  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))},
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_S3CONNECT_DEFAULT": json.dumps(connection),
    }
    airflow = str(venv / "bin" / "airflow")

    def run(*command: str) -> str:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, _excerpt(done.stdout + done.stderr)
        return done.stdout + done.stderr

    assert "airflow-s3connect" in run(airflow, "providers", "list")
    checks = result(run(python, "-c", CHECKS.replace("VENV", repr(str(venv)))))
    assert sorted(checks["fields"]) == sorted(f.name for f in FIELDS)
    assert checks["fields"]["auth_type"]["enum"] == ["access_key", "assume_role"]
    assert checks["fields"]["aws_session_token"]["format"] == "password"
    assert checks["login"] == "AWS Access Key ID"
    run(airflow, "db", "migrate")
    output = run(airflow, "dags", "test", "s3c_compat", "2025-01-02")
    assert "state=success" in output, output[-4000:]
    assert [p.read_text() for p in (tmp_path / "out").glob("*.txt")] == ["hello 2025-01-02"]
    assert pq.read_table(tmp_path / "out" / "t.parquet").to_pylist() == [{"n": 1, "s": "a"}]
    admin = moto.admin_client("s3")
    assert admin.list_objects_v2(Bucket="compat").get("KeyCount") == 0  # got, then deleted; the copy deleted
    admin.put_object(Bucket="compat", Key="watched/a.csv", Body=b"a")
    event = result(run(python, "-c", WATCH))
    assert [o["key"] for o in event["objects"]] == ["watched/a.csv"]
