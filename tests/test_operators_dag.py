"""Put, Get, List, sensor and catalog in real DAG runs (dag.test, SQLite), on every S3 server:
moto, Ceph RGW over HTTP and Ceph RGW over HTTPS."""

from __future__ import annotations

import datetime
import gzip
import io
import json
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from airflow_s3connect.macros import NAMESPACE
from tests.conftest import BUCKET, REGION, running_store
from tests.support.dag_runner import RunResult, run_dag, write_dag
from tests.support.moto_server import MotoServer
from tests.support.stores import STORES, Store

ROUNDTRIP = """
import pendulum
from airflow.sdk import DAG, AssetAlias
from airflow_s3connect.operators import (
    S3CatalogOperator, S3CopyObjectsOperator, S3DeleteObjectsOperator, S3GetObjectOperator, S3ListObjectsOperator,
    S3PutObjectOperator,
)
from airflow_s3connect.sensors import S3ObjectSensor

RECORDS = [{"id": i, "name": f"row {i}", "amount": i * 1.5} for i in range(1000)]

with DAG("DAG_ID", schedule=None, start_date=pendulum.datetime(2025, 4, 1, tz="UTC"),
         params={"tenant": "acme"}) as dag:
    conn = dict(s3connect_conn_id="rt")
    put_tree = S3PutObjectOperator(task_id="put_tree", source="TREE", key="tree/", outlets=[AssetAlias("tree")], **conn)
    for number, name in enumerate(("hash#one.csv", "hash#two.csv", "what?.csv", "100%.csv")):
        S3PutObjectOperator(task_id=f"put_odd_{number}", data=name, key=f"odd/{name}",
                            outlets=[AssetAlias("odd")], **conn)
    get_tree = S3GetObjectOperator(task_id="get_tree", prefix="tree/", local_dir="OUT/tree", **conn)
    list_csv = S3ListObjectsOperator(task_id="list_csv", prefix="tree/", pattern="**/*.csv", **conn)
    fetch = S3GetObjectOperator.partial(task_id="fetch_each", local_dir="OUT/each", **conn).expand(key=list_csv.output)
    listed = S3ListObjectsOperator(task_id="list_manifest", prefix="tree/", include_metadata=True,
                                   results="manifest", manifest_key="manifests/{run_id}.jsonl", **conn)
    from_manifest = S3GetObjectOperator(task_id="get_manifest", manifest=listed.output, local_dir="OUT/manifest",
                                        results="manifest", **conn)
    batches = S3ListObjectsOperator(task_id="list_batches", prefix="tree/d0/", results="batches", batch_size=40,
                                    **conn)
    get_batch = S3GetObjectOperator.partial(task_id="get_batch", local_dir="OUT/batches", **conn).expand(
        manifest=batches.output)
    refused = S3GetObjectOperator(task_id="get_refused", prefix="tree/", local_dir="OUT/refused",
                                  max_xcom_objects=499, retries=0, **conn)
    put_tree >> [get_tree, list_csv, listed, batches, refused]
    S3CopyObjectsOperator(task_id="copy_manifest", manifest=listed.output, target_key="from-manifest/{relative_path}",
                          results="manifest", **conn)
    purge = S3ListObjectsOperator(task_id="list_purge", prefix="purge/", include_metadata=True, results="manifest",
                                  **conn)
    S3DeleteObjectsOperator(task_id="delete_manifest", manifest=purge.output, **conn)
    copy_server = S3CopyObjectsOperator(task_id="copy_server", source_prefix="tree/d1/", skip_unchanged=True,
                                        target_key="copies/{relative_path}", **conn)
    copy_stream = S3CopyObjectsOperator(task_id="copy_stream", source_conn_id="rt", s3connect_conn_id="rt_mirror",
                                        source_prefix="tree/d2/", overwrite=WHERE_KEPT)
    put_tree >> [copy_server, copy_stream]

    csv_gz = S3PutObjectOperator(task_id="export_csv", records=RECORDS, format="csv.gz", overwrite=WHERE_KEPT,
        key="exports/{tenant}/{stream_name}/{date}/{connection_run_id}.{extension}", stream_name="orders", **conn)
    parquet = S3PutObjectOperator(task_id="export_parquet", format="parquet",
        records=lambda context, **_: iter(RECORDS),
        key="exports/{tenant}/{stream_name}/{date}/{connection_run_id}.{extension}", stream_name="orders", **conn)
    note = S3PutObjectOperator(task_id="put_note", data="hello {{ ds }}", key="notes/{tenant}.txt",
                               metadata={"run": "{{ run_id }}"}, **conn)
    read = S3GetObjectOperator(task_id="read_note", key="notes/{tenant}.txt", read_into_xcom=True, **conn)
    note >> read
    mail = S3PutObjectOperator(task_id="put_mail", data="mail {{ ds }}", key="mail/note.txt", **conn)
    mail >> S3GetObjectOperator(task_id="read_and_archive", key="mail/note.txt", read_into_xcom=True,
                                after="archive", archive_prefix="read/", **conn)

    archive = S3GetObjectOperator(task_id="archive_inbox", prefix="inbox/", pattern="*.json", local_dir="OUT/inbox",
                                  after="archive", archive_prefix="processed/{ds_nodash}", **conn)
    drop = S3GetObjectOperator(task_id="delete_drop", prefix="drop/", local_dir="OUT/drop", after="delete", **conn)
    S3GetObjectOperator(task_id="get_skipping", prefix="odd-names/", local_dir="OUT/odd", on_invalid_key="skip", **conn)

    parts = dict(multipart_threshold=5 * 2**20, chunk_size=5 * 2**20)
    put_big = S3PutObjectOperator(task_id="put_big", source="BIG", key="big/blob.bin", **parts, **conn)
    get_big = S3GetObjectOperator(task_id="get_big", key="big/blob.bin", local_dir="OUT/big", **parts, **conn)
    put_big >> get_big
    once = S3PutObjectOperator(task_id="put_once", data="first", key="once/{ds_nodash}.txt", overwrite=False, **conn)
    once_big = S3PutObjectOperator(task_id="put_once_big", source="BIG", key="once/big.bin", overwrite=False,
                                   **parts, **conn)
    sense = S3ObjectSensor(task_id="sense_note", key="notes/{tenant}.txt", mode="poke", poke_interval=1,
                           timeout=60, **conn)
    note >> sense
    preview = S3DeleteObjectsOperator(task_id="delete_preview", prefix="trash/", pattern="*.tmp", dry_run=True,
                                      **conn)
    purge = S3DeleteObjectsOperator(task_id="delete_tmp", prefix="trash/", pattern="*.tmp", **conn)
    named = S3DeleteObjectsOperator(task_id="delete_named", keys=["trash/keep.txt", "trash/never-there"], **conn)
    preview >> purge >> named
    S3CatalogOperator(task_id="catalog", prefix="datasource/", patterns=["{YYYYMMDD}/file_{YYYYMM}_{zz}.csv"],
                      catalog_key="catalogs/{ds_nodash}/datasource.json", **conn)
"""


