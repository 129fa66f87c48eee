"""Get's incremental="watermark" uses the one watermark of the event watcher: an object that
becomes visible after newer ones (a multipart upload is dated by its start) is fetched
exactly once, and nothing is fetched twice. incremental="interval" selects by date alone:
its edge, and the lookback that covers it.

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


INTERVAL_DAG = """
import datetime
import pendulum
from airflow.sdk import DAG, DeltaDataIntervalTimetable
from airflow_s3connect.operators import S3GetObjectOperator

with DAG("s3c_late_interval", schedule=DeltaDataIntervalTimetable(datetime.timedelta(minutes=10)),
         start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False) as dag:
    S3GetObjectOperator(task_id="plain", prefix="iv/", incremental="interval", local_dir="OUT/plain",
                        s3connect_conn_id="late")
    S3GetObjectOperator(task_id="lookback", prefix="iv/", incremental="interval", lookback=300,
                        skip_unchanged=True, local_dir="OUT/lookback", s3connect_conn_id="late")
"""


def test_interval_mode_edge_and_its_remedy(
    proxy: Any, make_conn: Callable[..., str], airflow_db: Path, tmp_path: Path
) -> None:
    """``incremental="interval"`` selects by date alone: an object that appears after its
    interval ran, dated inside it (a multipart upload is dated by its start), is in no later
    interval. ``lookback`` longer than the upload, with ``skip_unchanged``, fetches it in the
    next run, and what the overlap selects again is not fetched twice."""
    make_conn("late", "AKIAEXAMPLE", "secret", endpoint_url=proxy.url, region_name=REGION, bucket=BUCKET,
              addressing_style="path")  # fmt: skip
    admin = proxy_admin(proxy)
    path = write_dag("s3c_late_interval", INTERVAL_DAG.replace("OUT", str(tmp_path)))
    admin.put_object(Bucket=BUCKET, Key="iv/a.csv", Body=b"a")
    dated = admin.head_object(Bucket=BUCKET, Key="iv/a.csv")["LastModified"]
    first_end = dated + datetime.timedelta(seconds=60)  # intervals of 10 minutes: [end - 10 min, end)

    def run(end: datetime.datetime) -> dict[str, list[tuple[str, bool]]]:
        result = run_dag(path, "s3c_late_interval", end)
        assert result.state == "success"
        return {task: sorted((e["key"], e["skipped"]) for e in result.value(task)) for task in ("plain", "lookback")}

    assert run(first_end) == {"plain": [("iv/a.csv", False)], "lookback": [("iv/a.csv", False)]}
    admin.put_object(Bucket=BUCKET, Key="iv/late.parquet", Body=b"late")  # after run 1, dated 120 s before a.csv
    proxy.schedule(Fault("backdate", "ListObjectsV2", times=None, delay=120, subject="late"))
    second = run(first_end + datetime.timedelta(minutes=10))
    assert second["plain"] == []  # the edge: dated in run 1's interval, which ran before it appeared
    assert second["lookback"] == [("iv/a.csv", True), ("iv/late.parquet", False)]  # fetched; a.csv not again
    assert (tmp_path / "lookback" / "late.parquet").read_bytes() == b"late"
    assert not (tmp_path / "plain" / "late.parquet").exists()


def proxy_admin(proxy: Any) -> Any:
    """An admin client of the server behind the proxy (writes that no fault touches)."""
    import boto3

    return boto3.client("s3", endpoint_url=proxy.upstream, region_name=REGION, aws_access_key_id="a",
                        aws_secret_access_key="b")  # fmt: skip
