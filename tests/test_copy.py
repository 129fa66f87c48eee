"""The copy engine: planned parts, server-side copies on every store, streamed copies
between two identities, and what a short or replaced source does to a copy (nothing)."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from airflow_s3connect.copies import MAX_PARTS, SOURCE_ETAG, Copier, CopyTask, plan_parts
from airflow_s3connect.errors import ObjectChangedError, S3ConnectError, TransferInterrupted
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.objects import MiB, ObjectInfo, TransferConfig
from airflow_s3connect.progress import Meter
from airflow_s3connect.writes import WriteOptions
from tests.conftest import BUCKET, REGION
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.moto_server import IamFactory, MotoServer
from tests.support.stores import Store, TaskState, endpoint_client

GiB = 1024 * MiB
SMALL = TransferConfig(max_concurrency=4, chunk_size=5 * MiB, multipart_threshold=5 * MiB)


def test_a_5_gib_copy_is_planned_in_contiguous_parts_within_s3s_limits() -> None:
    size = 5 * GiB + 1
    plan = plan_parts(size, 8 * MiB)
    assert len(plan) == 641
    assert plan[0] == (1, 0, 8 * MiB - 1)
    assert plan[-1] == (641, 640 * 8 * MiB, size - 1)
    assert all(b[1] == a[2] + 1 for a, b in itertools.pairwise(plan))
    huge = plan_parts(200 * GiB, 5 * MiB)  # 40,960 parts of 5 MiB would be too many: doubled
    assert len(huge) <= MAX_PARTS
    assert huge[0][2] + 1 == 40 * MiB
    with pytest.raises(S3ConnectError, match="10000 parts of at most 5 GiB"):
        plan_parts(60_000 * GiB, 5 * MiB)


def _listed(client: Any, bucket: str, prefix: str) -> list[ObjectInfo]:
    return [e for e in Lister(client, bucket, ListQuery(base=prefix)) if isinstance(e, ObjectInfo)]


def _hook(store: Store, bucket: str, monkeypatch: pytest.MonkeyPatch, conn_id: str = "cp") -> S3ConnectHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(store.conn(bucket)))
    return S3ConnectHook(s3connect_conn_id=conn_id)


def test_server_side_copies_small_and_multipart_then_skips_them(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = store.new_bucket("s3c-cp")
    blobs = {"src/a.txt": b"alpha", "src/sub/b.bin": random.Random(3).randbytes(12 * MiB + 7)}
    for key, body in blobs.items():
        store.admin.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/x-test")
    client = _hook(store, bucket, monkeypatch).get_conn()
    tasks = [CopyTask(info, "dst/" + info.key[len("src/") :]) for info in _listed(client, bucket, "src/")]
    copier = Copier(client, bucket, client, bucket, SMALL, WriteOptions(), server_side=True, skip_unchanged=True)
    done = list(copier.run(tasks))
    assert [(c.key, c.method) for c in done] == [("dst/a.txt", "server"), ("dst/sub/b.bin", "server")]
    for key, body in blobs.items():
        target = "dst/" + key[len("src/") :]
        copied = store.admin.get_object(Bucket=bucket, Key=target)
        assert copied["Body"].read() == body
        assert copied["ContentType"] == "text/x-test"
    big = store.admin.head_object(Bucket=bucket, Key="dst/sub/b.bin")
    assert big["ETag"].endswith('-3"')  # 3 parts of UploadPartCopy
    assert big["Metadata"][SOURCE_ETAG] == tasks[1].source.etag
    assert store.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    again = Copier(client, bucket, client, bucket, SMALL, WriteOptions(), server_side=True, skip_unchanged=True)
    assert [c.method for c in again.run(tasks)] == ["unchanged", "unchanged"]


def test_a_small_copy_is_one_request_and_reports_the_quoted_etag(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ceph RGW answers a copy's ETag without quotes: compared as-is, every copy looked
    changed and cost a HEAD of the copy and of the source (3 requests instead of 1)."""
    bucket = store.new_bucket("s3c-cp1")
    for i in range(3):
        store.admin.put_object(Bucket=bucket, Key=f"one/{i}.txt", Body=f"body {i}".encode())
    client = _hook(store, bucket, monkeypatch).get_conn()
    tasks = [CopyTask(info, "copied/" + info.key) for info in _listed(client, bucket, "one/")]
    with Meter("test", interval=0).attached(client) as counter:
        done = list(Copier(client, bucket, client, bucket, SMALL, WriteOptions(), server_side=True).run(tasks))
    assert counter.requests == 3
    assert [c.etag for c in done] == [t.source.etag for t in tasks]
    assert all(c.etag.startswith('"') and c.etag.endswith('"') for c in done)