def make_tree(root: Path, count: int = 500) -> dict[str, bytes]:
    """A nested tree of ``count`` files of random sizes (0 B to 40 KiB); 6 of them are CSV."""
    rng = random.Random(7)
    files: dict[str, bytes] = {}
    for i in range(count):
        depth = i % 4
        parts = [f"d{(i // 7) % 5}", f"s{(i // 3) % 4}", f"x{i % 3}"][:depth]
        name = f"f{i:03d}.csv" if i % 90 == 0 else f"f{i:03d}.bin"
        relative = "/".join([*parts, name])
        files[relative] = rng.randbytes(rng.choice([0, 1, 100, 5000, 40_000]))
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(files[relative])
    return files


@dataclass
class Roundtrip:
    result: RunResult
    files: dict[str, bytes]
    out: Path
    store: Store
    bucket: str
    big: bytes

    @property
    def dag_id(self) -> str:
        return f"s3c_roundtrip_{self.store.name.replace('-', '_')}"


@pytest.fixture(scope="module", params=STORES)
def roundtrip(
    request: pytest.FixtureRequest, moto_plain: MotoServer, airflow_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Roundtrip:
    store = running_store(request, request.param, moto_plain)
    if store.name == "moto":
        moto_plain.reset()
        store.admin.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        bucket = BUCKET
    else:
        bucket = store.new_bucket()
    admin = store.admin
    for i in range(3):
        admin.put_object(Bucket=bucket, Key=f"inbox/{i}.json", Body=json.dumps({"i": i}).encode())
    admin.put_object(Bucket=bucket, Key="inbox/skip.txt", Body=b"not matched")
    admin.put_object(Bucket=bucket, Key="drop/a.txt", Body=b"a")
    for name in ("p1.txt", "sub/p2.txt"):
        admin.put_object(Bucket=bucket, Key=f"purge/{name}", Body=name.encode())
    admin.put_object(Bucket=bucket, Key="odd-names/fine.txt", Body=b"fine")
    admin.put_object(Bucket=bucket, Key="odd-names/back\\slash.txt", Body=b"cannot be a local path")
    for name in ("a.tmp", "b.tmp", "keep.txt", "sub/c.tmp"):
        admin.put_object(Bucket=bucket, Key=f"trash/{name}", Body=name.encode())
    admin.put_object(Bucket=bucket, Key="datasource/20250114/file_202501_aa.csv", Body=b"id,name\n1,a\n")
    base = tmp_path_factory.mktemp("roundtrip")
    files = make_tree(base / "tree-src")
    big = random.Random(11).randbytes(12 * 2**20 + 12345)
    (base / "big.bin").write_bytes(big)
    dag_id = f"s3c_roundtrip_{store.name.replace('-', '_')}"
    source = (
        ROUNDTRIP.replace("TREE", str(base / "tree-src"))
        .replace("OUT", str(base / "out"))
        .replace("BIG", str(base / "big.bin"))
        .replace("DAG_ID", dag_id)
        # overwrite=False where the store keeps it; put_once* ask for it on every store.
        .replace("WHERE_KEPT", str(not store.create_only))
    )
    path = write_dag(dag_id, source)
    os.environ["AIRFLOW_CONN_RT"] = json.dumps(store.conn(bucket))
    os.environ["AIRFLOW_CONN_RT_MIRROR"] = json.dumps(store.conn(bucket, path_prefix="mirror"))
    try:
        result = run_dag(path, dag_id, datetime.datetime(2025, 4, 14, tzinfo=datetime.timezone.utc))
    finally:
        del os.environ["AIRFLOW_CONN_RT"], os.environ["AIRFLOW_CONN_RT_MIRROR"]
    return Roundtrip(result, files, base / "out", store, bucket, big)


def test_every_task_succeeded_but_the_one_refused(roundtrip: Roundtrip) -> None:
    result, store = roundtrip.result, roundtrip.store
    refused = {("get_refused", -1): "failed"}
    if not store.create_only:  # overwrite=False refused before writing
        refused |= {("put_once", -1): "failed", ("put_once_big", -1): "failed"}
        assert store.admin.list_objects_v2(Bucket=roundtrip.bucket, Prefix="once/").get("KeyCount") == 0
    assert {k: v for k, v in result.task_states.items() if v != "success"} == refused


def test_500_file_tree_round_trips_byte_for_byte(roundtrip: Roundtrip) -> None:
    result, files, out, bucket = roundtrip.result, roundtrip.files, roundtrip.out, roundtrip.bucket
    put = result.value("put_tree")
    assert len(put) == 500
    assert sorted(p["key"] for p in put) == sorted(f"tree/{name}" for name in files)
    assert all(p["bucket"] == bucket and p["etag"] for p in put)
    got = {str(p.relative_to(out / "tree")): p.read_bytes() for p in (out / "tree").rglob("*") if p.is_file()}
    assert got == files
    entries = result.value("get_tree")
    assert len(entries) == 500
    assert {e["local_path"] for e in entries} == {str(out / "tree" / name) for name in files}


def test_get_expanded_over_list_output(roundtrip: Roundtrip) -> None:
    result, files, out = roundtrip.result, roundtrip.files, roundtrip.out
    keys = result.value("list_csv")
    csv_names = sorted(name for name in files if name.endswith(".csv"))
    assert keys == [f"tree/{name}" for name in csv_names]
    mapped = {k: v for k, v in result.xcom.items() if k[0] == "fetch_each"}
    assert len(mapped) == len(csv_names) == 6
    for name in csv_names:  # each at its key's path: same-named files in two folders stay two
        assert (out / "each" / "tree" / name).read_bytes() == files[name]


def test_a_manifest_is_written_when_asked_and_read_by_get(roundtrip: Roundtrip) -> None:
    result, files, bucket, out = roundtrip.result, roundtrip.files, roundtrip.bucket, roundtrip.out
    listing = result.value("list_manifest")
    run_id = result.run_id.replace(":", "-").replace("+", "-")
    total = sum(len(b) for b in files.values())
    assert listing == {"manifest": f"s3://{bucket}/manifests/{run_id}.jsonl", "count": 500, "bytes": total}
    # One ListObjectsV2 page, one PutObject of the manifest.
    assert result.summary("list_manifest") == {"count": 500, "bytes": total, "truncated": False, "requests": 2}
    body = roundtrip.store.admin.get_object(Bucket=bucket, Key=f"manifests/{run_id}.jsonl")["Body"].read()
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert {line["key"] for line in lines} == {f"tree/{name}" for name in files}
    assert len(lines) == 500
    assert all(set(line) >= {"key", "uri", "size", "etag", "last_modified"} for line in lines)
    # Get read that manifest: every file at its key's path, and its own manifest in S3 by default.
    root = out / "manifest" / "tree"
    assert {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} == files
    key = (
        f".s3connect/manifests/{roundtrip.dag_id}/{re.sub(r'[^A-Za-z0-9_.=-]', '-', result.run_id)}/get_manifest.jsonl"
    )
    assert result.value("get_manifest") == {"manifest": f"s3://{bucket}/{key}", "count": 500, "bytes": total}
    written = roundtrip.store.admin.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    assert sorted(json.loads(line)["key"] for line in written) == sorted(f"tree/{name}" for name in files)
    # 1 GET of the manifest, 1 GET per object (none above the multipart threshold), 1 PUT of its manifest.
    assert result.summary("get_manifest")["requests"] == 1 + 500 + 1


def test_copy_and_delete_take_a_manifest(roundtrip: Roundtrip) -> None:
    result, files, bucket, admin = roundtrip.result, roundtrip.files, roundtrip.bucket, roundtrip.store.admin
    copied = result.value("copy_manifest")
    assert (copied["count"], copied["bytes"]) == (500, sum(len(b) for b in files.values()))
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="from-manifest/tree/")
    keys = {item["Key"] for page in pages for item in page.get("Contents", [])}
    assert keys == {f"from-manifest/tree/{name}" for name in files}
    sample = next(name for name, data in files.items() if len(data) == 40_000)
    assert admin.get_object(Bucket=bucket, Key=f"from-manifest/tree/{sample}")["Body"].read() == files[sample]
    # Entries carry size and ETag: one CopyObject each, no HeadObject (+ the manifests' GET and PUT).
    assert result.summary("copy_manifest")["requests"] == 500 + 2
    deleted = result.value("delete_manifest")
    assert sorted(d["key"] for d in deleted) == ["purge/p1.txt", "purge/sub/p2.txt"]
    assert admin.list_objects_v2(Bucket=bucket, Prefix="purge/").get("KeyCount") == 0


