"""Reads of one version and of archived objects, through every door that reads.

Versions run on every store that keeps them (moto, Ceph RGW over HTTP and HTTPS); Swift's
s3api here keeps none, and its refusal of ``version_id`` is asserted. Archived objects
(GLACIER, DEEP_ARCHIVE) run on moto, which restores at once: the fault proxy makes HeadObject
say "still restoring" for a while, as S3 does for hours, so the wait in the triggerer is real.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path

import pytest

from airflow_s3connect.errors import ArchivedObjectError, NoSuchKeyError, S3ConnectError
from airflow_s3connect.filesystem import S3ConnectFileSystem
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.restores import Restore, restore_state, unrestored
from airflow_s3connect.selection import head
from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.moto_server import MotoServer
from tests.support.stores import Store


def _hook(store: Store, bucket: str, monkeypatch: pytest.MonkeyPatch) -> S3ConnectHook:
    monkeypatch.setenv("AIRFLOW_CONN_VERSIONS", json.dumps(store.conn(bucket)))
    return S3ConnectHook(s3connect_conn_id="versions")


def _versioned(store: Store) -> tuple[str, str, str] | None:
    """A bucket with two versions of ``doc.txt`` (v1, then v2): the bucket and both version
    ids; None where the store keeps no versions."""
    from botocore.exceptions import ClientError

    bucket = store.new_bucket("s3c-ver")
    try:
        store.admin.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NotImplemented":
            raise
        return None
    first = store.admin.put_object(Bucket=bucket, Key="doc.txt", Body=b"version one").get("VersionId")
    second = store.admin.put_object(Bucket=bucket, Key="doc.txt", Body=b"version two, longer").get("VersionId")
    if not first or first == "null":
        return None
    return bucket, first, second


def test_one_version_through_every_door(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """read, open, download, copy and delete of ``version_id``, and results that say which
    version they hold."""
    made = _versioned(store)
    if made is None:  # Swift here: the store answers no version ids, so there is none to name
        assert store.name == "swift"
        bucket = store.new_bucket("s3c-ver")
        store.admin.put_object(Bucket=bucket, Key="doc.txt", Body=b"only")
        with pytest.raises(S3ConnectError, match=r"this store keeps no object versions\. Drop version_id"):
            _hook(store, bucket, monkeypatch).read("doc.txt", version_id="v-none")
        return
    bucket, first, second = made
    hook = _hook(store, bucket, monkeypatch)
    assert hook.read("doc.txt", version_id=first) == b"version one"
    assert hook.read("doc.txt") == b"version two, longer"
    with hook.open("doc.txt", version_id=first) as body:
        assert body.read() == b"version one"
    (old,) = hook.download(tmp_path / "old", "doc.txt", version_id=first)
    assert Path(old["local_path"]).read_bytes() == b"version one"
    assert (old["version_id"], old["size"]) == (first, len(b"version one"))
    (current,) = hook.download(tmp_path / "new", "doc.txt")
    assert current["version_id"] == second  # the version read, also when none was named
    (copied,) = hook.copy(source_key="doc.txt", version_id=first, target_prefix="copies/")
    assert copied["source_uri"] == f"s3://{bucket}/doc.txt?versionId={first}"
    assert store.admin.get_object(Bucket=bucket, Key="copies/doc.txt")["Body"].read() == b"version one"
    assert hook.delete(["doc.txt"], version_id=first) == ["doc.txt"]
    left = store.admin.list_object_versions(Bucket=bucket, Prefix="doc.txt")["Versions"]
    assert [v["VersionId"] for v in left] == [second]  # that version gone for good, the current kept
    with pytest.raises(NoSuchKeyError, match=f"No version '{first}'"):
        hook.read("doc.txt", version_id=first)


def test_version_id_names_one_key() -> None:
    from airflow_s3connect.errors import ArgumentError
    from airflow_s3connect.scope import Scope
    from airflow_s3connect.selection import Selection

    with pytest.raises(ArgumentError, match=r"give it with key=\.\.\."):
        Selection.of(Scope(bucket="b"), prefix="x/", version_id="v1")


# -- archived objects -----------------------------------------------------------------------------


def test_restore_state_reads_the_restore_header() -> None:
    assert restore_state({"StorageClass": "STANDARD_IA"}) == "readable"
    assert restore_state({"StorageClass": "GLACIER_IR"}) == "readable"  # instant retrieval
    assert restore_state({"StorageClass": "GLACIER"}) == "archived"
    assert restore_state({"StorageClass": "DEEP_ARCHIVE", "Restore": 'ongoing-request="true"'}) == "restoring"
    assert restore_state({"StorageClass": "GLACIER", "Restore": 'ongoing-request="false", expiry-date="x"'}) == (
        "readable"
    )
    assert Restore.of({"days": 3}) == Restore(3, "Standard")
    assert Restore.of({"days": 1, "tier": "Bulk"}).request() == {  # type: ignore[union-attr]
        "Days": 1, "GlacierJobParameters": {"Tier": "Bulk"},
    }  # fmt: skip


def _archived_conn(url: str, conn_id: str = "archived") -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {
            "conn_type": "s3connect",
            "login": "AKIAEXAMPLE",
            "password": "secret",
            "extra": {"endpoint_url": url, "region_name": REGION, "bucket": BUCKET},
        }
    )


def test_an_archived_object_is_refused_by_every_door_naming_restore(moto: MotoServer, tmp_path: Path) -> None:
    """Without restore: hook read, open, download and copy, the filesystem, and a listing's
    check before anything is read, each fail with ArchivedObjectError naming the option."""
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="cold/a.csv", Body=b"cold", StorageClass="GLACIER")
    admin.put_object(Bucket=BUCKET, Key="cold/b.csv", Body=b"warm")
    _archived_conn(moto.url)
    try:
        hook = S3ConnectHook(s3connect_conn_id="archived")
        doors = {
            "read": lambda: hook.read("cold/a.csv"),
            "open": lambda: hook.open("cold/a.csv").read(),
            "download": lambda: hook.download(tmp_path, "cold/a.csv"),
            "copy": lambda: hook.copy(source_key="cold/a.csv", target_prefix="copies/"),
            "filesystem": lambda: S3ConnectFileSystem(hook.get_conn(), hook.scope_settings.scope).cat_file(
                f"{BUCKET}/cold/a.csv"
            ),
            "listing": lambda: unrestored(
                hook.get_conn(), BUCKET, [head(hook.get_conn(), BUCKET, k) for k in ("cold/b.csv", "cold/a.csv")], None
            ),
        }
        for door, call in doors.items():
            with pytest.raises(ArchivedObjectError, match=r"GLACIER.*nothing was read.*restore=\{'days'") as info:
                call()
            assert "s3:RestoreObject" in str(info.value), door
        assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no file, not even a partial one
        assert admin.list_objects_v2(Bucket=BUCKET, Prefix="copies/").get("KeyCount", 0) == 0
    finally:
        del os.environ["AIRFLOW_CONN_ARCHIVED"]


def test_an_object_a_head_described_is_not_asked_again(moto: MotoServer) -> None:
    """A key's HEAD (Get or Copy of one key) tells its restore state: one HeadObject per
    archived key, whether it is archived, being restored or restored; a listing's objects
    cost one HEAD each of the archived ones."""
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="cold/one.csv", Body=b"x", StorageClass="GLACIER")
    admin.put_object(Bucket=BUCKET, Key="cold/two.csv", Body=b"y", StorageClass="GLACIER")
    admin.restore_object(Bucket=BUCKET, Key="cold/two.csv", RestoreRequest={"Days": 1})  # moto: done at once
    _archived_conn(moto.url)
    try:
        client = S3ConnectHook(s3connect_conn_id="archived").get_conn()
        restore = Restore.of({"days": 1})
        with moto.recording() as rec:
            described = [head(client, BUCKET, "cold/one.csv"), head(client, BUCKET, "cold/two.csv")]
            waiting = unrestored(client, BUCKET, described, restore)
        assert [info.key for info in waiting] == ["cold/one.csv"]
        assert [r.method for r in rec.s3()] == ["HEAD", "HEAD", "POST"]  # the two HEADs, one RestoreObject
        listed = [dataclasses.replace(info, restore=None) for info in described]
        with moto.recording() as rec:
            unrestored(client, BUCKET, listed, restore)
        assert [r.method for r in rec.s3()].count("HEAD") == 2
    finally:
        del os.environ["AIRFLOW_CONN_ARCHIVED"]


RESTORE_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3CopyObjectsOperator, S3GetObjectOperator

with DAG("s3c_restore", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    conn = dict(s3connect_conn_id="archived")
    refused = S3GetObjectOperator(task_id="refused", prefix="cold/", local_dir="OUT/refused", **conn)
    get = S3GetObjectOperator(task_id="get", prefix="cold/", local_dir="OUT/get",
                              restore={"days": 2, "tier": "Bulk"}, restore_poll_interval=0.2,
                              trigger_rule="all_done", **conn)
    copy = S3CopyObjectsOperator(task_id="copy", source_key="cold/deep.bin", target_key="warm/{filename}",
                                 restore={"days": 1}, restore_poll_interval=0.2, **conn)
    refused >> get >> copy
"""


