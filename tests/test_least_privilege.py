"""Each operation with exactly SPEC.md's permissions, on a moto server enforcing IAM.

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

from airflow_s3connect.errors import AccessDeniedError, NoSuchBucketError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.transfer import (
    Downloader,
    DownloadTask,
    Lister,
    ListQuery,
    MiB,
    PutOptions,
    TransferConfig,
    Uploader,
    delete_object,
)
from tests.conftest import BUCKET, REGION
from tests.dag_runner import run_dag, write_dag
from tests.moto_server import IamFactory

OBJECTS = f"arn:aws:s3:::{BUCKET}/*"
THE_BUCKET = f"arn:aws:s3:::{BUCKET}"
#: SPEC.md's least-privilege table.
NEEDS: dict[str, list[str]] = {
    "put": ["s3:PutObject"],
    "get_key": ["s3:GetObject"],
    "get_prefix": ["s3:ListBucket", "s3:GetObject"],
    "list": ["s3:ListBucket", "s3:GetObject"],
    "get_delete": ["s3:ListBucket", "s3:GetObject", "s3:DeleteObject"],
}

DAG_SOURCE = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3GetObjectOperator, S3ListObjectsOperator, S3PutObjectOperator

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
"""


def _conn_extra(iam: IamFactory) -> dict[str, Any]:
    return {"region_name": REGION, "endpoint_url": iam.server.url, "sts_endpoint_url": iam.server.url, "bucket": BUCKET}


def test_each_operation_with_exactly_its_permissions(
    iam: IamFactory, make_conn: Callable[..., str], airflow_db: Path, tmp_path: Path
) -> None:
    admin = iam.server.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="lp/seed.txt", Body=b"seed")
    admin.put_object(Bucket=BUCKET, Key="done/old.txt", Body=b"old")
    for name, actions in NEEDS.items():
        user = iam.user(f"lp-{name}", actions, [THE_BUCKET, OBJECTS])
        make_conn(f"lp_{name}", user.key, user.secret, **_conn_extra(iam))
    base = iam.user("lp-base", ["sts:AssumeRole"])
    role = iam.role("lp-reader", NEEDS["get_prefix"], [THE_BUCKET, OBJECTS], trusted=base.arn, external_id="ext-42")
    make_conn("lp_role", base.key, base.secret, auth_type="assume_role", role_arn=role, external_id="ext-42",
              **_conn_extra(iam))  # fmt: skip
    path = write_dag("s3c_least_privilege", DAG_SOURCE.replace("OUT", str(tmp_path)))
    iam.enforce()
    result = run_dag(path, "s3c_least_privilege", datetime.datetime(2025, 1, 2, tzinfo=datetime.timezone.utc))
    assert {k[0]: v for k, v in result.task_states.items()} == dict.fromkeys(
        ["put", "put_multipart", "get_key", "get_prefix", "get_prefix_role", "list", "get_delete"], "success"
    )
    iam.server.set_auth(enforced=False)
    assert admin.get_object(Bucket=BUCKET, Key="lp/new.txt")["Body"].read() == b"small"
    assert admin.head_object(Bucket=BUCKET, Key="lp/big.bin")["ContentLength"] == 11 * MiB
    for sub in ("key", "prefix", "role"):
        assert (tmp_path / sub / "seed.txt").read_bytes() == b"seed"
    assert sorted(result.value("list")) == ["lp/big.bin", "lp/new.txt", "lp/seed.txt"]
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="done/")["KeyCount"] == 0


CONFIG = TransferConfig(max_concurrency=2)


def _put(hook: S3ConnectHook, tmp: Path) -> None:
    with Uploader(hook.get_conn(), BUCKET, CONFIG, PutOptions(overwrite=False)) as up:
        up.put_stream(io.BytesIO(b"x"), "lp/denied.txt")
        list(up.results())


def _get_key(hook: S3ConnectHook, tmp: Path) -> None:
    list(Downloader(hook.get_conn(), BUCKET, CONFIG).download([DownloadTask("lp/seed.txt", tmp / "seed.txt")]))


def _get_prefix(hook: S3ConnectHook, tmp: Path) -> None:
    client = hook.get_conn()
    listed = [DownloadTask(o.key, tmp / "f") for o in Lister(client, BUCKET, ListQuery(base="lp/"))]  # type: ignore[union-attr]
    list(Downloader(client, BUCKET, CONFIG).download(listed))


def _get_delete(hook: S3ConnectHook, tmp: Path) -> None:
    _get_prefix(hook, tmp)
    delete_object(hook.get_conn(), BUCKET, "lp/seed.txt")


OPERATIONS: dict[str, Callable[[S3ConnectHook, Path], None]] = {
    "put": _put,
    "get_key": _get_key,
    "get_prefix": _get_prefix,
    "get_delete": _get_delete,
}
CASES = [(op, missing) for op, run in OPERATIONS.items() for missing in NEEDS[op]]


@pytest.mark.parametrize(("operation", "missing"), CASES, ids=[f"{op}-without-{m}" for op, m in CASES])
def test_one_permission_less_names_it(
    iam: IamFactory, make_conn: Callable[..., str], tmp_path: Path, operation: str, missing: str
) -> None:
    iam.server.admin_client("s3").put_object(Bucket=BUCKET, Key="lp/seed.txt", Body=b"seed")
    actions = [a for a in NEEDS[operation] if a != missing]
    user = iam.user("short", actions, [THE_BUCKET, OBJECTS])
    conn_id = make_conn("short", user.key, user.secret, **_conn_extra(iam))
    iam.enforce()
    with pytest.raises(AccessDeniedError) as info:
        OPERATIONS[operation](S3ConnectHook(s3connect_conn_id=conn_id), tmp_path)
    assert info.value.action == missing
    resource = THE_BUCKET if missing == "s3:ListBucket" else f"{THE_BUCKET}/lp/"
    assert str(info.value).startswith(f"Access denied: {missing} on {resource}")
    assert [p for p in os.listdir(tmp_path) if ".part" in p] == []


def test_missing_bucket_is_named(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("nobucket", "AKIAEXAMPLE", "secret", region_name=REGION, endpoint_url=iam.server.url)
    with pytest.raises(NoSuchBucketError, match="Bucket 'no-such-bucket' does not exist on this endpoint"):
        list(Lister(S3ConnectHook(s3connect_conn_id=conn_id).get_conn(), "no-such-bucket", ListQuery(base="x/")))
