"""One write path: the connection's write options reach every request that creates an
object, whichever writer made it, and a call's own options override them; copies keep the
source's attributes on every path.

moto stores SSE, ACL, tags and storage class as sent (it does not evaluate bucket-policy
conditions on them, checked below), so each writer is asserted twice: at the transport
(every PutObject, CreateMultipartUpload and CopyObject request carries the headers) and
by reading each stored object back (HeadObject, GetObjectTagging, GetObjectAcl).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from airflow_s3connect.connection import parse_settings
from airflow_s3connect.errors import ArgumentError, ConnectionSettingsError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.writes import ROUTES, WriteOptions, parse_tags
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer

DEFAULTS = {
    "server_side_encryption": "AES256",
    "acl": "bucket-owner-full-control",
    "tags": "team=data&env=prod",
    "storage_class": "STANDARD_IA",
}
OWNER_FULL_CONTROL = "FULL_CONTROL"


# -- the table, on plain values ------------------------------------------------------------------


def test_each_option_reaches_the_requests_it_routes_to() -> None:
    options = WriteOptions(
        server_side_encryption="aws:kms", kms_key_id="alias/k", bucket_key_enabled=True,
        kms_encryption_context={"p": "b"}, acl="private", storage_class="GLACIER_IR", tags={"a": "1"},
        cache_control="no-cache", content_type="text/csv", requester_pays=True, checksum_algorithm="SHA256",
    )  # fmt: skip
    put = options.args("PutObject")
    assert put["ServerSideEncryption"] == "aws:kms"
    assert put["SSEKMSKeyId"] == "alias/k"
    assert put["BucketKeyEnabled"] is True
    assert json.loads(__import__("base64").b64decode(put["SSEKMSEncryptionContext"])) == {"p": "b"}
    assert (put["ACL"], put["StorageClass"], put["Tagging"]) == ("private", "GLACIER_IR", "a=1")
    assert (put["CacheControl"], put["ContentType"], put["RequestPayer"]) == ("no-cache", "text/csv", "requester")
    assert put["ChecksumAlgorithm"] == "SHA256"
    part = options.args("UploadPart")
    assert "ServerSideEncryption" not in part
    assert part["ChecksumAlgorithm"] == "SHA256"
    copy = options.args("CopyObject")
    assert copy["MetadataDirective"] == "REPLACE"  # a content type given replaces the source's
    assert copy["TaggingDirective"] == "REPLACE"
    assert "ChecksumAlgorithm" not in copy
    assert WriteOptions(acl="private").args("CopyObject").get("MetadataDirective") is None
    sse_c = WriteOptions(sse_customer_key="k" * 32)
    for operation in ("PutObject", "UploadPart", "GetObject", "HeadObject", "UploadPartCopy"):
        assert sse_c.args(operation)["SSECustomerKey"] == "k" * 32
    assert sse_c.args("UploadPartCopy")["CopySourceSSECustomerKey"] == "k" * 32
    assert "k" * 32 not in repr(sse_c)
    assert {route.option for route in ROUTES} <= {f for f in WriteOptions.__dataclass_fields__}


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"server_side_encryption": "AES128"}, "use one of AES256"),
        ({"kms_key_id": "k"}, "needs server_side_encryption='aws:kms'"),
        ({"sse_customer_key": "k", "server_side_encryption": "AES256"}, "exclude each other"),
        ({"acl": "owner"}, "canned ACL"),
        ({"storage_class": "COLD"}, "use one of STANDARD"),
    ],
)
def test_a_wrong_option_says_what_to_give(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ArgumentError, match=words):
        WriteOptions(**options)
    with pytest.raises(ArgumentError, match="Unknown write option 'colour'"):
        WriteOptions().overridden(colour="red")


def test_tags_are_a_json_object_or_pairs() -> None:
    assert parse_tags('{"team": "data"}') == {"team": "data"}
    assert parse_tags("team=data&env=prod") == {"team": "data", "env": "prod"}
    with pytest.raises(ArgumentError, match="JSON object or key=value pairs"):
        parse_tags("team")
    with pytest.raises(ConnectionSettingsError, match="field 'tags'"):
        parse_settings("c", None, None, {"tags": "[1, 2]"})


# -- every writer, on a server --------------------------------------------------------------------


def _conn(moto: MotoServer, make_conn: Callable[..., str], name: str, **extra: Any) -> S3ConnectHook:
    make_conn(name, "AKIA1", "s", bucket=BUCKET, path_prefix="in", region_name=REGION, endpoint_url=moto.url,
              **{**DEFAULTS, **extra})  # fmt: skip
    return S3ConnectHook(s3connect_conn_id=name)


def _creating(recorded: list[Any]) -> list[Any]:
    """The requests that create an object: PutObject, CreateMultipartUpload, CopyObject."""
    out = []
    for request in recorded:
        query = request.query
        if (
            request.method == "PUT" and "partNumber" not in query and "tagging" not in query and "acl" not in query
        ) or (request.method == "POST" and "uploads" in query):
            out.append(request)
    return out


def _assert_stored(admin: Any, key: str, tags: dict[str, str] | None = None) -> None:
    head = admin.head_object(Bucket=BUCKET, Key=key)
    assert head.get("ServerSideEncryption") == "AES256", key
    assert head.get("StorageClass") == "STANDARD_IA", key
    stored = {t["Key"]: t["Value"] for t in admin.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]}
    assert stored == (tags or {"team": "data", "env": "prod"}), key
    grants = admin.get_object_acl(Bucket=BUCKET, Key=key)["Grants"]
    assert any(g["Permission"] == OWNER_FULL_CONTROL for g in grants), key


def test_every_writer_sends_the_connections_write_options(
    moto: MotoServer, make_conn: Callable[..., str], tmp_path: Path
) -> None:
    admin = moto.admin_client("s3")
    hook = _conn(moto, make_conn, "enterprise")
    other = _conn(moto, make_conn, "enterprise_src")  # a second connection: copies between them stream
    big = random.Random(7).randbytes(9 * 1024 * 1024)
    written: list[str] = []
    with moto.recording() as rec:
        written.append(hook.upload("small.csv", data=b"a,b\n1,2\n")["uri"])
        written.append(hook.upload("big.bin", data=big)["uri"])  # multipart
        written.append(hook.upload("once.csv", data=b"x", overwrite=False)["uri"])  # probe + conditional
        hook.copy(source_key="small.csv", target_prefix="copies/")  # CopyObject
        hook.copy(source_key="big.bin", target_prefix="copies/")  # multipart copy
        hook.copy(source_key="small.csv", target_prefix="streamed/", source=other)  # streamed
        from airflow_s3connect.filesystem import S3ConnectFileSystem

        files = S3ConnectFileSystem(hook.get_conn(), hook.scope_settings.scope)
        with files.open(f"{BUCKET}/in/fs/file.txt", "wb") as handle:
            handle.write(b"through fsspec")
        from airflow_s3connect.deletes import archive_object

        etag = admin.head_object(Bucket=BUCKET, Key="in/small.csv")["ETag"]
        archive_object(hook.get_conn(), BUCKET, "in/copies/small.csv", "in/archive/small.csv", etag, 8)
    creating = _creating(rec.s3())
    # Each writer's own requests (the create-only probe, cached per process, may be absent).
    written_keys = {urlsplit(r.url).path.split(f"/{BUCKET}/", 1)[-1] for r in creating}
    expected = {"in/small.csv", "in/big.bin", "in/once.csv", "in/copies/small.csv", "in/copies/big.bin",
                "in/streamed/small.csv", "in/fs/file.txt", "in/archive/small.csv"}  # fmt: skip
    assert expected <= written_keys, expected - written_keys
    for request in creating:
        headers = {k.lower(): v for k, v in request.headers.items()}
        where = (request.method, request.url)
        assert headers.get("x-amz-server-side-encryption") == "AES256", where
        assert headers.get("x-amz-acl") == "bucket-owner-full-control", where
        assert headers.get("x-amz-tagging") == "env=prod&team=data", where
        assert headers.get("x-amz-storage-class") == "STANDARD_IA", where
        if "x-amz-copy-source" in headers:
            assert headers.get("x-amz-tagging-directive") == "REPLACE", where
    for key in ("in/small.csv", "in/big.bin", "in/once.csv", "in/copies/big.bin", "in/streamed/small.csv",
                "in/fs/file.txt", "in/archive/small.csv"):  # fmt: skip
        _assert_stored(admin, key)


def test_a_calls_options_override_the_connections(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    admin = moto.admin_client("s3")
    hook = _conn(moto, make_conn, "enterprise_override")
    hook.upload("mine.csv", data=b"x", tags={"team": "ml"}, storage_class="STANDARD_IA", cache_control="max-age=60")
    _assert_stored(admin, "in/mine.csv", {"team": "ml"})
    assert admin.head_object(Bucket=BUCKET, Key="in/mine.csv")["CacheControl"] == "max-age=60"


@pytest.mark.parametrize("size", [100, 9 * 1024 * 1024])
@pytest.mark.parametrize("streamed", [False, True])
def test_copies_keep_the_sources_attributes(
    moto: MotoServer, make_conn: Callable[..., str], size: int, streamed: bool
) -> None:
    admin = moto.admin_client("s3")
    for name in ("keep", "keep_src"):
        make_conn(name, "AKIA1", "s", bucket=BUCKET, path_prefix="in", region_name=REGION, endpoint_url=moto.url)
    hook, source = S3ConnectHook(s3connect_conn_id="keep"), S3ConnectHook(s3connect_conn_id="keep_src")
    admin.put_object(Bucket=BUCKET, Key="in/src.csv", Body=b"x" * size, ContentType="text/csv",
                     CacheControl="no-store", ContentDisposition="attachment", ContentEncoding="identity",
                     ContentLanguage="de", Metadata={"origin": "erp"})  # fmt: skip
    hook.copy(source_key="src.csv", target_prefix="copy/", source=source if streamed else None)
    head = admin.head_object(Bucket=BUCKET, Key="in/copy/src.csv")
    assert head["ContentType"] == "text/csv"
    assert (head["CacheControl"], head["ContentDisposition"], head["ContentLanguage"]) == (
        "no-store", "attachment", "de",
    )  # fmt: skip
    assert head["Metadata"]["origin"] == "erp"


def test_the_policy_adds_what_the_write_options_need() -> None:
    from airflow_s3connect.iam import least_privilege_policy

    key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd"
    options = WriteOptions(server_side_encryption="aws:kms", kms_key_id=key, acl="bucket-owner-full-control",
                           tags={"team": "data"})  # fmt: skip
    statements = {s["Sid"]: s for s in least_privilege_policy("b-1x", "in", ["put"], options)["Statement"]}
    assert {"s3:PutObjectAcl", "s3:PutObjectTagging"} <= set(statements["S3ConnectObjects"]["Action"])
    assert statements["S3ConnectKms"] == {
        "Sid": "S3ConnectKms", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": key,
    }  # fmt: skip
    reading = {s["Sid"]: s for s in least_privilege_policy("b-1x", "in", ["get"], options)["Statement"]}
    assert reading["S3ConnectKms"]["Action"] == ["kms:Decrypt"]
    assert "s3:PutObjectAcl" not in reading["S3ConnectObjects"]["Action"]
    plain = least_privilege_policy("b-1x", "in", ["put"])["Statement"]
    assert [s["Sid"] for s in plain] == ["S3ConnectObjects"] or "S3ConnectKms" not in [s["Sid"] for s in plain]


def test_header_mode_sends_content_md5_with_delete_objects(moto: MotoServer) -> None:
    """Stores such as OpenStack Swift require it (S3 accepts it beside its own checksum)."""
    import base64
    import hashlib

    from tests.support.stores import endpoint_client

    client = endpoint_client(moto.url, bucket=BUCKET, checksum_mode="header")
    client.put_object(Bucket=BUCKET, Key="d/x", Body=b"x")
    with moto.recording() as rec:
        answer = client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "d/x"}]})
    assert [d["Key"] for d in answer["Deleted"]] == ["d/x"]
    (request,) = rec.s3()
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-md5"] == base64.b64encode(hashlib.md5(request.body).digest()).decode()


TAGGED_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3PutObjectOperator

with DAG("s3c_tag_macros", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    S3PutObjectOperator(task_id="conns", s3connect_conn_id="tagged", key="t/conn.txt", data="x")
    S3PutObjectOperator(task_id="own", s3connect_conn_id="tagged", key="t/{date}.txt", data="x",
                        tags={"run": "{connection_run_id}", "day": "{date}"})
"""


