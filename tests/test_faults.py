"""Faults injected between boto3 and the store (tests/support/fault_proxy.py), in front of moto and of
Ceph RGW: retries that work, and failures that leave nothing half-done.

Transient faults (the first matching request fails): the operation completes and the data
is byte-identical. Persistent faults (every matching request fails): it fails within a
bounded time, with an error saying what to check, and leaves no partial local file, no
object at the target key and no unfinished multipart upload.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.conditional import conditional_support
from airflow_s3connect.downloads import Downloader, DownloadTask
from airflow_s3connect.errors import EndpointUnreachableError, KeyExistsError, S3ConnectError, TransferInterrupted
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.local import LocalTree
from airflow_s3connect.objects import MiB, ObjectInfo, TransferConfig
from airflow_s3connect.uploads import Uploader
from airflow_s3connect.watch import Watcher, WatchSpec
from airflow_s3connect.writes import WriteOptions
from tests.conftest import BUCKET, REGION
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.moto_server import MotoServer
from tests.support.stores import endpoint_client

CONFIG = TransferConfig(max_concurrency=4, chunk_size=5 * MiB, multipart_threshold=5 * MiB, max_attempts=3)
#: Per request: 3 attempts, 1 s to connect or to get a byte. Persistent faults must fail within this.
BOUND_SECONDS = 20
SMALL_BODY = os.urandom(3000)
LARGE_BODY = os.urandom(12 * MiB + 5)


@dataclass
class Upstream:
    """The S3 server behind the proxy, and how to empty the test bucket on it."""

    name: str
    url: str
    key: str
    secret: str
    region: str
    admin: Any
    reset: Callable[[], None]
    #: Seconds the client waits for an answer. RGW on 2 busy cores sometimes takes more than
    #: 1 s to answer CreateMultipartUpload; the retry then opens a second upload that the
    #: first attempt's lost answer leaves behind, which is not the fault under test.
    read_timeout: int = 1

    def hold(self, extra: dict[str, Any]) -> dict[str, Any]:
        """A "slow" fault's hold: past this upstream's read_timeout."""
        return {**extra, "delay": self.read_timeout + 0.6} if "delay" in extra else extra


def _empty(admin: Any) -> None:
    """RGW has no reset: the bucket is emptied (objects and unfinished uploads) instead."""
    for upload in admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        admin.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            admin.delete_object(Bucket=BUCKET, Key=item["Key"])


@pytest.fixture(scope="module", params=["moto", "rgw-http"])
def upstream(request: pytest.FixtureRequest, moto_plain: MotoServer) -> Upstream:
    """Faults in front of moto and in front of Ceph RGW (over HTTP, which the proxy speaks)."""
    if request.param == "moto":

        def reset() -> None:
            moto_plain.reset()
            moto_plain.admin_client("s3").create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
            )

        return Upstream("moto", moto_plain.url, "AKIAEXAMPLE", "secret", REGION, moto_plain.admin_client("s3"), reset)
    rgw = request.getfixturevalue("rgw")
    admin = rgw.client()
    if BUCKET not in [b["Name"] for b in admin.list_buckets()["Buckets"]]:
        admin.create_bucket(Bucket=BUCKET)
    return Upstream("rgw-http", rgw.http_url, rgw.access_key, rgw.secret_key, "us-east-1", admin,
                    lambda: _empty(admin), read_timeout=4)  # fmt: skip


@pytest.fixture(scope="module")
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    running = FaultProxy(upstream.url).start()
    yield running
    running.stop()


@pytest.fixture
def client(upstream: Upstream, proxy: FaultProxy) -> Any:
    upstream.reset()
    proxy.schedule()
    return endpoint_client(
        proxy.url, key=upstream.key, secret=upstream.secret, region=upstream.region,
        max_attempts=3, connect_timeout=1, read_timeout=upstream.read_timeout,
    )  # fmt: skip


@dataclass
class Operation:
    """One operation under test: how to seed, run and check it, and what it must leave behind."""

    name: str
    run: Callable[[Any, Path], Any]
    check: Callable[[Any, Path, Any], None]
    target_key: str | None = None  # an object that must not exist after a persistent failure
    seed: Callable[[Any], None] = lambda admin: None


def _put(body: bytes, key: str) -> Callable[[Any, Path], Any]:
    def run(client: Any, tmp: Path) -> Any:
        with Uploader(client, BUCKET, CONFIG, WriteOptions()) as up:
            up.put_stream(io.BytesIO(body), key)
            return list(up.results())

    return run


def _stored(body: bytes, key: str) -> Callable[[Any, Path, Any], None]:
    def check(admin: Any, tmp: Path, result: Any) -> None:
        assert admin.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
        assert result[0].size == len(body)

    return check


def _seed(key: str, body: bytes) -> Callable[[Any], None]:
    return lambda admin: admin.put_object(Bucket=BUCKET, Key=key, Body=body)


def _seed_prefix(admin: Any) -> None:
    for i in range(6):
        admin.put_object(Bucket=BUCKET, Key=f"p/{i}.bin", Body=SMALL_BODY + bytes([i]))


def _get(key: str, size_known: bool) -> Callable[[Any, Path], Any]:
    def run(client: Any, tmp: Path) -> Any:
        size = len(SMALL_BODY) if size_known else None
        return list(Downloader(client, BUCKET, CONFIG).download([DownloadTask(key, tmp / "out.bin", size)]))

    return run


def _fetched(body: bytes) -> Callable[[Any, Path, Any], None]:
    def check(admin: Any, tmp: Path, result: Any) -> None:
        assert (tmp / "out.bin").read_bytes() == body
        assert [p.name for p in tmp.iterdir()] == ["out.bin"]

    return check


def _get_prefix(client: Any, tmp: Path) -> Any:
    tree = LocalTree(tmp)
    tasks = (
        DownloadTask(o.key, tree.path_for(o.key, "p/"), o.size, o.etag, o.last_modified)
        for o in Lister(client, BUCKET, ListQuery(base="p/"))
        if isinstance(o, ObjectInfo)
    )
    return list(Downloader(client, BUCKET, CONFIG).download(tasks))


def _prefix_fetched(admin: Any, tmp: Path, result: Any) -> None:
    assert sorted(p.name for p in tmp.iterdir()) == [f"{i}.bin" for i in range(6)]
    assert all((tmp / f"{i}.bin").read_bytes() == SMALL_BODY + bytes([i]) for i in range(6))


def _list(client: Any, tmp: Path) -> Any:
    return [o.key for o in Lister(client, BUCKET, ListQuery(base="p/")) if isinstance(o, ObjectInfo)]


def _listed(admin: Any, tmp: Path, result: Any) -> None:
    assert result == [f"p/{i}.bin" for i in range(6)]


def _poke(client: Any, tmp: Path) -> Any:
    return Watcher(WatchSpec(bucket=BUCKET, base="p/", pattern="*.bin", min_size=100, collect_all=True)).poke(
        client, time.time()
    )


def _poked(admin: Any, tmp: Path, result: Any) -> None:
    assert result is not None
    assert sorted(o.key for o in result) == [f"p/{i}.bin" for i in range(6)]


OPERATIONS = {
    "put_single": Operation("put_single", _put(SMALL_BODY, "t/small.bin"), _stored(SMALL_BODY, "t/small.bin"),
                            "t/small.bin"),
    "put_multipart": Operation("put_multipart", _put(LARGE_BODY, "t/large.bin"), _stored(LARGE_BODY, "t/large.bin"),
                               "t/large.bin"),
    "get_single": Operation("get_single", _get("s/small.bin", True), _fetched(SMALL_BODY),
                            seed=_seed("s/small.bin", SMALL_BODY)),
    "get_ranged": Operation("get_ranged", _get("s/large.bin", False), _fetched(LARGE_BODY),
                            seed=_seed("s/large.bin", LARGE_BODY)),
    "get_prefix": Operation("get_prefix", _get_prefix, _prefix_fetched, seed=_seed_prefix),
    "list": Operation("list", _list, _listed, seed=_seed_prefix),
    "sensor": Operation("sensor", _poke, _poked, seed=_seed_prefix),
}  # fmt: skip


#: A "slow" fault's hold: past the client's read_timeout of 1 s.
SLOW = {"delay": 1.6}


#: (operation, S3 call faulted, fault kind, extra Fault fields). Puts run with overwrite on
#: here; a retried conditional write is its own test below. "cut" needs a response body, so
#: it is not scheduled on PutObject / UploadPart (their answers have none).
TRANSIENT: list[tuple[str, str, str, dict[str, Any]]] = [
    *[("put_single", "PutObject", kind, {}) for kind in ("500", "503", "reset")],
    ("put_single", "PutObject", "slow", SLOW),
    *[("put_multipart", "UploadPart", kind, {}) for kind in ("500", "503", "reset")],
    ("put_multipart", "UploadPart", "slow", SLOW),
    ("put_multipart", "CreateMultipartUpload", "503", {}),
    ("put_multipart", "CompleteMultipartUpload", "500", {}),
    *[("get_single", "GetObject", kind, {}) for kind in ("500", "503", "reset", "cut")],
    ("get_single", "GetObject", "slow", SLOW),
    *[("get_ranged", "GetObject", kind, {"ranged": True, "times": 2}) for kind in ("500", "503", "reset", "cut")],
    ("get_ranged", "GetObject", "slow", {**SLOW, "ranged": True}),
    ("get_prefix", "ListObjectsV2", "503", {}),
    *[("get_prefix", "GetObject", kind, {"times": 3}) for kind in ("500", "reset", "cut")],
    *[("list", "ListObjectsV2", kind, {}) for kind in ("500", "503", "reset", "cut")],
    ("list", "ListObjectsV2", "slow", SLOW),
    *[("sensor", "ListObjectsV2", kind, {}) for kind in ("500", "503", "reset", "cut")],
    ("sensor", "ListObjectsV2", "slow", SLOW),
]


@pytest.mark.parametrize(
    ("operation", "call", "kind", "extra"), TRANSIENT, ids=[f"{o}-{c}-{k}" for o, c, k, _ in TRANSIENT]
)
def test_transient_fault_is_retried_and_data_is_identical(
    operation: str, call: str, kind: str, extra: dict[str, Any], upstream: Upstream, proxy: FaultProxy, client: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    op = OPERATIONS[operation]
    admin = upstream.admin
    op.seed(admin)
    fault = Fault(kind, call, **upstream.hold(extra))
    proxy.schedule(fault)
    result = op.run(client, tmp_path)
    assert fault.seen == fault.times, f"the schedule did not fire: {proxy.operations}"
    op.check(admin, tmp_path, result)
    assert admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


#: (operation, S3 call, kind, error type, message part, extra Fault fields)
PERSISTENT: list[tuple[str, str, str, type[Exception], str, dict[str, Any]]] = [
    ("put_single", "PutObject", "500", S3ConnectError, "PutObject on arn:aws:s3:::s3connect-test/t/small.bin failed: "
     "InternalError", {}),
    ("put_single", "PutObject", "reset", EndpointUnreachableError, "lost its connection to", {}),
    ("put_multipart", "UploadPart", "503", S3ConnectError, "failed: SlowDown", {}),
    ("put_multipart", "UploadPart", "reset", EndpointUnreachableError, "on every attempt: check endpoint_url", {}),
    ("put_multipart", "CompleteMultipartUpload", "500", S3ConnectError, "failed: InternalError", {}),
    ("get_single", "GetObject", "500", S3ConnectError, "GetObject on arn:aws:s3:::s3connect-test/s/small.bin failed",
     {}),
    ("get_single", "GetObject", "cut", TransferInterrupted, "broke off 3 times", {}),
    ("get_ranged", "GetObject", "reset", EndpointUnreachableError, "lost its connection to", {"ranged": True}),
    ("get_ranged", "GetObject", "cut", TransferInterrupted, "check the network or the store, then run again",
     {"ranged": True, "key_contains": "large"}),
    ("get_ranged", "GetObject", "slow", EndpointUnreachableError, "within the connection's read_timeout",
     {**SLOW, "ranged": True}),
    ("get_prefix", "GetObject", "503", S3ConnectError, "failed: SlowDown", {"key_contains": "3.bin"}),
    ("get_prefix", "ListObjectsV2", "reset", EndpointUnreachableError, "ListObjectsV2 lost its connection", {}),
    ("list", "ListObjectsV2", "503", S3ConnectError, "failed: SlowDown", {}),
    ("list", "ListObjectsV2", "cut", S3ConnectError, "ListObjectsV2", {}),
    ("sensor", "ListObjectsV2", "500", S3ConnectError, "failed: InternalError", {}),
    ("sensor", "ListObjectsV2", "slow", EndpointUnreachableError, "read_timeout", SLOW),
]  # fmt: skip


@pytest.mark.parametrize(
    ("operation", "call", "kind", "error", "message", "extra"),
    PERSISTENT,
    ids=[f"{o}-{c}-{k}" for o, c, k, *_ in PERSISTENT],
)
def test_persistent_fault_fails_bounded_and_leaves_nothing(
    operation: str, call: str, kind: str, error: type[Exception], message: str, extra: dict[str, Any],
    upstream: Upstream, proxy: FaultProxy, client: Any, tmp_path: Path,
) -> None:  # fmt: skip
    op = OPERATIONS[operation]
    admin = upstream.admin
    op.seed(admin)
    before = {o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    proxy.schedule(Fault(kind, call, times=None, **upstream.hold(extra)))
    started = time.monotonic()
    with pytest.raises(error) as info:
        op.run(client, tmp_path)
    elapsed = time.monotonic() - started
    assert message in str(info.value)
    assert "secret" not in str(info.value)
    assert elapsed < BOUND_SECONDS, f"took {elapsed:.1f} s"
    # No partial file: no temporary, and any file present is a whole object of the prefix
    # (a prefix download keeps the objects it finished before the failure, like a sync).
    left = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in left if ".part" in n] == [], "a temporary file was left"
    if operation == "get_prefix":
        assert "3.bin" not in left
        assert all((tmp_path / n).read_bytes() == SMALL_BODY + bytes([int(n[0])]) for n in left)
    else:
        assert left == [], "a local file was left"
    after = {o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert after == before, "an object was written at the target key"
    assert admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def _put_once(client: Any) -> None:
    with Uploader(client, BUCKET, CONFIG, WriteOptions(overwrite=False)) as up:
        up.put_stream(io.BytesIO(SMALL_BODY), "t/once.bin")
        list(up.results())


def test_a_retried_conditional_write_says_it_may_be_its_own(upstream: Upstream, proxy: FaultProxy, client: Any) -> None:
    """The first PUT reaches S3 but its answer is lost (slow past read_timeout); the retry
    then meets the object it wrote itself. The error must not claim someone else did."""
    conditional_support(client, BUCKET, "")  # the store's probe first, so that the fault hits our PUT
    proxy.schedule(Fault("slow", "PutObject", **upstream.hold(SLOW)))
    with pytest.raises(KeyExistsError) as info:
        _put_once(client)
    assert "retried after a lost answer: the object may be this run's own first attempt" in str(info.value)
    assert upstream.admin.get_object(Bucket=BUCKET, Key="t/once.bin")["Body"].read() == SMALL_BODY