def test_a_source_replaced_after_listing_is_not_copied(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = store.new_bucket("s3c-cp")
    store.admin.put_object(Bucket=bucket, Key="src/a.txt", Body=b"first version")
    client = _hook(store, bucket, monkeypatch).get_conn()
    (listed,) = _listed(client, bucket, "src/")
    store.admin.put_object(Bucket=bucket, Key="src/a.txt", Body=b"second version, longer")
    for server_side in (True, False):
        copier = Copier(client, bucket, client, bucket, SMALL, WriteOptions(), server_side=server_side)
        with pytest.raises(ObjectChangedError, match="changed while it was copied"):
            list(copier.run([CopyTask(listed, "dst/a.txt")]))
        assert store.admin.list_objects_v2(Bucket=bucket, Prefix="dst/").get("KeyCount", 0) == 0


def test_a_short_source_body_completes_no_copy(moto: MotoServer, proxy: FaultProxy) -> None:
    """The store loses the last byte without a network error: the multipart upload is aborted."""
    body = random.Random(5).randbytes(11 * MiB)
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="src/big.bin", Body=body)
    source = endpoint_client(proxy.url, max_attempts=1)
    target = endpoint_client(moto.url)
    (listed,) = _listed(target, BUCKET, "src/")
    proxy.schedule(Fault("short", "GetObject", times=None))
    copier = Copier(source, BUCKET, target, BUCKET, SMALL, WriteOptions(), server_side=False)
    # botocore's response checksum (moto sends one) or our byte count catches it first.
    with pytest.raises(S3ConnectError, match=r"do not match the checksum|gave 11534335 bytes") as info:
        list(copier.run([CopyTask(listed, "dst/big.bin")]))
    assert "src/big.bin" in str(info.value)
    admin = moto.admin_client("s3")
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="dst/").get("KeyCount", 0) == 0
    assert admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def _in_one_part(admin: Any, key: str, body: bytes) -> None:
    """An object uploaded in parts (one): its ETag ends in ``-1``."""
    upload = admin.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    part = admin.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=body)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    admin.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload=parts)


@pytest.mark.parametrize("size", [4 * MiB, 12 * MiB], ids=["CopyObject", "UploadPartCopy"])
def test_a_store_refusing_the_pin_of_an_unchanged_multipart_source_still_copies_it(
    moto: MotoServer, proxy: FaultProxy, size: int
) -> None:
    """OpenStack Swift answers 412 to ``x-amz-copy-source-if-match`` with any ``-N`` ETag:
    every copy of an object uploaded in parts failed "changed while it was copied". A HEAD
    shows it did not change; the copy is made unpinned and proven by the checks after it.
    A source that really changed is still refused."""
    from airflow_s3connect import conditional

    conditional._refused.clear()
    admin = moto.admin_client("s3")
    body = random.Random(size).randbytes(size)
    _in_one_part(admin, "src/parts.bin", body)
    client = endpoint_client(proxy.url)
    (listed,) = _listed(client, BUCKET, "src/")
    assert listed.etag.endswith('-1"')
    proxy.schedule(Fault("412", "CopyObject", times=None, header="x-amz-copy-source-if-match"),
                   Fault("412", "UploadPart", times=None, header="x-amz-copy-source-if-match"))  # fmt: skip
    copier = Copier(client, BUCKET, client, BUCKET, SMALL, WriteOptions(), server_side=True)
    (done,) = copier.run([CopyTask(listed, "dst/parts.bin")])
    assert admin.get_object(Bucket=BUCKET, Key="dst/parts.bin")["Body"].read() == body
    refused = len(proxy.injected)  # 1, or a few parts copied at once
    assert refused >= 1
    assert {i.kind for i in proxy.injected} == {"412"}
    assert "HeadObject" in proxy.operations
    assert done.method == "server"
    (_again,) = Copier(client, BUCKET, client, BUCKET, SMALL, WriteOptions(), server_side=True).run(
        [CopyTask(listed, "dst/again.bin")]
    )
    assert len(proxy.injected) == refused  # the store is known now: later copies are not pinned
    # A source replaced between the listing and the copy is still refused, pinned or not.
    admin.put_object(Bucket=BUCKET, Key="src/parts.bin", Body=b"replaced")
    with pytest.raises(ObjectChangedError, match="changed while it was copied"):
        list(Copier(client, BUCKET, client, BUCKET, SMALL, WriteOptions(), server_side=True).run(
            [CopyTask(listed, "dst/late.bin")]))  # fmt: skip
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="dst/late").get("KeyCount", 0) == 0
    conditional._refused.clear()