def test_batches_map_one_get_per_batch(roundtrip: Roundtrip) -> None:
    result, files, bucket, _out = roundtrip.result, roundtrip.files, roundtrip.bucket, roundtrip.out
    under_d0 = {name: data for name, data in files.items() if name.startswith("d0/")}
    batches = result.value("list_batches")
    assert [b["start"] for b in batches] == list(range(0, len(under_d0), 40))
    assert [b["count"] for b in batches] == [min(40, len(under_d0) - s) for s in range(0, len(under_d0), 40)]
    assert {b["manifest"] for b in batches} == {batches[0]["manifest"]}
    assert batches[0]["manifest"].startswith(f"s3://{bucket}/.s3connect/manifests/")
    fetched = [entry for index in range(len(batches)) for entry in result.value("get_batch", index)]
    assert sorted(e["key"] for e in fetched) == sorted(f"tree/{name}" for name in under_d0)
    assert all(Path(e["local_path"]).read_bytes() == files[e["key"][5:]] for e in fetched)
    assert result.summary("get_batch", 0)["count"] == 40


def test_too_many_results_for_a_list_are_refused_before_any_download(roundtrip: Roundtrip) -> None:
    assert roundtrip.result.task_states[("get_refused", -1)] == "failed"
    assert not (roundtrip.out / "refused").exists()


