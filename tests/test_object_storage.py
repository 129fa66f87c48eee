"""``ObjectStoragePath("s3connect://…", conn_id=…)`` on every store: Airflow's own path
API through the provider's filesystem, inside the scope and refused outside it."""

from __future__ import annotations

import json
import random

import pytest

from airflow_s3connect.errors import ScopeError
from tests.support.stores import Store


@pytest.fixture
def scoped(store: Store, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, str, str]:
    """A bucket, and a connection scoped to its team/ (a fresh id: Airflow caches each
    connection's filesystem for the life of the process)."""
    bucket = store.new_bucket("s3c-osp")
    conn_id = f"osp_{bucket[-12:]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(store.conn(bucket, path_prefix="team")))
    return store, bucket, conn_id


def test_read_write_list_copy_and_delete_inside_the_scope(scoped: tuple[Store, str, str]) -> None:
    from airflow.sdk import ObjectStoragePath

    store, bucket, conn_id = scoped
    root = ObjectStoragePath(f"s3connect://{bucket}/team/", conn_id=conn_id)
    (root / "notes" / "a.txt").write_text("alpha")
    big = random.Random(4).randbytes(9 * 1024 * 1024 + 5)
    with (root / "blobs" / "big.bin").open("wb") as handle:
        for start in range(0, len(big), 1024 * 1024):
            handle.write(big[start : start + 1024 * 1024])
    assert store.admin.get_object(Bucket=bucket, Key="team/notes/a.txt")["Body"].read() == b"alpha"
    assert store.admin.head_object(Bucket=bucket, Key="team/notes/a.txt")["ContentType"] == "text/plain"
    assert (root / "notes" / "a.txt").read_text() == "alpha"
    assert (root / "blobs" / "big.bin").read_bytes() == big
    with (root / "blobs" / "big.bin").open("rb") as handle:
        handle.seek(5 * 1024 * 1024)
        assert handle.read(10) == big[5 * 1024 * 1024 : 5 * 1024 * 1024 + 10]
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "notes"]
    assert (root / "notes").is_dir()
    assert (root / "notes" / "a.txt").stat().st_size == 5
    assert not (root / "missing.txt").exists()
    (root / "notes" / "a.txt").copy(root / "copies" / "a.txt")
    assert (root / "copies" / "a.txt").read_text() == "alpha"
    (root / "notes" / "a.txt").unlink()
    assert sorted(k["Key"] for k in store.admin.list_objects_v2(Bucket=bucket)["Contents"]) == [
        "team/blobs/big.bin",
        "team/copies/a.txt",
    ]


def test_paths_outside_the_scope_are_refused_before_any_request(scoped: tuple[Store, str, str]) -> None:
    from airflow.sdk import ObjectStoragePath

    store, bucket, conn_id = scoped
    store.admin.put_object(Bucket=bucket, Key="other/secret.txt", Body=b"not yours")
    for outside in (f"s3connect://{bucket}/other/secret.txt", "s3connect://another-bucket/team/x.txt"):
        with pytest.raises(ScopeError):
            ObjectStoragePath(outside, conn_id=conn_id).read_text()
        with pytest.raises(ScopeError):
            ObjectStoragePath(outside, conn_id=conn_id).write_text("overwritten")
    with pytest.raises(ScopeError):
        list(ObjectStoragePath(f"s3connect://{bucket}/", conn_id=conn_id).iterdir())
    assert store.admin.get_object(Bucket=bucket, Key="other/secret.txt")["Body"].read() == b"not yours"


def test_create_only_writes_through_get_fs_storage_options(scoped: tuple[Store, str, str]) -> None:
    """``overwrite=False`` as a storage option of ``get_fs`` (Airflow 3.3's ObjectStoragePath
    does not forward storage options to a provider's ``get_fs``)."""
    from airflow_s3connect.errors import ConditionalWriteUnsupportedError, KeyExistsError
    from airflow_s3connect.hooks.fs import get_fs

    store, bucket, conn_id = scoped
    fs = get_fs(conn_id, {"overwrite": False})
    if not store.create_only:
        with pytest.raises(ConditionalWriteUnsupportedError, match="nothing was written"):
            fs.pipe_file(f"{bucket}/team/once.txt", b"first")
        assert not store.admin.list_objects_v2(Bucket=bucket).get("Contents")
    else:
        fs.pipe_file(f"{bucket}/team/once.txt", b"first")
        with pytest.raises(KeyExistsError):
            fs.pipe_file(f"{bucket}/team/once.txt", b"second")
        assert fs.cat_file(f"{bucket}/team/once.txt") == b"first"
    with pytest.raises(ValueError, match="takes 'conn_id' and 'overwrite'"):
        get_fs(conn_id, {"key": "AKIA…"})
