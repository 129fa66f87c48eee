"""Write into a partner's bucket through a cross-account role with an external ID.

The connection ``s3connect_partner`` has ``auth_type=assume_role``, the partner's
``role_arn`` and the ``external_id`` they gave you (``s3connect external-id`` makes one per
tenant). The worker's own credentials (or the connection's access key) only need
``sts:AssumeRole`` on that role; the role needs s3:PutObject and s3:ListBucket on the
partner's prefix. Credentials refresh themselves during long transfers.

Executor assumptions: every worker reads the connection (and, for the external ID's
derivation, the same ``S3CONNECT_EXTERNAL_ID_SECRET``); no local state between tasks.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_s3connect.operators import S3ListObjectsOperator, S3PutObjectOperator

with DAG(
    "example_cross_account",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    params={"tenant": "partner-co"},
    tags=["s3connect", "example"],
    doc_md=__doc__,
) as dag:
    deliver = S3PutObjectOperator(
        task_id="deliver_report",
        s3connect_conn_id="s3connect_partner",
        data="report for {{ ds }}\n",
        key="deliveries/{tenant}/{iso_date}/report-{job_id}.txt",
        overwrite=False,
    )
    check = S3ListObjectsOperator(
        task_id="list_deliveries",
        s3connect_conn_id="s3connect_partner",
        prefix="deliveries/{tenant}/",
        include_metadata=True,
    )
    deliver >> check
