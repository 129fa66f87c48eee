"""Transfers that can be stopped, and retries that clean up and recognise their own work:
cancel from another thread (on_kill), execution_timeout, multipart uploads left by a killed
try, temporary files of a killed download, and overwrite=False on a retry."""

from __future__ import annotations

import datetime
import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.cleanup import temp_path
from airflow_s3connect.downloads import Downloader, DownloadTask
from airflow_s3connect.errors import KeyExistsError, TransferInterrupted
from airflow_s3connect.objects import TransferConfig
from airflow_s3connect.uploads import Uploader, abort_uploads
from airflow_s3connect.writes import WriteOptions
from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.moto_server import MotoServer
from tests.support.stores import endpoint_client

MiB = 1024 * 1024
PARTS = TransferConfig(multipart_threshold=5 * MiB, chunk_size=5 * MiB, max_concurrency=2)


def _client(url: str) -> Any:
    return endpoint_client(url, max_attempts=2)


def _uploads(moto: MotoServer) -> list[Any]:
    return list(moto.admin_client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))


def test_cancel_stops_an_upload_and_aborts_its_multipart_upload(moto: MotoServer, proxy: FaultProxy) -> None:
    proxy.schedule(Fault("slow", "UploadPart", times=None, delay=1.0))
    reported: list[dict[str, str]] = []
    uploader = Uploader(_client(proxy.url), BUCKET, PARTS, WriteOptions(),
                        on_open=lambda open_now: reported.append(open_now["uploads"]))  # fmt: skip

    def kill_when_started() -> None:
        deadline = time.monotonic() + 20
        while not reported and time.monotonic() < deadline:
            time.sleep(0.05)
        uploader.cancel("the task was killed")

    killer = threading.Thread(target=kill_when_started)
    killer.start()

    def upload() -> None:
        with uploader:
            uploader.put_stream(io.BytesIO(b"x" * (40 * MiB)), "big.bin")
            list(uploader.results())

    with pytest.raises(TransferInterrupted, match=r"cancelled: the task was killed\. Its multipart upload"):
        upload()
    killer.join()
    assert len(reported[0]) == 1  # the upload id was reported as it started
    assert _uploads(moto) == []
    assert moto.admin_client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_later_try_aborts_the_uploads_a_killed_one_left(moto: MotoServer) -> None:
    admin = moto.admin_client("s3")
    left = {admin.create_multipart_upload(Bucket=BUCKET, Key=f"k{i}.bin")["UploadId"]: f"k{i}.bin" for i in range(2)}
    left["no-such-upload"] = "gone.bin"
    assert sorted(abort_uploads(_client(moto.url), BUCKET, left)) == ["k0.bin", "k1.bin"]
    assert _uploads(moto) == []


def test_overwrite_off_on_a_retry_keeps_its_own_earlier_object(moto: MotoServer) -> None:
    client = _client(moto.url)

    def put(writer: str | None, body: bytes = b"report") -> Any:
        with Uploader(client, BUCKET, PARTS, WriteOptions(overwrite=False, writer=writer)) as up:
            up.put_stream(io.BytesIO(body), "out/report.csv")
            return list(up.results())

    (first,) = put("task-a")
    (retry,) = put("task-a")  # the worker died after the object was complete: the retry finds it
    assert (retry.key, retry.size, retry.etag) == (first.key, first.size, first.etag)
    with pytest.raises(KeyExistsError, match="written by another task, not by an earlier try of this one"):
        put("task-b")
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="out/report.csv", Body=b"someone else")
    with pytest.raises(KeyExistsError, match="written by something other than airflow-s3connect"):
        put("task-a")


def test_a_retried_download_replaces_the_temporary_file_a_killed_try_left(moto: MotoServer, tmp_path: Path) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="in/a.csv", Body=b"a,b\n")
    stale = temp_path(tmp_path / "a.csv", "task-a")
    stale.write_bytes(b"half of an earlier try")
    (done,) = Downloader(_client(moto.url), BUCKET, PARTS, owner="task-a").download(
        [DownloadTask("in/a.csv", tmp_path / "a.csv")]
    )
    assert (tmp_path / "a.csv").read_bytes() == b"a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    assert done.size == 4


def test_cancel_stops_a_download_and_leaves_no_partial_file(
    moto: MotoServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="big.bin", Body=b"y" * (30 * MiB))
    proxy.schedule(Fault("slow", "GetObject", times=None, delay=1.0, ranged=True))
    downloader = Downloader(_client(proxy.url), BUCKET, PARTS, owner="task-a")
    timer = threading.Timer(1.5, downloader.cancel, args=("the task was killed",))
    timer.start()
    with pytest.raises(
        TransferInterrupted, match=r"Download cancelled: the task was killed\. No partial file was kept"
    ):
        list(downloader.download([DownloadTask("big.bin", tmp_path / "big.bin")]))
    timer.join()
    assert list(tmp_path.iterdir()) == []


TIMEOUT_DAG = """
import datetime, time
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3GetObjectOperator, S3PutObjectOperator

def slow_data(context, **_):
    for _ in range(200):
        yield b"z" * (1024 * 1024)
        time.sleep(0.05)

with DAG("s3c_timeout", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    S3PutObjectOperator(task_id="put_slow", data=slow_data, key="slow/big.bin", s3connect_conn_id="crash",
                        chunk_size=5 * 2**20, multipart_threshold=5 * 2**20,
                        execution_timeout=datetime.timedelta(seconds=3))
"""


def test_execution_timeout_aborts_the_multipart_upload_and_says_why(
    moto: MotoServer, make_conn: Any, airflow_db: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    make_conn("crash", "AKIA1", "s", endpoint_url=moto.url, region_name=REGION, bucket=BUCKET)
    path = write_dag("s3c_timeout", TIMEOUT_DAG)
    result = run_dag(path, "s3c_timeout", datetime.datetime(2025, 1, 2, tzinfo=datetime.timezone.utc))
    assert result.task_states[("put_slow", -1)] == "failed"
    output = "".join(capfd.readouterr())
    assert "AirflowTaskTimeout: Timeout" in output  # the real reason, not s3transfer's TypeError
    assert "not callable" not in output
    assert _uploads(moto) == []
    assert moto.admin_client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
