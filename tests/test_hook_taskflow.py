"""The hook's TaskFlow calls on every store: what they write is what they read back, with
the scope holding, and presigned URLs used by plain HTTP."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path

import pytest

from airflow_s3connect.errors import S3ConnectError, ScopeError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from tests.support.stores import Store

ROWS = [{"id": 1, "name": "a, b"}, {"id": 2, "name": "line\nbreak"}]


@pytest.fixture
def hook(store: Store, monkeypatch: pytest.MonkeyPatch) -> tuple[S3ConnectHook, Store, str]:
    bucket = store.new_bucket("s3c-tf")
    monkeypatch.setenv("AIRFLOW_CONN_TF", json.dumps(store.conn(bucket, path_prefix="team")))
    return S3ConnectHook(s3connect_conn_id="tf"), store, bucket


def test_upload_then_read_iterate_and_download(hook: tuple[S3ConnectHook, Store, str], tmp_path: Path) -> None:
    tf, store, bucket = hook
    written = tf.upload("notes/hello.txt", data="hello")
    assert (written["key"], written["size"]) == ("notes/hello.txt", 5)
    assert store.admin.get_object(Bucket=bucket, Key="team/notes/hello.txt")["Body"].read() == b"hello"
    for name in ("rows.csv.gz", "rows.jsonl", "rows.parquet"):
        tf.upload(f"tables/{name}", records=ROWS)
    assert tf.read("notes/hello.txt") == b"hello"
    with tf.open("notes/hello.txt") as body:
        assert body.read(2) == b"he"
    assert [i.key for i in tf.iter_objects("tables/")] == [
        f"team/tables/rows.{x}" for x in ("csv.gz", "jsonl", "parquet")
    ]
    assert list(tf.iter_records("tables/rows.jsonl")) == ROWS
    assert list(tf.iter_records("tables/rows.parquet")) == ROWS
    assert list(tf.iter_records("tables/rows.csv.gz")) == [{k: str(v) for k, v in r.items()} for r in ROWS]
    assert len(list(tf.iter_records(prefix="tables/", pattern="*.jsonl"))) == 2
    got = tf.download(tmp_path, prefix="tables/")
    assert sorted(Path(g["local_path"]).name for g in got) == ["rows.csv.gz", "rows.jsonl", "rows.parquet"]
    assert (tmp_path / "rows.jsonl").read_bytes() == store.admin.get_object(
        Bucket=bucket, Key="team/tables/rows.jsonl"
    )["Body"].read()
    with pytest.raises(S3ConnectError, match="over the XCom limit of 3"):
        tf.read("notes/hello.txt", max_bytes=3)
    with pytest.raises(ScopeError):
        tf.read("s3://another-bucket/secret.txt")


def test_copy_delete_and_overwrite_off(hook: tuple[S3ConnectHook, Store, str]) -> None:
    tf, store, bucket = hook
    for name in ("a.txt", "sub/b.txt"):
        tf.upload(f"src/{name}", data=name)
    copied = tf.copy(source_prefix="src/", target_prefix="dst")
    assert [(c["key"], c["method"]) for c in copied] == [("dst/a.txt", "server"), ("dst/sub/b.txt", "server")]
    assert tf.read("dst/sub/b.txt") == b"sub/b.txt"
    with pytest.raises(S3ConnectError, match=store.overwrite_off_refusal):
        tf.upload("dst/a.txt", data="again", overwrite=False)
    assert tf.read("dst/a.txt") == b"a.txt"
    assert tf.delete(prefix="src/") == ["src/a.txt", "src/sub/b.txt"]
    with pytest.raises(S3ConnectError, match="more than max_objects=1 objects to delete: nothing was deleted"):
        tf.delete(prefix="dst/", max_objects=1)
    assert tf.delete(["dst/a.txt"]) == ["dst/a.txt"]
    left = [o["Key"] for o in store.admin.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert [k for k in left if not k.startswith("team/.s3connect")] == ["team/dst/sub/b.txt"]


def _http(url: str, store: Store, data: bytes | None = None) -> bytes:
    context = ssl.create_default_context(cafile=store.ca_bundle) if store.ca_bundle else None
    # A binary Content-Type, as curl --upload-file sends: urllib's default (a form) makes
    # moto's server read the body as form fields.
    headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers, method="PUT" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        return bytes(answer.read())


def test_presigned_get_and_put_work_over_plain_http(hook: tuple[S3ConnectHook, Store, str]) -> None:
    tf, store, bucket = hook
    tf.upload("shared/report.txt", data="for the partner")
    assert _http(tf.presign("shared/report.txt"), store) == b"for the partner"
    url = tf.presign("inbox/upload.bin", method="put", expires_in=600)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url  # SigV4: the legacy query signature is refused by many
    assert "X-Amz-Expires=600" in url
    _http(url, store, b"from outside")
    assert store.admin.get_object(Bucket=bucket, Key="team/inbox/upload.bin")["Body"].read() == b"from outside"
    with pytest.raises(S3ConnectError, match="1 to 604800 seconds"):
        tf.presign("shared/report.txt", expires_in=8 * 24 * 3600)
    with pytest.raises(ScopeError):
        tf.presign("s3://another-bucket/elsewhere.txt")


def test_buckets_on_a_connection_without_one(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fields = store.conn("unused")
    del fields["extra"]["bucket"]
    monkeypatch.setenv("AIRFLOW_CONN_TF_OPEN", json.dumps(fields))
    open_hook = S3ConnectHook(s3connect_conn_id="tf_open")
    name = f"s3c-made-{store.name.replace('-', '')}"
    open_hook.create_bucket(name)
    assert open_hook.bucket_region(name) == store.location
    scoped = store.new_bucket("s3c-tf")
    monkeypatch.setenv("AIRFLOW_CONN_TF_SCOPED", json.dumps(store.conn(scoped)))
    with pytest.raises(ScopeError):
        S3ConnectHook(s3connect_conn_id="tf_scoped").create_bucket(f"{name}-2")