def test_records_exported_with_seed_macros(roundtrip: Roundtrip) -> None:
    import uuid

    import pyarrow.parquet as pq

    result, bucket = roundtrip.result, roundtrip.bucket
    run_uuid = uuid.uuid5(NAMESPACE, f"{roundtrip.dag_id}\x1f{result.run_id}")
    (csv_entry,) = result.value("export_csv")
    (parquet_entry,) = result.value("export_parquet")
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y_%m_%d")
    assert csv_entry["key"] == f"exports/acme/orders/{day}/{run_uuid}.csv.gz"
    assert parquet_entry["key"] == f"exports/acme/orders/{day}/{run_uuid}.parquet"
    admin = roundtrip.store.admin
    obj = admin.get_object(Bucket=bucket, Key=csv_entry["key"])
    assert obj["ContentType"] == "application/gzip"
    compressed = obj["Body"].read()
    lines = gzip.decompress(compressed).decode().splitlines()
    # Read by the tools people use, as S3 returned it.
    local = Path(os.environ["AIRFLOW_HOME"]) / f"{roundtrip.dag_id}.csv.gz"
    local.write_bytes(compressed)
    assert duckdb.sql(f"SELECT sum(amount) FROM read_csv('{local}', header=true)").fetchall() == [(749250.0,)]
    assert pl.read_csv(gzip.decompress(compressed))["name"][999] == "row 999"
    assert lines[0] == "id,name,amount"
    assert lines[1:3] == ["0,row 0,0.0", "1,row 1,1.5"]
    assert len(lines) == 1001
    table = pq.read_table(io.BytesIO(admin.get_object(Bucket=bucket, Key=parquet_entry["key"])["Body"].read()))
    assert table.num_rows == 1000
    assert table.column("name")[999].as_py() == "row 999"


