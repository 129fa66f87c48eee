"""Batched deletes on every store: 1,000 keys per DeleteObjects, per-key errors kept apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_s3connect.deletes import BatchDelete
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.objects import ObjectInfo
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer
from tests.support.stores import Store


def _hook(store: Store, bucket: str, monkeypatch: pytest.MonkeyPatch) -> S3ConnectHook:
    monkeypatch.setenv("AIRFLOW_CONN_DEL", json.dumps(store.conn(bucket)))
    return S3ConnectHook(s3connect_conn_id="del")


def test_1001_listed_keys_are_deleted_in_two_requests(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = store.new_bucket("s3c-del")
    names = [f"many/{i:04d}" for i in range(1001)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: store.admin.put_object(Bucket=bucket, Key=key, Body=b"."), names))
    client = _hook(store, bucket, monkeypatch).get_conn()
    listed = [entry for entry in Lister(client, bucket, ListQuery(base="many/")) if isinstance(entry, ObjectInfo)]
    delete = BatchDelete(client, bucket, if_match=False)
    deleted = list(delete.run(listed))
    assert (len(deleted), delete.requests, delete.failed) == (1001, 2, [])
    assert store.admin.list_objects_v2(Bucket=bucket, Prefix="many/")["KeyCount"] == 0


def test_named_keys_and_a_missing_one_are_one_request(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = store.new_bucket("s3c-del")
    store.admin.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    delete = BatchDelete(_hook(store, bucket, monkeypatch).get_conn(), bucket)
    assert list(delete.run(["a.txt", "never-there.txt"])) == ["a.txt", "never-there.txt"]  # S3 deletes idempotently
    assert delete.requests == 1
    assert store.admin.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_with_if_match_each_key_carries_its_listed_etag(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    """What AWS needs to keep an object replaced since the listing. moto (like RGW) ignores
    the field, which is why the operator sends it to AWS only: here the bytes on the wire
    are what is checked."""
    admin = moto.admin_client("s3")
    for key in ("c/one.txt", "c/two.txt"):
        admin.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    conn_id = make_conn("cond", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION)
    client = S3ConnectHook(s3connect_conn_id=conn_id).get_conn()
    listed = [e for e in Lister(client, BUCKET, ListQuery(base="c/")) if isinstance(e, ObjectInfo)]
    with moto.recording() as rec:
        assert len(list(BatchDelete(client, BUCKET, if_match=True).run(listed))) == 2
    (request,) = [r for r in rec.s3() if "delete" in r.query]
    body = request.body.decode()
    for info in listed:
        etag = info.etag.replace('"', "&quot;")
        assert (
            f"<Key>{info.key}</Key><ETag>{etag}</ETag>" in body
            or f"<Key>{info.key}</Key><ETag>{info.etag}</ETag>" in body
        )
