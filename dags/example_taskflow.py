"""TaskFlow with the hook: the operators' engine from ``@task`` functions.

* ``write_orders`` uploads records as JSON lines (the format follows the key's suffix);
* ``summarise`` streams them back with ``iter_records`` and writes a small summary;
* ``pull_from_partner`` copies what the partner left in their bucket (``s3connect_partner``,
  an assumed role with an external ID) into ours (``s3connect_default``). Two identities, so
  the copy streams through this worker, checked against each source ETag before it
  completes; inside one connection it would be server-side;
* ``share`` returns a presigned GET URL of the summary, valid one hour (with an assumed
  role, at most until its session ends).

Executor assumptions: nothing is kept on the worker's disk; every step reads and writes S3.
Needs s3:PutObject and s3:GetObject on ``taskflow/``; on the partner side s3:ListBucket and
s3:GetObject on ``outbox/``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_s3connect.hooks.s3connect import S3ConnectHook

with DAG(
    "example_taskflow",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["s3connect", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def write_orders(*, run_id: str) -> str:
        rows = [{"id": i, "amount": i * 2.5, "country": "FR" if i % 2 else "DE"} for i in range(100)]
        written = S3ConnectHook().upload(f"taskflow/{run_id}/orders.jsonl", records=rows)
        return str(written["key"])

    @task
    def summarise(key: str) -> dict[str, Any]:
        hook = S3ConnectHook()
        totals: dict[str, float] = {}
        for row in hook.iter_records(key):
            totals[row["country"]] = totals.get(row["country"], 0.0) + row["amount"]
        summary_key = key.rsplit("/", 1)[0] + "/summary.json"
        hook.upload(summary_key, data=str(totals).replace("'", '"'), content_type="application/json")
        return {"key": summary_key, "totals": totals}

    @task
    def pull_from_partner(*, run_id: str) -> list[str]:
        ours, partner = S3ConnectHook(), S3ConnectHook("s3connect_partner")
        copied = ours.copy(source=partner, source_prefix="outbox/", target_prefix=f"taskflow/{run_id}/partner")
        return [str(c["key"]) for c in copied]

    @task
    def share(summary: dict[str, Any]) -> str:
        return S3ConnectHook().presign(summary["key"], expires_in=3600)

    share(summarise(write_orders()))
    pull_from_partner()
