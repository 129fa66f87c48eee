"""Catalog a landing zone: its directories, and its files grouped into datasets by a date mask.

``datasource/{YYYYMMDD}/file_{YYYYMM}_{zz}.csv`` (DataGalaxy's masks) matches
``datasource/20250114/file_202501_a.csv``; files that differ only in their dates are one
dataset. Needs s3:ListBucket only: nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_s3connect.operators import S3ListObjectsOperator
from airflow_s3connect.patterns import compile_pattern

PATTERN = "{YYYYMMDD}/file_{YYYYMM}_{zz}.csv"

with DAG(
    "example_catalog",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    tags=["s3connect", "example"],
    doc_md=__doc__,
) as dag:
    directories = S3ListObjectsOperator(task_id="directories", prefix="datasource/", delimiter="/")
    files = S3ListObjectsOperator(task_id="files", prefix="datasource/", pattern=PATTERN, include_metadata=True)

    @task
    def datasets(directories: list[str], files: list[dict[str, Any]]) -> dict[str, Any]:
        """Group files by what is left of their key once the date parts are masked."""
        pattern = compile_pattern(PATTERN)
        grouped: dict[str, dict[str, Any]] = {}
        for entry in files:
            match = pattern.match(entry["key"].removeprefix("datasource/"))
            if match is None:
                continue
            dataset = f"datasource/{{YYYYMMDD}}/file_{{YYYYMM}}_{match.groups['zz']}.csv"
            group = grouped.setdefault(dataset, {"files": 0, "bytes": 0, "dates": []})
            group["files"] += 1
            group["bytes"] += entry["size"]
            group["dates"].append(match.date_parts["YYYYMMDD"])
        return {"directories": directories, "datasets": grouped}

    datasets(directories.output, files.output)
