"""Get's incremental="watermark" uses the one watermark of the event watcher: an object that
becomes visible after newer ones (a multipart upload is dated by its start) is fetched
exactly once, and nothing is fetched twice.

The fault proxy dates the late object 120 s before the newest one in every listing, as S3
lists a multipart upload that began before a newer object and completed after it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.fault_proxy import Fault

DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3GetObjectOperator

with DAG("s3c_late_visible", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    S3GetObjectOperator(task_id="get", prefix="wm/", incremental="watermark", local_dir="OUT",
                        s3connect_conn_id="late")
"""


def test_a_late_visible_object_is_fetched_exactly_once(
    proxy: Any, make_conn: Callable[..., str], airflow_db: Path, tmp_path: Path
) -> None:
    make_conn("late", "AKIAEXAMPLE", "secret", endpoint_url=proxy.url, region_name=REGION, bucket=BUCKET,
              addressing_style="path")  # fmt: skip
    admin = proxy_admin(proxy)
    path = write_dag("s3c_late_visible", DAG.replace("OUT", str(tmp_path / "files")))
    start = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)

    def run(hours: int) -> list[str]:
        result = run_dag(path, "s3c_late_visible", start + datetime.timedelta(hours=hours))
        assert result.state == "success"
        return sorted(entry["key"] for entry in result.value("get"))

    admin.put_object(Bucket=BUCKET, Key="wm/a.csv", Body=b"a")
    assert run(0) == ["wm/a.csv"]
    admin.put_object(Bucket=BUCKET, Key="wm/b.csv", Body=b"b")
    assert run(1) == ["wm/b.csv"]
    admin.put_object(Bucket=BUCKET, Key="wm/late.parquet", Body=b"late")
    proxy.schedule(Fault("backdate", "ListObjectsV2", times=None, delay=120, subject="late"))
    assert run(2) == ["wm/late.parquet"]  # dated before b.csv, and still new
    assert run(3) == []  # and only once
    assert any(i.kind == "backdate" for i in proxy.injected)


def proxy_admin(proxy: Any) -> Any:
    """An admin client of the server behind the proxy (writes that no fault touches)."""
    import boto3

    return boto3.client("s3", endpoint_url=proxy.upstream, region_name=REGION, aws_access_key_id="a",
                        aws_secret_access_key="b")  # fmt: skip