def test_archive_of_a_multipart_original_where_the_store_refuses_the_pin(moto: MotoServer, proxy: FaultProxy) -> None:
    """Get ``after="archive"`` on Swift: "replaced after it was downloaded" for every object
    uploaded in parts. The original is archived, and a replaced one is still kept."""
    from airflow_s3connect import conditional
    from airflow_s3connect.deletes import archive_object

    conditional._refused.clear()
    admin = moto.admin_client("s3")
    for key in ("in/a.bin", "in/b.bin"):
        _in_one_part(admin, key, key.encode())
    client = endpoint_client(proxy.url)
    a, b = _listed(client, BUCKET, "in/")
    proxy.schedule(Fault("412", "CopyObject", times=None, header="x-amz-copy-source-if-match"),
                   Fault("412", "DeleteObject", times=None, header="if-match"))  # fmt: skip
    archive_object(client, BUCKET, a.key, "done/a.bin", a.etag, a.size)
    assert admin.get_object(Bucket=BUCKET, Key="done/a.bin")["Body"].read() == b"in/a.bin"
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="in/a").get("KeyCount", 0) == 0
    assert [i.operation for i in proxy.injected] == ["CopyObject", "DeleteObject"]  # each refused once
    admin.put_object(Bucket=BUCKET, Key=b.key, Body=b"new in/b.bin")
    with pytest.raises(ObjectChangedError, match="replaced after it was downloaded"):
        archive_object(client, BUCKET, b.key, "done/b.bin", b.etag, b.size)
    assert admin.get_object(Bucket=BUCKET, Key=b.key)["Body"].read() == b"new in/b.bin"
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="done/b").get("KeyCount", 0) == 0
    conditional._refused.clear()


def test_streamed_copy_between_two_identities_that_cannot_see_each_others_bucket(
    iam: IamFactory, make_conn: Callable[..., str]
) -> None:
    """A partner's role reads their bucket only; our user writes ours only."""
    iam.bucket("partner-out")
    admin = iam.server.admin_client("s3")
    body = random.Random(9).randbytes(7 * MiB + 3)
    admin.put_object(Bucket="partner-out", Key="export/data.bin", Body=body)
    admin.put_object(Bucket="partner-out", Key="export/small.csv", Body=b"a,b\n1,2\n")
    base = iam.user("cp-base", ["sts:AssumeRole"])
    resources = ["arn:aws:s3:::partner-out", "arn:aws:s3:::partner-out/*"]
    role = iam.role(
        "partner-reader", ["s3:ListBucket", "s3:GetObject"], resources, trusted=base.arn, external_id="ext-9"
    )
    ours = iam.user("cp-writer", ["s3:PutObject"], [f"arn:aws:s3:::{BUCKET}/*"])
    common = {"region_name": REGION, "endpoint_url": iam.server.url, "sts_endpoint_url": iam.server.url}
    partner = make_conn("cp_partner", base.key, base.secret, bucket="partner-out", auth_type="assume_role",
                        role_arn=role, external_id="ext-9", **common)  # fmt: skip
    us = make_conn("cp_us", ours.key, ours.secret, bucket=BUCKET, path_prefix="inbound", **common)
    iam.enforce()
    source = S3ConnectHook(s3connect_conn_id=partner).get_conn()
    target = S3ConnectHook(s3connect_conn_id=us).get_conn()
    listed = _listed(source, "partner-out", "export/")
    with pytest.raises(ClientError, match="AccessDenied"):  # our identity cannot read theirs
        target.list_objects_v2(Bucket=BUCKET, Prefix="inbound/")
    copier = Copier(source, "partner-out", target, BUCKET, SMALL, WriteOptions(overwrite=False), server_side=False,
                    prefix="inbound/")  # fmt: skip
    done = list(copier.run([CopyTask(i, "inbound/" + i.key) for i in listed]))
    assert [(c.key, c.method, c.size) for c in done] == [
        ("inbound/export/data.bin", "stream", len(body)),
        ("inbound/export/small.csv", "stream", 8),
    ]
    iam.server.set_auth(enforced=False)
    assert admin.get_object(Bucket=BUCKET, Key="inbound/export/data.bin")["Body"].read() == body


