"""Import what arrived during the run's data interval: sensor → List → Get per object → archive.

* The sensor waits (in the triggerer) for CSV files modified since the interval's start.
* List keeps the files modified within the interval, [start, end): every run takes exactly
  its own files, so reruns and backfills are idempotent ("interval" mode).
* Get is mapped over the listing (no second listing), one task per file, and archives each
  object under ``processed/{ds_nodash}/`` once its local file is complete.

``S3GetObjectOperator(prefix=..., incremental="interval")`` does the last two in one task.
Needs s3:ListBucket, s3:GetObject, s3:DeleteObject, and s3:PutObject on ``processed/``.
"""

from __future__ import annotations

import datetime

import pendulum
from airflow.sdk import DAG, DeltaDataIntervalTimetable

from airflow_s3connect.operators import S3GetObjectOperator, S3ListObjectsOperator
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
        deferrable=True,
        poke_interval=30,
        timeout=3600,
    )
    listing = S3ListObjectsOperator(
        task_id="list_interval",
        prefix="incoming/",
        pattern="*.csv",
        modified_since="{{ data_interval_start }}",
        modified_until="{{ data_interval_end }}",
    )
    fetch = S3GetObjectOperator.partial(
        task_id="fetch",
        local_dir="/tmp/s3connect-demo/import/{{ ds_nodash }}",
        after="archive",
        archive_prefix="processed/{ds_nodash}",
    ).expand(key=listing.output)
    arrived >> listing