def test_macros_in_tag_values_are_filled_from_the_run(moto: MotoServer, airflow_db: Path) -> None:
    """The connection's tags and the operator's, each from the run's values; a hook used
    outside a run refuses to write a tag it cannot fill instead of storing ``{tenant}``."""
    import datetime
    import os

    from airflow_s3connect.errors import MacroError
    from tests.support.dag_runner import run_dag, write_dag

    conn = {"conn_type": "s3connect", "login": "AKIA1", "password": "s",
            "extra": {"endpoint_url": moto.url, "region_name": REGION, "bucket": BUCKET, "tenant": "acme",
                      "tags": "owner={tenant}&team=data"}}  # fmt: skip
    os.environ["AIRFLOW_CONN_TAGGED"] = json.dumps(conn)
    try:
        with pytest.raises(MacroError, match=r"name \{tenant\}, which only a run can fill"):
            S3ConnectHook(s3connect_conn_id="tagged").upload("t/direct.txt", data=b"x")
        path = write_dag("s3c_tag_macros", TAGGED_DAG)
        result = run_dag(path, "s3c_tag_macros", datetime.datetime(2025, 4, 2, tzinfo=datetime.timezone.utc))
    finally:
        del os.environ["AIRFLOW_CONN_TAGGED"]
    admin = moto.admin_client("s3")
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="t/direct").get("KeyCount", 0) == 0

    def tags(task: str) -> dict[str, str]:
        (written,) = result.value(task)
        key = written["uri"].removeprefix(f"s3://{BUCKET}/")
        return {t["Key"]: t["Value"] for t in admin.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]}

    assert tags("conns") == {"owner": "acme", "team": "data"}
    own = tags("own")  # the operator's tags replace the connection's
    assert re.fullmatch(r"\d{4}_\d{2}_\d{2}", own["day"])
    assert sorted(own) == ["day", "run"]
    assert own["run"]
    assert "{" not in own["run"]


