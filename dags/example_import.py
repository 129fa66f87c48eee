"""Import what arrives each hour: the sensor's matches are exactly what the run fetches.

* The sensor waits, in the triggerer, for CSV files modified since the interval's start
  (``collect_all``: every file present when the first one is seen). An hour with no file
  is normal: the sensor then gives up at the hour's end and the run is *skipped*
  (``soft_fail``), not failed.
* Get is mapped over the sensor's own result, so the files that ended the wait are the
  files imported, by the same run, even when they arrive after the interval's end.
  Each is archived under ``processed/{ds_nodash}/`` once its local file is complete, so
  the next run does not see it again.

Executor assumptions: ``local_dir`` is on the worker that ran each mapped ``fetch`` task.
With the Local executor that is this machine; on Celery or Kubernetes every mapped task
may run elsewhere (a pod's disk disappears with it), so consume a downloaded file in the
task that downloaded it, or keep the data in S3 (``read_into_xcom`` for small files).
Needs s3:ListBucket, s3:GetObject,
s3:DeleteObject, and s3:PutObject on ``processed/``.
"""

from __future__ import annotations

import datetime

import pendulum
from airflow.sdk import DAG

try:
    from airflow.sdk import DeltaDataIntervalTimetable
except ImportError:  # Airflow 3.0 and 3.1 keep it outside the task SDK
    from airflow.timetables.interval import DeltaDataIntervalTimetable

from airflow_s3connect.operators import S3GetObjectOperator
from airflow_s3connect.sensors import S3ObjectSensor

with DAG(
    "example_import",
    schedule=DeltaDataIntervalTimetable(datetime.timedelta(hours=1)),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["s3connect", "example"],
    doc_md=__doc__,
) as dag:
    arrived = S3ObjectSensor(
        task_id="wait_for_files",
        prefix="incoming/",
        pattern="*.csv",
        new_since="data_interval_start",
        collect_all=True,
        deferrable=True,
        poke_interval=30,
        timeout=3300,
        soft_fail=True,
    )
    S3GetObjectOperator.partial(
        task_id="fetch",
        local_dir="/tmp/s3connect-demo/import/{{ ds_nodash }}",
        after="archive",
        archive_prefix="processed/{ds_nodash}",
    ).expand(key=arrived.output)
