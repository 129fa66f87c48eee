"""Each operation with exactly the permissions the README's table lists, on a moto server enforcing IAM.

With them: the operators succeed in a real DAG run. With one removed: the error names the
missing action and the resource.
"""

from __future__ import annotations

import datetime
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.copies import Copier
from airflow_s3connect.deletes import archive_object, delete_object
from airflow_s3connect.downloads import Downloader, DownloadTask
from airflow_s3connect.errors import AccessDeniedError, NoSuchBucketError
from airflow_s3connect.events import ObjectStream
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.objects import MiB, ObjectInfo, TransferConfig
from airflow_s3connect.uploads import Uploader
from airflow_s3connect.watch import Watcher, WatchSpec
from airflow_s3connect.writes import WriteOptions
from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.moto_server import IamFactory

OBJECTS = f"arn:aws:s3:::{BUCKET}/*"
THE_BUCKET = f"arn:aws:s3:::{BUCKET}"

DAG_SOURCE = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import (
    S3CopyObjectsOperator, S3GetObjectOperator, S3ListObjectsOperator, S3PutObjectOperator,
)

with DAG("s3c_least_privilege", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    S3PutObjectOperator(task_id="put", s3connect_conn_id="lp_put", data="small", key="lp/new.txt", overwrite=False)
    S3PutObjectOperator(task_id="put_multipart", s3connect_conn_id="lp_put", data=b"m" * (11 * 1024 * 1024),
                        key="lp/big.bin", overwrite=False, chunk_size=5 * 1024 * 1024,
                        multipart_threshold=5 * 1024 * 1024)
    S3GetObjectOperator(task_id="get_key", s3connect_conn_id="lp_get_key", key="lp/seed.txt", local_dir="OUT/key")
    S3GetObjectOperator(task_id="get_prefix", s3connect_conn_id="lp_get_prefix", prefix="lp/", pattern="seed*",
                        local_dir="OUT/prefix")
    S3GetObjectOperator(task_id="get_prefix_role", s3connect_conn_id="lp_role", prefix="lp/", pattern="seed*",
                        local_dir="OUT/role")
    listing = S3ListObjectsOperator(task_id="list", s3connect_conn_id="lp_list", prefix="lp/")
    dag.get_task("put") >> dag.get_task("put_multipart") >> listing
    S3GetObjectOperator(task_id="get_delete", s3connect_conn_id="lp_get_delete", prefix="done/",
                        local_dir="OUT/delete", after="delete")
    S3CopyObjectsOperator(task_id="partner_to_us", source_conn_id="lp_partner", s3connect_conn_id="lp_ours",
                          source_prefix="outbox/", target_key="inbound/{relative_path}", overwrite=False)
"""


def _conn_extra(iam: IamFactory) -> dict[str, Any]:
    return {"region_name": REGION, "endpoint_url": iam.server.url, "sts_endpoint_url": iam.server.url, "bucket": BUCKET}


def test_each_operation_with_exactly_its_permissions(
    iam: IamFactory, make_conn: Callable[..., str], airflow_db: Path, tmp_path: Path
) -> None:
    admin = iam.server.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="lp/seed.txt", Body=b"seed")
    admin.put_object(Bucket=BUCKET, Key="done/old.txt", Body=b"old")
    for name, actions in GIVEN.items():
        user = iam.user(f"lp-{name}", actions, [THE_BUCKET, OBJECTS])
        make_conn(f"lp_{name}", user.key, user.secret, **_conn_extra(iam))
    base = iam.user("lp-base", ["sts:AssumeRole"])
    role = iam.role("lp-reader", GIVEN["get_prefix"], [THE_BUCKET, OBJECTS], trusted=base.arn, external_id="ext-42")
    make_conn("lp_role", base.key, base.secret, auth_type="assume_role", role_arn=role, external_id="ext-42",
              **_conn_extra(iam))  # fmt: skip
    # Partner -> us across two assumed roles: each can touch only its own bucket.
    iam.bucket("partner-out")
    admin.put_object(Bucket="partner-out", Key="outbox/report.csv", Body=b"id\n7\n")
    reader = iam.role(
        "lp-partner",
        ["s3:ListBucket", "s3:GetObject"],
        ["arn:aws:s3:::partner-out", "arn:aws:s3:::partner-out/*"],
        trusted=base.arn,
        external_id="p-1",
    )
    writer = iam.role("lp-ours", ["s3:PutObject"], [OBJECTS], trusted=base.arn, external_id="o-2")
    extra = {k: v for k, v in _conn_extra(iam).items() if k != "bucket"}
    make_conn(
        "lp_partner",
        base.key,
        base.secret,
        auth_type="assume_role",
        role_arn=reader,
        external_id="p-1",
        bucket="partner-out",
        **extra,
    )
    make_conn("lp_ours", base.key, base.secret, auth_type="assume_role", role_arn=writer, external_id="o-2",
              bucket=BUCKET, **extra)  # fmt: skip
    path = write_dag("s3c_least_privilege", DAG_SOURCE.replace("OUT", str(tmp_path)))
    iam.enforce()
    result = run_dag(path, "s3c_least_privilege", datetime.datetime(2025, 1, 2, tzinfo=datetime.timezone.utc))
    assert {k[0]: v for k, v in result.task_states.items()} == dict.fromkeys(
        ["put", "put_multipart", "get_key", "get_prefix", "get_prefix_role", "list", "get_delete", "partner_to_us"],
        "success",
    )
    assert [c["method"] for c in result.value("partner_to_us")] == ["stream"]
    iam.server.set_auth(enforced=False)
    assert admin.get_object(Bucket=BUCKET, Key="lp/new.txt")["Body"].read() == b"small"
    assert admin.head_object(Bucket=BUCKET, Key="lp/big.bin")["ContentLength"] == 11 * MiB
    assert (tmp_path / "key" / "lp" / "seed.txt").read_bytes() == b"seed"  # a key keeps its path
    for sub in ("prefix", "role"):
        assert (tmp_path / sub / "seed.txt").read_bytes() == b"seed"
    assert sorted(result.value("list")) == ["lp/big.bin", "lp/new.txt", "lp/seed.txt"]
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="done/")["KeyCount"] == 0
    assert admin.get_object(Bucket=BUCKET, Key="inbound/report.csv")["Body"].read() == b"id\n7\n"


CONFIG = TransferConfig(max_concurrency=2, chunk_size=5 * MiB, multipart_threshold=5 * MiB)


def _put(hook: S3ConnectHook, tmp: Path) -> None:
    with Uploader(hook.get_conn(), BUCKET, CONFIG, WriteOptions(overwrite=False)) as up:
        up.put_stream(io.BytesIO(b"x"), "lp/denied.txt")
        list(up.results())


def _put_multipart(hook: S3ConnectHook, tmp: Path) -> None:
    with Uploader(hook.get_conn(), BUCKET, CONFIG, WriteOptions(overwrite=False)) as up:
        up.put_stream(io.BytesIO(b"m" * (6 * MiB)), "lp/denied-big.bin")
        list(up.results())


def _get_key(hook: S3ConnectHook, tmp: Path) -> None:
    list(Downloader(hook.get_conn(), BUCKET, CONFIG).download([DownloadTask("lp/seed.txt", tmp / "seed.txt")]))


def _listed(hook: S3ConnectHook) -> list[ObjectInfo]:
    return [o for o in Lister(hook.get_conn(), BUCKET, ListQuery(base="lp/")) if isinstance(o, ObjectInfo)]


def _get_prefix(hook: S3ConnectHook, tmp: Path) -> None:
    tasks = [DownloadTask(o.key, tmp / o.key.rpartition("/")[2], o.size, o.etag) for o in _listed(hook)]
    list(Downloader(hook.get_conn(), BUCKET, CONFIG).download(tasks))


def _get_delete(hook: S3ConnectHook, tmp: Path) -> None:
    _get_prefix(hook, tmp)
    delete_object(hook.get_conn(), BUCKET, "lp/seed.txt")


def _get_archive(hook: S3ConnectHook, tmp: Path) -> None:
    _get_prefix(hook, tmp)
    (seed,) = _listed(hook)
    archive_object(hook.get_conn(), BUCKET, seed.key, "lp-archive/seed.txt", seed.etag, seed.size)


def _list(hook: S3ConnectHook, tmp: Path) -> None:
    assert [o.key for o in _listed(hook)] == ["lp/seed.txt"]


def _sensor(hook: S3ConnectHook, tmp: Path) -> None:
    found = Watcher(WatchSpec(bucket=BUCKET, base="lp/", pattern="seed*", min_size=1)).poke(hook.get_conn(), 0)
    assert found is not None
    assert [o.key for o in found] == ["lp/seed.txt"]


#: What each operation is given, and what removing one of them must break. List and the
def _delete(hook: S3ConnectHook, tmp: Path) -> None:
    assert hook.delete(prefix="lp/") == ["lp/seed.txt"]


def _copy(hook: S3ConnectHook, tmp: Path) -> None:
    (copied,) = hook.copy(source_prefix="lp/", target_prefix="lp-copy")
    assert (copied["key"], copied["method"]) == ("lp-copy/seed.txt", "server")


def _read_version(hook: S3ConnectHook, tmp: Path) -> None:
    (done,) = hook.download(tmp, "lp/seed.txt", version_id=SEEDED["version"])
    assert done["version_id"] == SEEDED["version"]
    assert Path(done["local_path"]).read_bytes() == b"seed"


def _delete_version(hook: S3ConnectHook, tmp: Path) -> None:
    assert hook.delete(["lp/seed.txt"], version_id=SEEDED["version"]) == ["lp/seed.txt"]


def _event_watcher(hook: S3ConnectHook, tmp: Path) -> None:
    """What S3ObjectEventTrigger does each poll, through the same client."""
    (found,) = ObjectStream(hook.get_conn(), BUCKET, "lp/", start="all").poll()
    assert found.key == "lp/seed.txt"


#: sensor get the granted ListBucket + GetObject but only use ListBucket: without GetObject
#: they still work (checked below), so only ListBucket is "needed".
GIVEN: dict[str, list[str]] = {
    "put": ["s3:PutObject"],
    "put_multipart": ["s3:PutObject"],
    "get_key": ["s3:GetObject"],
    "get_prefix": ["s3:ListBucket", "s3:GetObject"],
    "get_delete": ["s3:ListBucket", "s3:GetObject", "s3:DeleteObject"],
    # Archiving writes the copy: PutObject on top of "+ s3:DeleteObject".
    "get_archive": ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
    "list": ["s3:ListBucket", "s3:GetObject"],
    "sensor": ["s3:ListBucket", "s3:GetObject"],
    "event_watcher": ["s3:ListBucket"],
    "delete": ["s3:ListBucket", "s3:DeleteObject"],
    "copy": ["s3:ListBucket", "s3:GetObject", "s3:PutObject"],
    "read_version": ["s3:GetObject", "s3:GetObjectVersion"],
    "delete_version": ["s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
}
NEEDED = {
    op: [a for a in actions if not (op in ("list", "sensor") and a == "s3:GetObject")] for op, actions in GIVEN.items()
}
OPERATIONS: dict[str, Callable[[S3ConnectHook, Path], None]] = {
    "put": _put,
    "put_multipart": _put_multipart,
    "get_key": _get_key,
    "get_prefix": _get_prefix,
    "get_delete": _get_delete,
    "get_archive": _get_archive,
    "list": _list,
    "sensor": _sensor,
    "event_watcher": _event_watcher,
    "delete": _delete,
    "copy": _copy,
    "read_version": _read_version,
    "delete_version": _delete_version,
}
IDENTITIES = ("user", "role")


def _hook(iam: IamFactory, make_conn: Callable[..., str], identity: str, actions: list[str]) -> S3ConnectHook:
    """A connection holding exactly ``actions``: an IAM user's keys, or a role assumed with an external ID."""
    if identity == "user":
        user = iam.user("lp-user", actions, [THE_BUCKET, OBJECTS])
        conn_id = make_conn("lp_user", user.key, user.secret, **_conn_extra(iam))
    else:
        base = iam.user("lp-base", ["sts:AssumeRole"])
        role = iam.role("lp-role", actions, [THE_BUCKET, OBJECTS], trusted=base.arn, external_id="ext-lp-7")
        conn_id = make_conn("lp_role", base.key, base.secret, auth_type="assume_role", role_arn=role,
                            external_id="ext-lp-7", **_conn_extra(iam))  # fmt: skip
    return S3ConnectHook(s3connect_conn_id=conn_id)


#: The seed object's version id (the bucket keeps versions: version_id has one to name).
SEEDED: dict[str, str] = {}


def _seed(iam: IamFactory) -> Any:
    admin = iam.server.admin_client("s3")
    admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    SEEDED["version"] = admin.put_object(Bucket=BUCKET, Key="lp/seed.txt", Body=b"seed")["VersionId"]
    return admin


EXACT = [(op, identity) for op in OPERATIONS for identity in IDENTITIES]


@pytest.mark.parametrize(("operation", "identity"), EXACT, ids=[f"{op}-{i}" for op, i in EXACT])
def test_exactly_the_needed_permissions_suffice(
    iam: IamFactory, make_conn: Callable[..., str], tmp_path: Path, operation: str, identity: str
) -> None:
    admin = _seed(iam)
    hook = _hook(iam, make_conn, identity, NEEDED[operation])
    iam.enforce()
    OPERATIONS[operation](hook, tmp_path)
    iam.server.set_auth(enforced=False)
    keys = {o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    expected = {
        "put": {"lp/seed.txt", "lp/denied.txt"},
        "put_multipart": {"lp/seed.txt", "lp/denied-big.bin"},
        "get_delete": set(),
        "get_archive": {"lp-archive/seed.txt"},
        "delete": set(),
        "delete_version": set(),
        "copy": {"lp/seed.txt", "lp-copy/seed.txt"},
    }.get(operation, {"lp/seed.txt"})
    assert keys == expected
    if operation.startswith("get"):
        assert (tmp_path / "seed.txt").read_bytes() == b"seed"


#: moto does not check s3:GetObject on a CopyObject's source (AWS does): the copy engine's
#: naming of it is tested directly below. moto authorizes a HEAD of a version as s3:GetObject
#: (AWS as s3:GetObjectVersion, the name we give its refusal), and DeleteObjects as
#: s3:DeleteObject whatever versions it names (AWS also asks s3:DeleteObjectVersion, the name
#: we give a refused version).
UNENFORCED = {("copy", "s3:GetObject"), ("read_version", "s3:GetObject"), ("delete_version", "s3:GetObject"),
              ("delete_version", "s3:DeleteObjectVersion"), ("delete_version", "s3:DeleteObject")}  # fmt: skip
LESS = [
    (op, missing, identity)
    for op in OPERATIONS
    for missing in NEEDED[op]
    for identity in IDENTITIES
    if (op, missing) not in UNENFORCED
]


@pytest.mark.parametrize(("operation", "missing", "identity"), LESS, ids=[f"{op}-without-{m}-{i}" for op, m, i in LESS])
def test_one_permission_less_names_it(
    iam: IamFactory, make_conn: Callable[..., str], tmp_path: Path, operation: str, missing: str, identity: str
) -> None:
    admin = _seed(iam)
    hook = _hook(iam, make_conn, identity, [a for a in GIVEN[operation] if a != missing])
    iam.enforce()
    with pytest.raises(AccessDeniedError) as info:
        OPERATIONS[operation](hook, tmp_path)
    assert info.value.action == missing
    assert str(info.value).startswith(f"Access denied: {missing} on arn:aws:s3:::{BUCKET}")
    assert [p for p in os.listdir(tmp_path) if ".part" in p] == []
    iam.server.set_auth(enforced=False)
    if operation == "put_multipart":
        # On moto, aborting needs s3:AbortMultipartUpload, which a Put-only identity lacks; on
        # AWS the initiator may abort its own upload. Either way nothing was completed.
        assert "lp/denied-big.bin" not in {o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_a_copy_denied_for_want_of_reading_its_source_names_s3_getobject(
    iam: IamFactory, make_conn: Callable[..., str]
) -> None:
    """What the engine does when CopyObject answers AccessDenied: find which side it is."""
    _seed(iam)
    hook = _hook(iam, make_conn, "user", ["s3:ListBucket", "s3:PutObject"])
    iam.enforce()
    (seed,) = _listed(hook)
    copier = Copier(hook.get_conn(), BUCKET, hook.get_conn(), BUCKET, CONFIG, WriteOptions(), server_side=True)
    with pytest.raises(AccessDeniedError) as info:
        copier._readable(seed)
    assert info.value.action == "s3:GetObject"


def test_missing_bucket_is_named(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("nobucket", "AKIAEXAMPLE", "secret", region_name=REGION, endpoint_url=iam.server.url)
    with pytest.raises(NoSuchBucketError, match="Bucket 'no-such-bucket' does not exist on this endpoint"):
        list(Lister(S3ConnectHook(s3connect_conn_id=conn_id).get_conn(), "no-such-bucket", ListQuery(base="x/")))


@pytest.mark.parametrize("granted", [True, False])
def test_restore_needs_restore_object_and_names_it(
    iam: IamFactory, make_conn: Callable[..., str], granted: bool
) -> None:
    from airflow_s3connect.restores import Restore, unrestored
    from airflow_s3connect.selection import head

    iam.server.admin_client("s3").put_object(Bucket=BUCKET, Key="lp/cold.txt", Body=b"c", StorageClass="GLACIER")
    hook = _hook(iam, make_conn, "user", ["s3:GetObject", *(["s3:RestoreObject"] if granted else [])])
    iam.enforce()
    client = hook.get_conn()
    cold = head(client, BUCKET, "lp/cold.txt")
    if granted:
        assert [o.key for o in unrestored(client, BUCKET, [cold], Restore(1))] == ["lp/cold.txt"]
    else:
        with pytest.raises(AccessDeniedError) as info:
            unrestored(client, BUCKET, [cold], Restore(1))
        assert info.value.action == "s3:RestoreObject"