def test_requester_pays_is_said_by_every_read_list_and_copy(
    moto: MotoServer, make_conn: Callable[..., str], tmp_path: Path
) -> None:
    """moto does not charge nor refuse (AWS answers 403 without the header on a Requester
    Pays bucket): every request of each door is asserted at the transport."""
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="in/paid/a.csv", Body=b"a")
    make_conn("payer", "AKIA1", "s", bucket=BUCKET, path_prefix="in", region_name=REGION, endpoint_url=moto.url,
              requester_pays="true")  # fmt: skip
    hook = S3ConnectHook(s3connect_conn_id="payer")
    from airflow_s3connect.filesystem import S3ConnectFileSystem

    with moto.recording() as rec:
        assert [o.key for o in hook.iter_objects("paid/")] == ["in/paid/a.csv"]
        assert hook.read("paid/a.csv") == b"a"
        hook.download(tmp_path, prefix="paid/")
        hook.copy(source_key="paid/a.csv", target_prefix="copied/")
        assert (
            S3ConnectFileSystem(hook.get_conn(), hook.scope_settings.scope).cat_file(f"{BUCKET}/in/paid/a.csv") == b"a"
        )
        hook.delete(["copied/a.csv"])
    requests = rec.s3()
    methods = {r.method for r in requests}
    assert {"GET", "HEAD", "PUT", "POST"} <= methods  # lists, reads, heads, the copy, the delete
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers.get("x-amz-request-payer") == "requester", (request.method, request.url)


