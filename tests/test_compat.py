"""Installs as users install it: the built wheel into a clean virtual environment with only
Airflow, for every Airflow 3 line (3.2 at the floors of our own dependencies:
boto3/botocore/s3transfer, common-compat).

What a plain resolution breaks is pinned per line (:mod:`tests.support.airflow_lines`), as
measured, and the README says so. Each environment must list the provider, offer the form's
fields as that line's UI gets them, import every public module, run a DAG that puts,
senses (deferred), lists, copies, gets and deletes against the embedded S3, and run the
event watcher.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_s3connect.connection import FIELDS
from demo import run as demo
from tests.support.airflow_lines import LINES, ROOT, build, clean_env, install
from tests.support.moto_server import MotoServer

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
import airflow_s3connect.plugins.setup_app, airflow_s3connect.triggers.restore, airflow_s3connect.bundles
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


#: Remote task logs on that line's logging set-up (the documented configuration): Airflow
#: picks our RemoteLogIO, which writes a try's log and reads it back.
LOGS = """
import json, pathlib
import airflow.logging_config as config
config.configure_logging()
getter = vars(config).get("get_remote_task_log")  # 3.3; before, the module's attribute
io = getter() if getter else config.REMOTE_TASK_LOG
local = pathlib.Path(io.base_log_folder) / "dag_id=d/attempt=1.log"
local.parent.mkdir(parents=True, exist_ok=True)
local.write_text("a task's log\\n")
io.upload(local, None)
sources, texts = io.read("dag_id=d/attempt=1.log", None)
print("RESULT", json.dumps({"type": type(io).__name__, "sources": sources, "texts": texts}))
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
    build(out)
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
    assert [line for line in headers.splitlines() if line.startswith("Provides-Extra")] == [
        "Provides-Extra: fast",
        "Provides-Extra: parquet",
    ]
    first_screen = description[:2500]
    assert "pip install" in first_screen
    assert first_screen.index("pip install") < first_screen.index("make test")


def _exercise(line: str, wheel: Path, url: str, admin: Any, work: Path) -> None:
    """Everything one line's environment must do (its own bucket, home and folders). ``admin``
    is a client made on the main thread: boto3's default session is not for threads."""
    bucket = "compat-" + line.replace(".", "-")
    work.mkdir(parents=True)
    venv = work / "venv"
    python = str(install(line, wheel, venv) / "python")
    admin.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    dags = work / "dags"
    dags.mkdir()
    (dags / "compat.py").write_text(DAG.replace("OUT", str(work / "out")))
    connection = {"conn_type": "s3connect", "login": "AKIAEXAMPLE", "password": "secret",
                  "extra": {"endpoint_url": url, "region_name": "eu-west-1", "bucket": bucket}}  # fmt: skip
    env = clean_env(work / "home", AIRFLOW__CORE__DAGS_FOLDER=str(dags),
                    AIRFLOW_CONN_S3CONNECT_DEFAULT=json.dumps(connection))  # fmt: skip
    airflow = str(venv / "bin" / "airflow")

    def run(*command: str) -> str:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=work)
        assert done.returncode == 0, _excerpt(done.stdout + done.stderr)
        return done.stdout + done.stderr

    assert "airflow-s3connect" in run(airflow, "providers", "list")
    checks = result(run(python, "-c", CHECKS.replace("VENV", repr(str(venv)))))
    assert sorted(checks["fields"]) == sorted(f.name for f in FIELDS)
    assert checks["fields"]["auth_type"]["enum"] == ["access_key", "assume_role"]
    assert checks["fields"]["aws_session_token"]["format"] == "password"
    assert checks["login"] == "AWS Access Key ID"
    run(airflow, "db", "migrate")
    for example in (ROOT / "dags").glob("example_*.py"):  # every example, the asset watcher's too
        (dags / example.name).write_text(example.read_text())
    run(airflow, "dags", "reserialize")  # parsed as the dag processor does; listed from the database
    (table,) = [line for line in run(airflow, "dags", "list", "-o", "json").splitlines() if line.startswith("[{")]
    listed = {dag["dag_id"] for dag in json.loads(table)}
    assert listed == {"s3c_compat", *demo.DAGS}, listed  # what make demo runs is every example DAG
    output = run(airflow, "dags", "test", "s3c_compat", "2025-01-02")
    assert "state=success" in output, output[-4000:]
    assert [p.read_text() for p in (work / "out").glob("*.txt")] == ["hello 2025-01-02"]
    assert pq.read_table(work / "out" / "t.parquet").to_pylist() == [{"n": 1, "s": "a"}]
    assert admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # got, then deleted; the copy deleted
    admin.put_object(Bucket=bucket, Key="watched/a.csv", Body=b"a")
    event = result(run(python, "-c", WATCH))
    assert [o["key"] for o in event["objects"]] == ["watched/a.csv"]
    env.update(AIRFLOW__LOGGING__REMOTE_LOGGING="True", AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER=f"s3connect://{bucket}/logs",
               AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID="s3connect_default",
               AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS="airflow_s3connect.log_settings.LOGGING_CONFIG")  # fmt: skip
    logs = result(run(python, "-c", LOGS))
    assert logs == {"type": "S3ConnectRemoteLogIO", "sources": [f"s3connect://{bucket}/logs/dag_id=d/attempt=1.log"],
                    "texts": ["a task's log\n"]}  # fmt: skip
    assert admin.get_object(Bucket=bucket, Key="logs/dag_id=d/attempt=1.log")["Body"].read() == b"a task's log\n"


@pytest.fixture(scope="module")
def lines(
    request: pytest.FixtureRequest, wheel: Path, moto_plain: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Future[None]]:
    """Each selected line exercised, two at a time: every step is one Airflow process on one
    core, so two lines side by side take about half the time on two cores. A line's test
    re-raises what failed in it; a timeout here cancels the lines not started."""
    test = test_the_wheel_works_on_each_supported_airflow_line.__name__
    selected = dict.fromkeys(
        item.callspec.params["line"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module and getattr(item, "originalname", "") == test
    )
    moto_plain.reset()
    admin = moto_plain.admin_client("s3")
    root = tmp_path_factory.mktemp("lines")
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        futures = {line: pool.submit(_exercise, line, wheel, moto_plain.url, admin, root / line) for line in selected}
        wait(futures.values())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return futures


@pytest.mark.timeout(1800)  # the first line's test sets up every line: each takes ~80 s, two at a time
@pytest.mark.parametrize("line", list(LINES))
def test_the_wheel_works_on_each_supported_airflow_line(line: str, lines: dict[str, Future[None]]) -> None:
    lines[line].result()