@pytest.mark.parametrize("server_side", [True, False], ids=["server-side", "streamed"])
def test_multipart_copies_report_their_open_uploads_for_a_later_try(moto: MotoServer, server_side: bool) -> None:
    """What a killed worker would leave is recorded while it is open and forgotten once done,
    as Put records its uploads; a later try aborts what is recorded (below)."""
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="mp/big.bin", Body=random.Random(5).randbytes(11 * MiB))
    client = endpoint_client(moto.url, region=REGION)
    reports: list[dict[str, str]] = []
    copier = Copier(client, BUCKET, client, BUCKET, SMALL, WriteOptions(), server_side=server_side,
                    on_open=lambda open_now: reports.append(dict(open_now["uploads"])))  # fmt: skip
    (done,) = copier.run([CopyTask(_listed(client, BUCKET, "mp/")[0], "mp-copy/big.bin")])
    assert done.method == ("server" if server_side else "stream")
    assert [set(r.values()) for r in reports] == [{"mp-copy/big.bin"}, set()]
    assert moto.admin_client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_cancelled_copy_stops_and_leaves_no_upload(moto: MotoServer) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="cx/a.txt", Body=b"a")
    client = endpoint_client(moto.url, region=REGION)
    copier = Copier(client, BUCKET, client, BUCKET, SMALL, WriteOptions(), server_side=True)
    copier.cancel("the task was killed")
    with pytest.raises(TransferInterrupted, match="Copy cancelled: the task was killed"):
        list(copier.run([CopyTask(_listed(client, BUCKET, "cx/")[0], "cx-copy/a.txt")]))
    assert moto.admin_client("s3").list_objects_v2(Bucket=BUCKET, Prefix="cx-copy/").get("KeyCount") == 0


def test_a_later_try_aborts_what_the_killed_one_recorded(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_s3connect.operators import S3CopyObjectsOperator
    from airflow_s3connect.operators.base import OPEN_STATE

    admin = moto.admin_client("s3")
    left = admin.create_multipart_upload(Bucket=BUCKET, Key="killed/big.bin")["UploadId"]
    conn = {"conn_type": "s3connect", "login": "AKIAEXAMPLE", "password": "secret",
            "extra": {"endpoint_url": moto.url, "region_name": REGION, "bucket": BUCKET}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_RETRY", json.dumps(conn))
    store = TaskState({OPEN_STATE: {"uploads": {left: "killed/big.bin"}, "reservations": {}}})
    copy = S3CopyObjectsOperator(task_id="c", source_prefix="x/", s3connect_conn_id="retry")
    remember = copy.track_open({"task_state_store": store}, BUCKET)
    assert admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert store[OPEN_STATE] == {}
    assert remember is not None
    remember({"uploads": {"u-1": "k"}, "reservations": {}})
    assert store[OPEN_STATE] == {"uploads": {"u-1": "k"}, "reservations": {}}
    assert copy.track_open({}, BUCKET) is None  # Airflow before 3.3: no store, a lifecycle rule's job