#: A bucket another company owns, as Ceph RGW enforces it: every PutObject (a copy too) must
#: ask for SSE-KMS with its key and give the owner full control. (RGW 16 does not evaluate
#: ``s3:RequestObjectTag/...`` on PutObject: the tag is asserted by reading each object's tags.)
def _enterprise_policy(bucket: str) -> str:
    objects = f"arn:aws:s3:::{bucket}/*"
    denies = [
        ("Encrypted", "StringNotEquals", "s3:x-amz-server-side-encryption", "aws:kms"),
        ("TheirKey", "StringNotEquals", "s3:x-amz-server-side-encryption-aws-kms-key-id", "testkey-1"),
        ("OwnerControl", "StringNotEquals", "s3:x-amz-acl", "bucket-owner-full-control"),
    ]
    statements = [
        {"Sid": sid, "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": objects,
         "Condition": {test: {key: value}}}
        for sid, test, key, value in denies
    ]  # fmt: skip
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def test_every_writer_passes_a_bucket_policy_requiring_kms_owner_control_and_a_tag(
    rgw: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On Ceph RGW over HTTPS (SSE-KMS with its test key backend), which evaluates these
    conditions. RGW also evaluates them on UploadPart, which carries none of those headers
    (AWS takes them from the upload's first request): there multipart writes are refused by
    the store, with a message that points at the policy, and nothing is left behind;
    ``overwrite=False`` holds for single-part writes (its probe of the store takes the denied
    multipart upload as "reserve the key first"). Server-side copies with SSE-KMS RGW does
    not implement."""
    from airflow_s3connect.deletes import archive_object
    from airflow_s3connect.errors import AccessDeniedError, S3ConnectError
    from airflow_s3connect.filesystem import S3ConnectFileSystem
    from airflow_s3connect.hooks.task_logs import S3ConnectRemoteLogIO
    from tests.support.stores import store_for

    store = store_for("rgw-https", None, rgw, None)
    bucket = store.new_bucket("s3c-policy")
    fields = {"server_side_encryption": "aws:kms", "kms_key_id": "testkey-1", "acl": "bucket-owner-full-control",
              "tags": "team=data", "path_prefix": "in"}  # fmt: skip
    for name in ("policy", "policy_src"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(store.conn(bucket, **fields)))
    hook, other = S3ConnectHook(s3connect_conn_id="policy"), S3ConnectHook(s3connect_conn_id="policy_src")
    store.admin.put_bucket_policy(Bucket=bucket, Policy=_enterprise_policy(bucket))
    kms = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "testkey-1"}
    for missing in ({}, {"ServerSideEncryption": "aws:kms"}, {**kms}):  # each condition holds
        with pytest.raises(ClientError, match="AccessDenied"):
            store.admin.put_object(Bucket=bucket, Key="in/plain.txt", Body=b"x", **missing)
    hook.upload("small.csv", data=b"a,b\n1,2\n")
    hook.copy(source_key="small.csv", target_prefix="streamed/", source=other)  # streamed
    files = S3ConnectFileSystem(hook.get_conn(), hook.scope_settings.scope)
    with files.open(f"{bucket}/in/fs/file.txt", "wb") as handle:
        handle.write(b"through fsspec")
    logs = S3ConnectRemoteLogIO(f"s3connect://{bucket}/in/logs", tmp_path / "local", conn_id="policy")
    (tmp_path / "local" / "t").mkdir(parents=True)
    (tmp_path / "local" / "t" / "attempt=1.log").write_text("a task's log\n")
    logs.upload(tmp_path / "local" / "t" / "attempt=1.log")
    # Create-only: the store's probe finds multipart denied, single-part writes keep the guarantee.
    hook.upload("once.csv", data=b"first", overwrite=False)
    with pytest.raises(S3ConnectError, match="already exists"):
        hook.upload("once.csv", data=b"second", overwrite=False)
    assert hook.read("once.csv") == b"first"
    keys = ("in/small.csv", "in/streamed/small.csv", "in/fs/file.txt", "in/once.csv", "in/logs/t/attempt=1.log")
    for key in keys:
        head = store.admin.head_object(Bucket=bucket, Key=key)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", "testkey-1"), key
        stored = {t["Key"]: t["Value"] for t in store.admin.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
        assert stored == {"team": "data"}, key
    assert hook.read("streamed/small.csv") == b"a,b\n1,2\n"
    # RGW 16 copies no object server-side with SSE-KMS asked (CopyObject: NotImplemented): so
    # are server-side copies and archives; the store's refusal names itself.
    etag = store.admin.head_object(Bucket=bucket, Key="in/small.csv")["ETag"]
    for copy in (
        lambda: hook.copy(source_key="small.csv", target_prefix="copies/"),
        lambda: archive_object(hook.get_conn(), bucket, "in/small.csv", "in/archive/small.csv", etag, 8),
    ):
        with pytest.raises(S3ConnectError, match=r"CopyObject on .* failed: NotImplemented"):
            copy()
    with pytest.raises(AccessDeniedError, match=r"s3:PutObject .*bucket's policy may refuse writes without a header"):
        hook.upload("big.bin", data=random.Random(7).randbytes(9 * 1024 * 1024))
    with pytest.raises(AccessDeniedError, match="bucket's policy"):
        hook.upload("big-once.bin", data=random.Random(7).randbytes(9 * 1024 * 1024), overwrite=False)
    assert store.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    stored = {o["Key"] for o in store.admin.list_objects_v2(Bucket=bucket)["Contents"]}
    assert stored == set(keys), stored


OPERATORS_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3CatalogOperator, S3CopyObjectsOperator, S3PutObjectOperator

with DAG("s3c_enterprise_writers", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    put = S3PutObjectOperator(task_id="put", s3connect_conn_id="enterprise_ops", key="ops/data.csv",
                              data="a,b\\n1,2\\n", results="manifest", manifest_key="ops/put-manifest.jsonl")
    copy = S3CopyObjectsOperator(task_id="copy", s3connect_conn_id="enterprise_ops", source_key="ops/data.csv",
                                 target_key="ops-copy/data.csv", results="manifest")
    catalog = S3CatalogOperator(task_id="catalog", s3connect_conn_id="enterprise_ops", prefix="ops/",
                                catalog_key="ops-catalog/catalog.json")
    put >> copy >> catalog
"""


def test_manifests_catalogs_and_task_logs_carry_the_write_options(
    moto: MotoServer, make_conn: Callable[..., str], airflow_db: Path, tmp_path: Path
) -> None:
    """The objects an operator writes about its work (a manifest in S3, a catalog) and the
    task logs are writes like any other: the bucket's encryption, ACL, tags and storage
    class reach each of them, read back from the store."""
    import datetime

    from airflow_s3connect.hooks.task_logs import S3ConnectRemoteLogIO
    from tests.support.dag_runner import run_dag, write_dag

    admin = moto.admin_client("s3")
    _conn(moto, make_conn, "enterprise_ops")
    path = write_dag("s3c_enterprise_writers", OPERATORS_DAG)
    result = run_dag(path, "s3c_enterprise_writers", datetime.datetime(2025, 4, 3, tzinfo=datetime.timezone.utc))
    assert result.state == "success", result
    copied = result.value("copy")
    manifests = ["in/ops/put-manifest.jsonl", copied["manifest"].removeprefix(f"s3://{BUCKET}/")]
    assert manifests[1].startswith("in/.s3connect/manifests/s3c_enterprise_writers/"), manifests
    logs = S3ConnectRemoteLogIO(f"s3connect://{BUCKET}/in/logs", tmp_path / "local", conn_id="enterprise_ops")
    local = logs.base_log_folder / "dag_id=d/attempt=1.log"
    local.parent.mkdir(parents=True)
    local.write_text("a task's log\n")
    logs.upload(local)
    written = ["in/ops/data.csv", "in/ops-copy/data.csv", *manifests, "in/ops-catalog/catalog.json",
               "in/logs/dag_id=d/attempt=1.log"]  # fmt: skip
    for key in written:
        _assert_stored(admin, key)
    assert json.loads(admin.get_object(Bucket=BUCKET, Key="in/ops-catalog/catalog.json")["Body"].read())["objects"]


REQUEST_WIDE_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import (
    S3CopyObjectsOperator, S3DeleteObjectsOperator, S3GetObjectOperator, S3ListObjectsOperator, S3PutObjectOperator,
)

OPTIONS = {options!r}
with DAG("s3c_request_wide", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    put = S3PutObjectOperator(task_id="put", s3connect_conn_id="{conn}", key="rw/a.csv", data="a,b", **OPTIONS)
    listed = S3ListObjectsOperator(task_id="list", s3connect_conn_id="{conn}", prefix="rw/", **OPTIONS)
    get = S3GetObjectOperator(task_id="get", s3connect_conn_id="{conn}", key="rw/a.csv", local_dir="{local}",
                              **OPTIONS)
    copy = S3CopyObjectsOperator(task_id="copy", s3connect_conn_id="{conn}", source_conn_id="{conn}_src",
                                 source_key="rw/a.csv", target_key="rw-copy/a.csv", **OPTIONS)
    delete = S3DeleteObjectsOperator(task_id="delete", s3connect_conn_id="{conn}", key="rw-copy/a.csv", **OPTIONS)
    put >> listed >> get >> copy >> delete
"""


def _run_request_wide(conn: str, options: dict[str, Any], local: Path) -> Any:
    import datetime

    from tests.support.dag_runner import run_dag, write_dag

    source = REQUEST_WIDE_DAG.format(options=options, conn=conn, local=local)
    path = write_dag("s3c_request_wide", source)
    result = run_dag(path, "s3c_request_wide", datetime.datetime(2025, 4, 4, tzinfo=datetime.timezone.utc))
    assert result.state == "success", result
    return result


def test_an_operators_requester_pays_reaches_its_reads_lists_and_copy_sources(
    moto: MotoServer, make_conn: Callable[..., str], airflow_db: Path, tmp_path: Path
) -> None:
    """``requester_pays=True`` on an operator, not on its connections: every request of every
    operator says it pays (its listings, HEADs, GETs, the streamed copy's source reads)."""
    for name in ("payer_op", "payer_op_src"):
        make_conn(name, "AKIA1", "s", bucket=BUCKET, path_prefix="in", region_name=REGION, endpoint_url=moto.url)
    with moto.recording() as rec:
        _run_request_wide("payer_op", {"requester_pays": True}, tmp_path / "got")
    requests = rec.s3()
    assert {"GET", "HEAD", "PUT", "POST"} <= {r.method for r in requests}
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers.get("x-amz-request-payer") == "requester", (request.method, request.url)
    assert [p.read_bytes() for p in (tmp_path / "got").rglob("a.csv")] == [b"a,b"]


def test_an_operators_sse_c_key_reads_what_it_wrote(
    rgw: Any, monkeypatch: pytest.MonkeyPatch, airflow_db: Path, tmp_path: Path
) -> None:
    """An SSE-C key on the operators, none on the connections (Ceph RGW over HTTPS): the
    key written with is the key read, listed and copied with, and the store holds the
    objects encrypted with it."""
    from tests.support.stores import store_for

    store = store_for("rgw-https", None, rgw, None)
    bucket = store.new_bucket("s3c-opssec")
    for name in ("ssec_op", "ssec_op_src"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(store.conn(bucket, path_prefix="in")))
    key = "k" * 32
    _run_request_wide("ssec_op", {"sse_customer_key": key}, tmp_path / "got")
    assert [p.read_bytes() for p in (tmp_path / "got").rglob("a.csv")] == [b"a,b"]
    with pytest.raises(ClientError):  # encrypted with the operator's key: unreadable without it
        store.admin.get_object(Bucket=bucket, Key="in/rw/a.csv")
    stored = store.admin.head_object(Bucket=bucket, Key="in/rw/a.csv", SSECustomerAlgorithm="AES256",
                                     SSECustomerKey=key)  # fmt: skip
    assert stored["SSECustomerAlgorithm"] == "AES256"


def test_the_create_only_probe_and_reservation_carry_the_write_options(
    moto: MotoServer, proxy: Any, make_conn: Callable[..., str]
) -> None:
    """Where CompleteMultipartUpload ignores ``If-None-Match`` (as Ceph RGW 16 does), a
    create-only multipart upload first reserves its key with a conditional PutObject: the
    probe's writes and the reservation are object writes like the data's, and a bucket that
    requires encryption, an ACL and tags gets them on each."""
    from tests.support.fault_proxy import Fault

    proxy.schedule(Fault("strip", "CompleteMultipartUpload", times=None, header="if-none-match"))
    make_conn("reserving", "AKIA1", "s", bucket=BUCKET, path_prefix="in", region_name=REGION, endpoint_url=proxy.url,
              **DEFAULTS)  # fmt: skip
    hook = S3ConnectHook(s3connect_conn_id="reserving")
    with moto.recording() as rec:
        hook.upload("reserved.bin", data=random.Random(8).randbytes(9 * 1024 * 1024), overwrite=False)
    creating = _creating(rec.s3())
    written = [urlsplit(r.url).path.split(f"/{BUCKET}/", 1)[-1] for r in creating]
    probes = [key for key in written if ".s3connect-probe-" in key]
    assert len(probes) >= 2, written  # the probe's PutObjects and its multipart upload
    assert written.count("in/reserved.bin") == 2, written  # the reservation, then the upload
    for request in creating:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers.get("x-amz-server-side-encryption") == "AES256", request.url
        assert headers.get("x-amz-acl") == "bucket-owner-full-control", request.url
        assert headers.get("x-amz-tagging") == "env=prod&team=data", request.url
    _assert_stored(moto.admin_client("s3"), "in/reserved.bin")