def test_data_put_and_read_into_xcom(roundtrip: Roundtrip) -> None:
    result = roundtrip.result
    assert result.value("read_note") == "hello 2025-04-14"
    head = roundtrip.store.admin.head_object(Bucket=roundtrip.bucket, Key="notes/acme.txt")
    assert head["Metadata"] == {"run": result.run_id}
    assert head["ContentType"] == "text/plain"


def test_get_skips_keys_that_cannot_be_local_paths_when_asked(roundtrip: Roundtrip) -> None:
    got = roundtrip.result.value("get_skipping")
    assert [g["key"] for g in got] == ["odd-names/fine.txt"]
    assert sorted(p.name for p in (roundtrip.out / "odd").iterdir()) == ["fine.txt"]


def test_read_into_xcom_then_archive(roundtrip: Roundtrip) -> None:
    admin, bucket = roundtrip.store.admin, roundtrip.bucket
    assert roundtrip.result.value("read_and_archive") == "mail 2025-04-14"
    assert admin.list_objects_v2(Bucket=bucket, Prefix="mail/").get("KeyCount") == 0
    assert admin.get_object(Bucket=bucket, Key="read/note.txt")["Body"].read() == b"mail 2025-04-14"


def test_copy_server_side_in_one_connection_and_streamed_between_two(roundtrip: Roundtrip) -> None:
    result, files, admin, bucket = roundtrip.result, roundtrip.files, roundtrip.store.admin, roundtrip.bucket
    for task, source, target in (("copy_server", "d1/", "copies/"), ("copy_stream", "d2/", "mirror/")):
        expected = {name[len(source) :]: body for name, body in files.items() if name.startswith(source)}
        done = result.value(task)
        assert {d["method"] for d in done} == {"server" if task == "copy_server" else "stream"}
        assert len(done) == len(expected) > 0
        for entry in done:
            relative = entry["uri"].split(f"s3://{bucket}/{target}", 1)[1]
            assert admin.get_object(Bucket=bucket, Key=target + relative)["Body"].read() == expected[relative]
        if task == "copy_stream":  # keys relative to the target connection's path_prefix
            assert all(not d["key"].startswith("mirror/") for d in done)


def test_delete_objects_previews_then_deletes_what_matches(roundtrip: Roundtrip) -> None:
    result, admin, bucket = roundtrip.result, roundtrip.store.admin, roundtrip.bucket
    preview = result.value("delete_preview")
    assert [e["key"] for e in preview] == ["trash/a.tmp", "trash/b.tmp"]  # * stays within a segment
    assert all(e["etag"] and e["size"] == 5 for e in preview)
    assert result.value("delete_tmp") == preview  # one shape: what was deleted, as listed
    named = result.value("delete_named")
    assert [(e["key"], e["size"]) for e in named] == [("trash/keep.txt", None), ("trash/never-there", None)]
    left = [o["Key"] for o in admin.list_objects_v2(Bucket=bucket, Prefix="trash/").get("Contents", [])]
    assert left == ["trash/sub/c.tmp"]


