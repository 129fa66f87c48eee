"""Load each file dropped into S3 once, in a run started by its arrival.

No sensor waits here: an asset's watcher (``S3ObjectEventTrigger``) runs in the triggerer
and announces each new or updated CSV file once. Every announcement is an asset event;
the scheduler starts the DAG for the events it has not consumed yet, so one run may see
one file or several, and no file is seen by two runs, across triggerer restarts too
(Airflow 3.3 keeps the watcher's watermark in the asset's state). Two ways to learn of a
file, one DAG each:

* ``example_event_driven`` lists ``drop/`` every 10 s (one ListObjectsV2 per 1,000 keys,
  s3:ListBucket only): nothing to set up on the bucket.
* ``example_event_driven_sqs`` reads the S3 event notifications of ``inbox/`` from an SQS
  queue (``S3CONNECT_INBOX_QUEUE_URL``): a file is announced within a second of its
  upload, an idle queue costs one long poll per 20 s, and a listing every 15 minutes
  catches a file whose notification never came. Set-up: ``s3connect notifications
  --bucket ... --prefix inbox/ --queue-url ...`` prints the bucket's notification
  configuration and the queue's policy; the watcher needs ``s3connect policy
  --operations watch-sqs``.

Each run:

* ``arrived`` reads the run's triggering asset events (a watcher error fails it, with
  the store's message);
* ``load`` reads each file into XCom (small files; keep large data in S3) and archives it,
  so the watched prefix holds only what is not yet loaded;
* ``record`` writes which files this run loaded below ``audit/``.

``batch=True``: one event per poll (or per received batch of notifications) that found
files. Up to Airflow 3.3, a run consumes only the asset events stored up to the first one
it was queued for; events stored a moment later wait for the *next* event. One event per
poll keeps the files of one poll in one run.
``start="all"``: the watcher's very first start also announces files already waiting.
A run started by hand has no triggering events and loads nothing.
Needs s3:ListBucket, s3:GetObject, s3:DeleteObject, and s3:PutObject on the archive and
``audit/`` prefixes.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_s3connect.events import objects_from_events
from airflow_s3connect.operators import S3GetObjectOperator, S3PutObjectOperator
from airflow_s3connect.triggers import S3ObjectEventTrigger

#: The queue the bucket sends the notifications of ``inbox/`` to (``make demo`` and
#: ``make stack`` create one on the embedded S3 and set the variable).
INBOX_QUEUE_URL = os.environ.get(
    "S3CONNECT_INBOX_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/s3connect-inbox"
)


def loading_dag(dag_id: str, asset: Asset, archive: str, audit: str) -> DAG:
    """Runs started by ``asset``'s events: load each announced file, archive it, record it."""
    with DAG(
        dag_id,
        schedule=[asset],
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
            task_id="load", read_into_xcom=True, after="archive", archive_prefix=archive
        ).expand(key=keys)
        record = S3PutObjectOperator(
            task_id="record",
            data="{{ ti.xcom_pull(task_ids='arrived') | tojson }}",
            key=f"{audit}{{connection_run_id}}.json",
            overwrite=False,
        )
        load >> record
    return dag


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
inbox = Asset(
    "s3connect_inbox",
    uri="s3://s3connect-demo/inbox/",
    watchers=[
        AssetWatcher(
            name="s3connect_inbox_watcher",
            trigger=S3ObjectEventTrigger(
                prefix="inbox/",
                pattern="*.csv",
                start="all",
                batch=True,
                queue_url=INBOX_QUEUE_URL,
                poll_interval=20,
                reconcile_interval=900,
            ),
        )
    ],
)

polling = loading_dag("example_event_driven", drop, archive="loaded/", audit="audit/event_runs/")
notified = loading_dag("example_event_driven_sqs", inbox, archive="loaded-sqs/", audit="audit/event_runs_sqs/")
