"""Catalog a landing zone: directories, files grouped into
datasets by a date mask, and each dataset's fields.

``datasource/{YYYYMMDD}/file_{YYYYMM}_{zz}.csv`` (date masks) matches
``datasource/20250114/file_202501_a.csv``; files that differ only in their dates are one
dataset (``datasource/{YYYYMMDD}/file_{YYYYMM}_a.csv``). Fields come from the newest file's
header (delimiter sniffed), read as a byte range: nothing is downloaded whole. The catalog
is returned (XCom) and written to ``catalogs/{ds_nodash}/datasource.json``.
Needs s3:ListBucket + s3:GetObject, and s3:PutObject on the catalog key.

Executor assumptions: none. Everything is read from and written to S3 within one task.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_s3connect.operators import S3CatalogOperator

with DAG(
    "example_catalog",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    tags=["s3connect", "example"],
    doc_md=__doc__,
) as dag:
    S3CatalogOperator(
        task_id="catalog",
        prefix="datasource/",
        patterns=["{YYYYMMDD}/file_{YYYYMM}_{zz}.csv"],
        catalog_key="catalogs/{ds_nodash}/datasource.json",
    )