def test_archive_and_delete_after_download(roundtrip: Roundtrip) -> None:
    out, admin, bucket = roundtrip.out, roundtrip.store.admin, roundtrip.bucket
    keys = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket, Prefix="inbox/").get("Contents", []))
    assert keys == ["inbox/skip.txt"]  # the unmatched object stays
    archived = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket, Prefix="processed/")["Contents"])
    assert archived == [f"processed/20250414/{i}.json" for i in range(3)]
    assert json.loads((out / "inbox" / "2.json").read_text()) == {"i": 2}
    assert admin.list_objects_v2(Bucket=bucket, Prefix="drop/").get("KeyCount") == 0
    assert (out / "drop" / "a.txt").read_text() == "a"


def test_multipart_put_and_ranged_get_round_trip(roundtrip: Roundtrip) -> None:
    result, out, admin, bucket = roundtrip.result, roundtrip.out, roundtrip.store.admin, roundtrip.bucket
    (put,) = result.value("put_big")
    assert put["size"] == len(roundtrip.big)
    assert put["etag"] == admin.head_object(Bucket=bucket, Key="big/blob.bin")["ETag"]  # RGW answers none
    assert admin.get_object(Bucket=bucket, Key="big/blob.bin")["Body"].read() == roundtrip.big
    assert (out / "big" / "big" / "blob.bin").read_bytes() == roundtrip.big  # the key keeps its path
    if roundtrip.store.create_only:
        (once_big,) = result.value("put_once_big")
        assert admin.get_object(Bucket=bucket, Key="once/big.bin")["Body"].read() == roundtrip.big
        assert once_big["size"] == len(roundtrip.big)
    uploads = admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []  # nothing left half-written


def test_sensor_and_catalog(roundtrip: Roundtrip) -> None:
    admin, bucket = roundtrip.store.admin, roundtrip.bucket
    assert roundtrip.result.task_states[("sense_note", -1)] == "success"
    catalog = json.loads(admin.get_object(Bucket=bucket, Key="catalogs/20250414/datasource.json")["Body"].read())
    assert "id" in json.dumps(catalog)
    assert "name" in json.dumps(catalog)


def test_asset_events_for_every_object_written(roundtrip: Roundtrip) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    result, files, bucket = roundtrip.result, roundtrip.files, roundtrip.bucket
    with create_session() as session:
        uris = [
            uri
            for (uri,) in session.query(AssetModel.uri)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetEvent.source_run_id == result.run_id, AssetEvent.source_task_id == "put_tree")
        ]
    assert sorted(uris) == sorted(f"s3://{bucket}/tree/{name}" for name in files)


def test_asset_events_name_keys_with_uri_characters_exactly(roundtrip: Roundtrip) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    result, bucket = roundtrip.result, roundtrip.bucket
    with create_session() as session:
        uris = sorted(
            uri
            for (uri,) in session.query(AssetModel.uri)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetEvent.source_run_id == result.run_id, AssetEvent.source_task_id.like("put_odd_%"))
        )
    encoded = ["100%25.csv", "hash%23one.csv", "hash%23two.csv", "what%3F.csv"]
    assert uris == [f"s3://{bucket}/odd/{name}" for name in encoded]


# --------------------------------------------------------------------------- incremental modes
INCREMENTAL = """
import datetime
import pendulum
from airflow.sdk import DAG, DeltaDataIntervalTimetable
from airflow_s3connect.operators import S3GetObjectOperator

with DAG("s3c_interval", schedule=DeltaDataIntervalTimetable(datetime.timedelta(seconds=1)),
         start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False) as interval_dag:
    S3GetObjectOperator(task_id="get", prefix="inc/", incremental="interval", local_dir="OUT/{{ run_id }}",
                        s3connect_conn_id="inc")

with DAG("s3c_watermark", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as watermark_dag:
    S3GetObjectOperator(task_id="get", prefix="wm/", incremental="watermark", local_dir="OUT/wm",
                        s3connect_conn_id="inc")
"""


def _next_second() -> None:
    time.sleep(1.05 - (time.time() % 1))


