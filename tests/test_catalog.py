"""The metadata catalog: datasets by date mask, fields from CSV / JSONL / Parquet, read from
byte ranges only (every GET on the wire is ranged, and its bytes are counted)."""

from __future__ import annotations

import datetime
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_s3connect.catalog import HEAD_BYTES, build_catalog, csv_fields, jsonl_fields
from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.moto_server import MotoServer
from tests.support.stores import endpoint_client

PATTERN = "datasource/{YYYYMMDD}/file_{YYYYMM}_{zz}.csv"


def _seed(admin: Any) -> int:
    """Objects of every kind; returns their total size."""
    rows = "".join(f"{i};acme;{i * 1.5}\n" for i in range(20_000))  # ~300 KB: far more than one head
    bodies: dict[str, bytes] = {
        "datasource/20250114/file_202501_a.csv": ("id;tenant;amount\n" + rows).encode(),
        "datasource/20250115/file_202501_a.csv": ("id;tenant;amount\n" + rows).encode(),
        "datasource/20250115/file_202501_b.csv": b"order,customer,total\n1,x,2\n",
        "events/2025-01-14/events.jsonl": b'{"a": 1, "b": 2}\n{"a": 3, "c": {"x": 1}}\n',
        "events/2025-01-15/events.jsonl": b'{"a": 1, "b": 2}\n{"d": 4}\n',
        "readme.txt": b"not a dataset with fields",
    }
    table = pa.table({"order_id": pa.array(range(200_000), pa.int64()), "city": ["Lyon"] * 200_000,
                      "amount": pa.array([1.25] * 200_000, pa.float64())})  # fmt: skip
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="none")
    bodies["warehouse/orders.parquet"] = buffer.getvalue()
    for key, body in bodies.items():
        admin.put_object(Bucket=BUCKET, Key=f"zone/{key}", Body=body)
    return sum(len(b) for b in bodies.values())


def test_catalog_reads_fields_from_ranges_only(moto: MotoServer) -> None:
    total = _seed(moto.admin_client("s3"))
    client = endpoint_client(moto.url, region=REGION)
    with moto.recording() as rec:
        catalog = build_catalog(client, BUCKET, "zone/", [PATTERN])

    datasets = {d["name"]: d for d in catalog["datasets"]}
    assert sorted(datasets) == [
        "datasource/{YYYYMMDD}/file_{YYYYMM}_a.csv",
        "datasource/{YYYYMMDD}/file_{YYYYMM}_b.csv",
        "events/{YYYY}-{MM}-{DD}/events.jsonl",
        "readme.txt",
        "warehouse/orders.parquet",
    ]
    a = datasets["datasource/{YYYYMMDD}/file_{YYYYMM}_a.csv"]
    assert (a["files"], a["delimiter"], [f["name"] for f in a["fields"]]) == (2, ";", ["id", "tenant", "amount"])
    assert a["newest_key"] == "zone/datasource/20250115/file_202501_a.csv"
    b = datasets["datasource/{YYYYMMDD}/file_{YYYYMM}_b.csv"]
    assert (b["delimiter"], [f["name"] for f in b["fields"]]) == (",", ["order", "customer", "total"])
    events = datasets["events/{YYYY}-{MM}-{DD}/events.jsonl"]
    assert events["files"] == 2
    assert [f["name"] for f in events["fields"]] in (["a", "b", "d"], ["a", "b", "c"])  # the newest file's keys
    parquet = datasets["warehouse/orders.parquet"]
    assert parquet["fields"] == [
        {"name": "order_id", "type": "int64"},
        {"name": "city", "type": "string"},
        {"name": "amount", "type": "double"},
    ]
    assert datasets["readme.txt"]["fields"] == []
    assert catalog["directories"] == [
        "datasource/", "datasource/20250114/", "datasource/20250115/", "events/", "events/2025-01-14/",
        "events/2025-01-15/", "warehouse/",
    ]  # fmt: skip
    assert catalog["objects"] == 7

    # On the wire: one listing, then only ranged GETs, each at most HEAD_BYTES long.
    gets = [r for r in rec.s3() if r.method == "GET" and "list-type" not in r.query]
    lists = [r for r in rec.s3() if "list-type" in r.query]
    assert len(lists) == 1
    spans = []
    for request in gets:
        first, last = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers["Range"]).groups())  # type: ignore[union-attr]
        spans.append(last - first + 1)
    assert len(gets) == 4  # csv a, csv b, jsonl, the parquet tail (its footer fits in it)
    assert max(spans) <= HEAD_BYTES
    assert sum(spans) < 4 * HEAD_BYTES < total / 5


