"""Export records as csv.gz and parquet under tenant, stream and run key macros, never overwriting.

Each run writes ``exports/{tenant}/{stream_name}/{date}/{connection_run_id}.{extension}``:
one key per run and format, stable across retries (``connection_run_id`` is a UUID5 of the
DAG and run), so ``overwrite=False`` turns an accidental second write into a clear
KeyExistsError instead of a silent replacement; a retry after a lost worker keeps the
object its earlier try completed. Needs only s3:PutObject.

Executor assumptions: none. Records are produced and uploaded in the same task, nothing is
read from a worker's disk, so it runs the same on Local, Celery and Kubernetes executors.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pendulum
from airflow.sdk import DAG, AssetAlias

from airflow_s3connect.operators import S3PutObjectOperator

KEY = "exports/{tenant}/{stream_name}/{date}/{connection_run_id}.{extension}"


def orders(context: Any, **_: Any) -> Iterator[dict[str, Any]]:
    """The run's orders, generated lazily in the task (Airflow calls callables at render time)."""
    day: datetime.datetime = context["logical_date"] or pendulum.now("UTC")
    for i in range(500):
        yield {"order_id": f"{day:%Y%m%d}-{i:04d}", "amount": round(10 + i * 0.25, 2), "currency": "EUR"}


with DAG(
    "example_export",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"tenant": "acme"},
    tags=["s3connect", "example"],
    doc_md=__doc__,
) as dag:
    for fmt in ("csv.gz", "parquet"):
        S3PutObjectOperator(
            task_id=f"orders_{fmt.partition('.')[0]}",
            records=orders,
            format=fmt,
            key=KEY,
            stream_name="orders",
            overwrite=False,
            outlets=[AssetAlias("s3connect-exports")],
        )
