"""Load each file dropped into ``drop/`` once, in a run started by its arrival.

No sensor waits here: the ``drop`` asset's watcher (``S3ObjectEventTrigger``) lists
``drop/`` in the triggerer every 10 s (one ListObjectsV2 per 1,000 keys, s3:ListBucket
only) and announces each new or updated CSV file once. Every announcement is an asset
event; the scheduler starts this DAG for the events it has not consumed yet, so one run
may see one file or several, and no file is seen by two runs, across triggerer restarts
too (Airflow 3.3 keeps the watcher's watermark in the asset's state).

* ``arrived`` reads the run's triggering asset events (a watcher error fails it, with
  the store's message);
* ``load`` reads each file into XCom (small files; keep large data in S3) and archives it
  below ``loaded/``, so ``drop/`` holds only what is not yet loaded;
* ``record`` writes which files this run loaded to ``audit/event_runs/``.

``batch=True``: one event per poll that found files. Up to Airflow 3.3, a run consumes only
the asset events stored up to the first one it was queued for; events stored a moment later
(several files announced one by one in the same second) wait for the *next* event. One event
per poll keeps the files of one poll in one run.
``start="all"``: the watcher's very first start also announces files already waiting.
A run started by hand has no triggering events and loads nothing.
Needs s3:ListBucket, s3:GetObject, s3:DeleteObject, and s3:PutObject on ``loaded/``
and ``audit/``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_s3connect.events import objects_from_events
from airflow_s3connect.operators import S3GetObjectOperator, S3PutObjectOperator
from airflow_s3connect.triggers import S3ObjectEventTrigger

drop = Asset(
    "s3connect_drop",
    uri="s3://s3connect-demo/drop/",
    watchers=[
        AssetWatcher(
            name="s3connect_drop_watcher",
            trigger=S3ObjectEventTrigger(prefix="drop/", pattern="*.csv", start="all", batch=True, poll_interval=10),
        )
    ],
)

with DAG(
    "example_event_driven",
    schedule=[drop],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["s3connect", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def arrived(*, triggering_asset_events: Any = None) -> list[str]:
        return [found["key"] for found in objects_from_events(triggering_asset_events or {})]

    keys = arrived()
    load = S3GetObjectOperator.partial(
        task_id="load", read_into_xcom=True, after="archive", archive_prefix="loaded/"
    ).expand(key=keys)
    record = S3PutObjectOperator(
        task_id="record",
        data="{{ ti.xcom_pull(task_ids='arrived') | tojson }}",
        key="audit/event_runs/{connection_run_id}.json",
        overwrite=False,
    )
    load >> record