@pytest.fixture(scope="module")
def incremental(moto_plain: MotoServer, airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("incremental")
    path = write_dag("s3c_incremental", INCREMENTAL.replace("OUT", str(base)))
    conn = {"conn_type": "s3connect", "login": "AKIAEXAMPLE", "password": "secret",
            "extra": {"endpoint_url": moto_plain.url, "region_name": REGION, "bucket": BUCKET}}  # fmt: skip
    os.environ["AIRFLOW_CONN_INC"] = json.dumps(conn)
    moto_plain.reset()
    admin = moto_plain.admin_client("s3")
    admin.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    try:
        yield path, admin
    finally:
        del os.environ["AIRFLOW_CONN_INC"]


def test_interval_mode_three_runs_and_a_backfill(incremental: Any) -> None:
    """Batches A-D land in four distinct seconds; 1-second intervals select exactly one each.

    Runs for B, C, D in order, then a backfill for A after them: each gets its batch only.
    """
    path, admin = incremental
    seconds: dict[str, datetime.datetime] = {}
    for batch in "ABCD":
        _next_second()
        for i in range(3):
            admin.put_object(Bucket=BUCKET, Key=f"inc/{batch}{i}.txt", Body=batch.encode())
        listed = admin.list_objects_v2(Bucket=BUCKET, Prefix=f"inc/{batch}")["Contents"]
        assert len({o["LastModified"] for o in listed}) == 1, "a batch straddled a second; rerun"
        seconds[batch] = listed[0]["LastModified"]
    got = {}
    for batch in "BCDA":
        end = seconds[batch] + datetime.timedelta(seconds=1)
        result = run_dag(path, "s3c_interval", end)
        got[batch] = sorted(e["key"] for e in result.value("get"))
    assert got == {b: [f"inc/{b}{i}.txt" for i in range(3)] for b in "ABCD"}


def test_watermark_mode_only_new_objects(incremental: Any) -> None:
    path, admin = incremental
    start = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)
    admin.put_object(Bucket=BUCKET, Key="wm/one.txt", Body=b"1")
    first = run_dag(path, "s3c_watermark", start)
    admin.put_object(Bucket=BUCKET, Key="wm/two.txt", Body=b"2")
    admin.put_object(Bucket=BUCKET, Key="wm/three.txt", Body=b"3")
    second = run_dag(path, "s3c_watermark", start + datetime.timedelta(hours=1))
    third = run_dag(path, "s3c_watermark", start + datetime.timedelta(hours=2))
    assert [e["key"] for e in first.value("get")] == ["wm/one.txt"]
    assert sorted(e["key"] for e in second.value("get")) == ["wm/three.txt", "wm/two.txt"]
    assert third.value("get") == []


def test_openlineage_datasets(roundtrip: Roundtrip, airflow_home: Path) -> None:
    result, bucket = roundtrip.result, roundtrip.bucket
    events = [json.loads(line) for line in (airflow_home / "openlineage.jsonl").read_text().splitlines()]
    complete = {
        e["job"]["name"].rpartition(".")[2]: e
        for e in events
        if e.get("eventType") == "COMPLETE" and e["job"]["name"].startswith(f"{roundtrip.dag_id}.")
    }

    def names(task: str, side: str) -> list[tuple[str, str]]:
        return [(d["namespace"], d["name"]) for d in complete[task][side]]

    namespace = f"s3://{bucket}"
    assert names("get_tree", "inputs") == [(namespace, "tree/")]  # 500 objects: their prefix stands for them
    assert names("put_tree", "outputs") == [(namespace, "tree/")]
    assert names("read_note", "inputs") == [(namespace, "notes/acme.txt")]
    (csv_entry,) = result.value("export_csv")
    assert names("export_csv", "outputs") == [(namespace, csv_entry["key"])]
    assert names("list_csv", "inputs") == [(namespace, "tree/")]


def test_console_link_only_on_aws(roundtrip: Roundtrip) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from airflow_s3connect.links import CONSOLE_XCOM_KEY, console_url

    result = roundtrip.result
    # Every operator pushes it (Airflow logs an error after a task whose link XCom is missing).
    for task_id in ("get_tree", "copy_server", "delete_preview", "delete_tmp", "read_note"):
        with create_session() as session:
            row = (
                session.query(XComModel)
                .filter_by(dag_id=roundtrip.dag_id, run_id=result.run_id, task_id=task_id, key=CONSOLE_XCOM_KEY)
                .one()
            )
        assert row.value == {}, task_id  # a custom endpoint: the AWS console knows nothing of it
    assert console_url("my-bucket", "in/2025 04/", "eu-west-1") == (
        "https://s3.console.aws.amazon.com/s3/buckets/my-bucket?prefix=in%2F2025+04%2F&showversions=false&region=eu-west-1"
    )