def test_sniffing_and_cut_lines() -> None:
    assert csv_fields(b"a;b;c\n1;2;3\n", truncated=False) == (["a", "b", "c"], ";")
    assert csv_fields(b"\xef\xbb\xbfx,y\n1,2\n3,", truncated=True) == (["x", "y"], ",")
    assert csv_fields(b"k\tv\n1\t2\n", truncated=False) == (["k", "v"], "\t")
    assert jsonl_fields(b'{"a": 1}\n{"b": 2}\n{"c": ', truncated=True) == ["a", "b"]
    assert jsonl_fields(b'{"a": 1}\nnot json\n[1]\n', truncated=False) == ["a"]


CATALOG_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3CatalogOperator

with DAG("s3c_catalog", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    S3CatalogOperator(task_id="catalog", s3connect_conn_id="catalog", prefix="zone/", patterns=["PATTERN"],
                      catalog_key="catalogs/{ds_nodash}/zone.json")
"""


def test_catalog_operator_in_a_dag_run(moto: MotoServer, make_conn: Any, airflow_db: Path) -> None:
    admin = moto.admin_client("s3")
    _seed(admin)
    make_conn("catalog", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION, bucket=BUCKET)
    path = write_dag("s3c_catalog", CATALOG_DAG.replace("PATTERN", PATTERN))
    result = run_dag(path, "s3c_catalog", datetime.datetime(2025, 4, 1, tzinfo=datetime.timezone.utc))
    assert result.task_states == {("catalog", -1): "success"}
    returned = result.value("catalog")
    stored = json.loads(admin.get_object(Bucket=BUCKET, Key="catalogs/20250401/zone.json")["Body"].read())
    assert stored == returned
    assert len(returned["datasets"]) == 5


def test_catalog_reads_our_own_outputs_gzipped_and_parquet(moto: MotoServer, tmp_path: Path) -> None:
    """What S3PutObjectOperator(records=...) writes, catalogued from the first bytes only."""
    from airflow_s3connect.formats import encode_records, get_format, write_parquet

    rows = [{"id": i, "name": f"row {i}", "when": datetime.date(2025, 1, 14)} for i in range(100_000)]
    admin = moto.admin_client("s3")
    bodies = {f"out/orders.{fmt}": b"".join(encode_records(rows, get_format(fmt))) for fmt in ("csv.gz", "jsonl.gz")}
    write_parquet(rows, tmp_path / "orders.parquet")
    bodies["out/orders.parquet"] = (tmp_path / "orders.parquet").read_bytes()
    for key, body in bodies.items():
        admin.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert all(len(body) > HEAD_BYTES for body in bodies.values())
    client = endpoint_client(moto.url, region=REGION)
    with moto.recording() as rec:
        catalog = build_catalog(client, BUCKET, "out/")
    fields = {d["name"]: [f["name"] for f in d["fields"]] for d in catalog["datasets"]}
    assert fields == {"orders.csv.gz": ["id", "name", "when"], "orders.jsonl.gz": ["id", "name", "when"],
                      "orders.parquet": ["id", "name", "when"]}  # fmt: skip
    assert all(d["error"] is None for d in catalog["datasets"])
    gets = [r for r in rec.s3() if r.method == "GET" and "list-type" not in r.query]
    assert len(gets) == 3
    assert all(r.headers["Range"].startswith("bytes=") for r in gets)