def test_get_and_copy_restore_and_wait_in_the_triggerer(
    moto: MotoServer, proxy: FaultProxy, airflow_db: Path, tmp_path: Path
) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="cold/a.csv", Body=b"glacier bytes", StorageClass="GLACIER")
    admin.put_object(Bucket=BUCKET, Key="cold/deep.bin", Body=b"deep archive bytes", StorageClass="DEEP_ARCHIVE")
    admin.put_object(Bucket=BUCKET, Key="cold/c.csv", Body=b"standard bytes")
    # After each RestoreObject, HeadObject says "still restoring" three times (moto restores at once).
    proxy.schedule(Fault("restoring", "HeadObject", times=3, key_contains="cold/a.csv"),
                   Fault("restoring", "HeadObject", times=3, key_contains="cold/deep.bin"))  # fmt: skip
    path = write_dag("s3c_restore", RESTORE_DAG.replace("OUT", str(tmp_path)))
    _archived_conn(proxy.url)
    try:
        result = run_dag(path, "s3c_restore", datetime.datetime(2025, 3, 1, tzinfo=datetime.timezone.utc))
    finally:
        del os.environ["AIRFLOW_CONN_ARCHIVED"]
    states = {task: state for (task, _), state in result.task_states.items()}
    assert states == {"refused": "failed", "get": "success", "copy": "success"}
    # refused: the listing's archived object was found before anything was downloaded
    assert not [p for p in (tmp_path / "refused").rglob("*") if p.is_file()]
    got = {Path(e["local_path"]).name: Path(e["local_path"]).read_bytes() for e in result.value("get")}
    assert got == {"a.csv": b"glacier bytes", "deep.bin": b"deep archive bytes", "c.csv": b"standard bytes"}
    assert admin.get_object(Bucket=BUCKET, Key="warm/deep.bin")["Body"].read() == b"deep archive bytes"
    restores = [op for op in proxy.operations if op == "RestoreObject"]
    assert len(restores) == 2  # one per archived object; the copy found deep.bin restored already
    heads = [i for i in proxy.injected if i.kind == "restoring"]
    assert len(heads) == 6  # the triggerer polled through every "still restoring"
