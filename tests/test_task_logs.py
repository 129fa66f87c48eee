"""Remote task logs through an s3connect connection: written and read back on every store,
chosen by Airflow for the s3connect:// scheme, and refused outside the connection's scope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_s3connect.errors import AccessDeniedError, ScopeError
from airflow_s3connect.hooks.task_logs import S3ConnectRemoteLogIO
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import IamFactory
from tests.support.stores import Store

RELATIVE = "dag_id=d/run_id=manual__2025-01-01T00:00:00+00:00/task_id=t/attempt=1.log"


@pytest.fixture
def logs(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Store, str, S3ConnectRemoteLogIO]:
    bucket = store.new_bucket("s3c-logs")
    monkeypatch.setenv("AIRFLOW_CONN_LOGS", json.dumps(store.conn(bucket, path_prefix="airflow-logs")))
    io = S3ConnectRemoteLogIO(f"s3connect://{bucket}/airflow-logs", tmp_path / "local", conn_id="logs")
    return store, bucket, io


def test_a_tries_log_is_uploaded_appended_and_read_back(logs: tuple[Store, str, S3ConnectRemoteLogIO]) -> None:
    store, bucket, io = logs
    local = io.base_log_folder / RELATIVE
    local.parent.mkdir(parents=True)
    local.write_text("first part\n")
    io.upload(local)
    assert local.read_text() == ""  # uploaded: only what comes next is uploaded next time
    local.write_text("after the deferral\n")
    io.upload(RELATIVE)  # relative to base_log_folder, as the supervisor also passes it
    key = f"airflow-logs/{RELATIVE}"
    stored = store.admin.get_object(Bucket=bucket, Key=key)
    assert stored["Body"].read() == b"first part\nafter the deferral\n"
    assert stored["ContentType"].startswith("text/plain")
    sources, texts = io.read(RELATIVE)
    assert sources == [f"s3connect://{bucket}/{key}"]
    assert texts == ["first part\nafter the deferral\n"]
    assert io.read("dag_id=other/") == ([], None)


def test_delete_local_copy_and_paths_outside_the_log_folder(
    logs: tuple[Store, str, S3ConnectRemoteLogIO], tmp_path: Path
) -> None:
    store, bucket, io = logs
    io.delete_local_copy = True
    local = io.base_log_folder / RELATIVE
    local.parent.mkdir(parents=True)
    local.write_text("done\n")
    io.upload(local)
    assert not local.parent.exists()
    stray = tmp_path / "elsewhere.log"
    stray.write_text("not a task log")
    io.upload(stray)  # outside base_log_folder: ignored, as Airflow's own handlers do
    assert [o["Key"] for o in store.admin.list_objects_v2(Bucket=bucket)["Contents"]] == [f"airflow-logs/{RELATIVE}"]
    outside = S3ConnectRemoteLogIO(f"s3connect://{bucket}/other", tmp_path / "local", conn_id="logs")
    (tmp_path / "local" / "x.log").write_text("x")
    with pytest.raises(ScopeError):
        outside.upload(tmp_path / "local" / "x.log")


def test_airflow_picks_it_through_the_logging_config_class(tmp_path: Path) -> None:
    """The documented configuration, in a fresh process: fails if Airflow's logging set-up
    stops reading REMOTE_TASK_LOG from the module, or its default settings change shape."""
    env = {
        **os.environ,
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": "s3connect://logs-bucket/airflow-logs",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "my_logs",
        "AIRFLOW__LOGGING__DELETE_LOCAL_LOGS": "True",
        "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS": "airflow_s3connect.log_settings.LOGGING_CONFIG",
    }
    code = (
        "from airflow.logging_config import configure_logging, get_remote_task_log\n"
        "configure_logging()\n"
        "io = get_remote_task_log()\n"
        "print(type(io).__name__, io.bucket, io.folder, io.conn_id, io.delete_local_copy)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-5:] == ["S3ConnectRemoteLogIO", "logs-bucket", "airflow-logs/", "my_logs", "True"]


def test_writers_and_readers_need_exactly_the_documented_permissions(
    iam: IamFactory, make_conn: Callable[..., str], tmp_path: Path
) -> None:
    """Workers: s3:PutObject, s3:GetObject and s3:ListBucket (AWS answers a GetObject of a
    missing key with 403 instead of 404 without it). The UI: s3:ListBucket + s3:GetObject."""
    folder = f"arn:aws:s3:::{BUCKET}/airflow-logs/*"
    writer = iam.user(
        "log-writer", ["s3:PutObject", "s3:GetObject", "s3:ListBucket"], [f"arn:aws:s3:::{BUCKET}", folder]
    )
    reader = iam.user("log-reader", ["s3:ListBucket", "s3:GetObject"], [f"arn:aws:s3:::{BUCKET}", folder])
    common = {"endpoint_url": iam.server.url, "region_name": REGION, "bucket": BUCKET, "path_prefix": "airflow-logs"}
    make_conn("log_writer", writer.key, writer.secret, **common)
    make_conn("log_reader", reader.key, reader.secret, **common)
    iam.enforce()
    remote = f"s3connect://{BUCKET}/airflow-logs"
    worker = S3ConnectRemoteLogIO(remote, tmp_path, conn_id="log_writer")
    local = tmp_path / RELATIVE
    local.parent.mkdir(parents=True)
    for part in ("one\n", "two\n"):  # the second upload appends: reads first
        local.write_text(part)
        worker.upload(local)
    api = S3ConnectRemoteLogIO(remote, tmp_path, conn_id="log_reader")
    assert api.read(RELATIVE)[1] == ["one\ntwo\n"]
    local.write_text("three\n")
    with pytest.raises(AccessDeniedError, match="s3:PutObject"):
        api.upload(local)  # the API server's identity only reads
