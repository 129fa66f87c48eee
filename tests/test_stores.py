"""What S3-compatible stores do differently, on real servers (moto, Ceph RGW over HTTP and
HTTPS) and on the fault proxy for what neither server does: checksums, conditional writes,
stored bytes, and an uploader that fails cleanly."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect import conditional
from airflow_s3connect.connection import effective_mode
from airflow_s3connect.deletes import archive_object, delete_object
from airflow_s3connect.downloads import Downloader, DownloadTask, read_object
from airflow_s3connect.errors import (
    ConditionalWriteUnsupportedError,
    IntegrityError,
    KeyExistsError,
    ObjectChangedError,
    S3ConnectError,
    TransferInterrupted,
    store_message,
)
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.objects import TransferConfig
from airflow_s3connect.uploads import Uploader
from airflow_s3connect.writes import RESERVATION_BODY, WriteOptions
from tests.conftest import BUCKET, REGION
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.moto_server import MotoServer
from tests.support.stores import Store, TaskState, endpoint_client

MiB = 1024 * 1024
PARTS = TransferConfig(multipart_threshold=5 * MiB, chunk_size=5 * MiB, max_concurrency=4)


def _client(store: Store, bucket: str, **extra: Any) -> Any:
    return store.client(bucket, max_attempts=1, **extra)


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test probes its store's conditional writes anew."""
    monkeypatch.setattr(conditional, "_cache", {})


def _put(client: Any, bucket: str, key: str, body: bytes, overwrite: bool, config: TransferConfig = PARTS) -> Any:
    with Uploader(client, bucket, config, WriteOptions(overwrite=overwrite)) as up:
        up.put_stream(io.BytesIO(body), key)
        return list(up.results())


def test_checksum_mode_auto_is_the_sdk_on_aws_and_headers_elsewhere() -> None:
    assert effective_mode("auto", None) == "sdk"
    assert effective_mode("auto", "https://s3.eu-west-1.amazonaws.com") == "sdk"
    assert effective_mode("auto", "https://rgw.internal:8443") == "header"
    assert effective_mode("off", None) == "off"


@pytest.mark.parametrize("size", [11, 12 * MiB + 5])
def test_uploads_store_exactly_our_bytes(store: Store, size: int) -> None:
    """Single and multipart, on every store; over HTTPS the SDK's trailer would be refused."""
    bucket = store.new_bucket()
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    (done,) = _put(_client(store, bucket), bucket, "exact.bin", body, overwrite=True)
    assert done.size == size
    assert store.admin.get_object(Bucket=bucket, Key="exact.bin")["Body"].read() == body
    assert store.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_sdk_checksums_over_https_fail_on_rgw_and_say_so(rgw: Any) -> None:
    """What every boto3 ≥ 1.36 user meets on RGW over HTTPS, and why ``auto`` is headers there."""
    from tests.support.stores import store_for

    store = store_for("rgw-https", None, rgw)
    bucket = store.new_bucket()
    with pytest.raises(S3ConnectError, match="MissingContentLength"):
        _put(_client(store, bucket, checksum_mode="sdk"), bucket, "sdk.bin", b"data", overwrite=True)
    assert _put(_client(store, bucket), bucket, "auto.bin", b"data", overwrite=True)[0].size == 4


@pytest.mark.parametrize("size", [100, 6 * MiB])
def test_overwrite_off_never_overwrites(store: Store, size: int) -> None:
    """RGW honours If-None-Match on PutObject only: multipart uploads reserve their key first."""
    bucket = store.new_bucket()
    store.admin.put_object(Bucket=bucket, Key="taken.bin", Body=b"original")
    client = _client(store, bucket)
    with pytest.raises(S3ConnectError, match=store.overwrite_off_refusal):
        _put(client, bucket, "taken.bin", b"z" * size, overwrite=False)
    assert store.admin.get_object(Bucket=bucket, Key="taken.bin")["Body"].read() == b"original"
    assert store.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    if not store.create_only:  # refused before writing, on a free key too
        with pytest.raises(ConditionalWriteUnsupportedError, match="Use overwrite=True with a key no other run"):
            _put(client, bucket, "free.bin", b"z" * size, overwrite=False)
        keys = [o["Key"] for o in store.admin.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys == ["taken.bin"]
        return
    (done,) = _put(client, bucket, "free.bin", b"z" * size, overwrite=False)
    assert store.admin.get_object(Bucket=bucket, Key="free.bin")["Body"].read() == b"z" * size
    head = store.admin.head_object(Bucket=bucket, Key="free.bin")
    assert "s3connect-reservation" not in head["Metadata"]
    keys = [o["Key"] for o in store.admin.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert sorted(keys) == ["free.bin", "taken.bin"]  # the probe cleaned up after itself
    assert done.size == size


def test_rgw_is_probed_as_honouring_conditional_puts_only(rgw: Any) -> None:
    from tests.support.stores import store_for

    store = store_for("rgw-http", None, rgw)
    bucket = store.new_bucket()
    support = conditional.conditional_support(_client(store, bucket), bucket, "")
    assert (support.put, support.complete) == ("honoured", "ignored")


def _proxied(proxy: FaultProxy) -> Any:
    return endpoint_client(proxy.url, max_attempts=1)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault("strip", "PutObject", times=None, header="if-none-match"), "ignores conditional writes"),
        (Fault("501", "PutObject", times=None, header="if-none-match"), "refuses conditional writes"),
    ],
    ids=["ignores-if-none-match", "501-on-conditional-put"],
)
def test_overwrite_off_is_refused_before_writing_where_the_store_cannot_keep_it(
    moto: MotoServer, proxy: FaultProxy, fault: Fault, words: str
) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="taken.bin", Body=b"original")
    proxy.schedule(fault)
    with pytest.raises(ConditionalWriteUnsupportedError, match=words) as info:
        _put(_proxied(proxy), BUCKET, "taken.bin", b"new", overwrite=False)
    assert "nothing was written" in str(info.value)
    assert "{uuid}" in str(info.value)
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key="taken.bin")["Body"].read() == b"original"
    written = [op for op in proxy.operations if op in ("PutObject", "CompleteMultipartUpload")]
    assert len(written) == 3  # the probe's own key only: create, conditional put, (multipart) …
    keys = [o["Key"] for o in moto.admin_client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["taken.bin"]


def test_a_store_ignoring_the_condition_on_complete_gets_reservations(moto: MotoServer, proxy: FaultProxy) -> None:
    proxy.schedule(Fault("strip", "CompleteMultipartUpload", times=None, header="if-none-match"))
    client = _proxied(proxy)
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="taken.bin", Body=b"original")
    with pytest.raises(KeyExistsError):
        _put(client, BUCKET, "taken.bin", b"z" * (6 * MiB), overwrite=False)
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key="taken.bin")["Body"].read() == b"original"
    (done,) = _put(client, BUCKET, "new.bin", b"z" * (6 * MiB), overwrite=False)
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key="new.bin")["Body"].read() == b"z" * (6 * MiB)
    assert done.etag


def test_a_store_keeping_other_bytes_fails_the_write(moto: MotoServer, proxy: FaultProxy) -> None:
    """The ETag a store answers is the MD5 of what it stored: ours must match. The object is
    removed only while the key holds the write that was answered for: here the key holds
    an object whose ETag is not the answered one (as if another writer stored it since), so
    it is kept, and the error says so."""
    proxy.schedule(Fault("etag", "PutObject", times=None))
    with pytest.raises(IntegrityError, match=r"answered ETag 0+bad for a body whose MD5 is [0-9a-f]{32}") as info:
        _put(_proxied(proxy), BUCKET, "corrupt.bin", b"payload", overwrite=True)
    assert "it was not removed (the delete was refused, or the key holds another write since)" in str(info.value)
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key="corrupt.bin")["Body"].read() == b"payload"
    proxy.schedule(Fault("etag", "UploadPart", times=None))
    with pytest.raises(IntegrityError, match="UploadPart"):
        _put(_proxied(proxy), BUCKET, "corrupt-big.bin", b"p" * (6 * MiB), overwrite=True)
    assert moto.admin_client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert moto.admin_client("s3").list_objects_v2(Bucket=BUCKET, Prefix="corrupt-big")["KeyCount"] == 0


def test_a_body_damaged_on_the_way_is_refused_and_nothing_is_written(store: Store, tmp_path: Path) -> None:
    """Every body carries its MD5 as a signed header and no payload hash (one digest, not
    two): a store refuses a body that does not match it, and where a store checks nothing
    (moto) the ETag comparison fails the write and removes what was stored. Single-part
    from a file (the native engine where it applies) and from a stream, and a multipart
    upload's part (dropped with its upload)."""
    bucket = store.new_bucket()
    signed: list[object] = []

    def payload_hash(request: Any, **_: Any) -> None:
        assert request.headers["Content-MD5"]
        signed.append(request.headers["X-Amz-Content-SHA256"])

    if not store.endpoint_url.startswith("http://"):  # TLS: no middlebox can change a body unseen
        client = _client(store, bucket)
        client.meta.events.register("before-send.s3.UploadPart", payload_hash)
        _put(client, bucket, "whole.bin", b"w" * (6 * MiB), overwrite=True)
        assert set(signed) == {b"UNSIGNED-PAYLOAD"}
        return
    proxy = FaultProxy(store.endpoint_url).start()
    try:
        client = endpoint_client(proxy.url, key=store.key, secret=store.secret, region=store.region, bucket=bucket,
                                 max_attempts=1)  # fmt: skip
        for operation in ("PutObject", "UploadPart"):
            client.meta.events.register(f"before-send.s3.{operation}", payload_hash)
        (tmp_path / "small.bin").write_bytes(b"s" * 1000)

        def upload(door: Callable[[Uploader], None]) -> None:
            with Uploader(client, bucket, PARTS, WriteOptions(overwrite=True)) as up:
                door(up)
                list(up.results())

        doors: list[tuple[str, str, Callable[[Uploader], None]]] = [
            ("PutObject", "file.bin", lambda up: up.put_file(tmp_path / "small.bin", "file.bin")),
            ("PutObject", "stream.bin", lambda up: up.put_stream(io.BytesIO(b"s" * 1000), "stream.bin")),
            ("UploadPart", "parts.bin", lambda up: up.put_stream(io.BytesIO(b"p" * (6 * MiB)), "parts.bin")),
        ]
        for operation, key, door in doors:
            proxy.schedule(Fault("damage", operation))
            with pytest.raises(IntegrityError) as info:
                upload(door)
            assert [f.kind for f in proxy.injected] == ["damage"], key
            if store.name == "moto":  # it stores anything: our comparison fails the write and removes it
                said = "the object was removed" if operation == "PutObject" else "UploadPart: the store answered ETag"
                assert said in str(info.value), key
            else:
                assert "was refused by the store: the body it received does not match" in str(info.value), key
            assert store.admin.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 0, key
        assert store.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert store.admin.list_objects_v2(Bucket=bucket, Prefix="parts")["KeyCount"] == 0
        assert set(signed) == {b"UNSIGNED-PAYLOAD"}  # over HTTP too
    finally:
        proxy.stop()


def test_only_a_body_whose_md5_we_compare_goes_unsigned(moto: MotoServer) -> None:
    """A caller's own Content-MD5 (checksum_mode off: nothing compares the ETag) and a
    client whose config asks for payload signing keep botocore's payload SHA-256."""
    from botocore.config import Config

    from airflow_s3connect.client import GuardedSession, build_session
    from airflow_s3connect.connection import parse_settings

    def payload_hash(client: Any, **params: Any) -> object:
        sent: list[object] = []
        client.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(
            request.headers["X-Amz-Content-SHA256"]))  # fmt: skip
        client.put_object(Bucket=BUCKET, Key="signed.bin", Body=b"body", **params)
        return sent[0]

    md5 = "hBotaJrYa9FhFEdFPCLG/A=="  # of b"body"
    assert payload_hash(endpoint_client(moto.url), ContentMD5=md5) == b"UNSIGNED-PAYLOAD"
    assert payload_hash(endpoint_client(moto.url, checksum_mode="off"), ContentMD5=md5) != b"UNSIGNED-PAYLOAD"
    settings = parse_settings("test", "AKIAEXAMPLE", "secret", {"endpoint_url": moto.url, "region_name": REGION})
    signing = GuardedSession(build_session(settings), settings).client(
        "s3", endpoint_url=moto.url, config=Config(s3={"payload_signing_enabled": True, "addressing_style": "path"})
    )
    assert payload_hash(signing) != b"UNSIGNED-PAYLOAD"


def test_one_failing_upload_among_many_surfaces_its_own_error(moto: MotoServer, proxy: FaultProxy) -> None:
    """s3transfer's shutdown(cancel=True) raised TypeError over the real error."""
    proxy.schedule(Fault("500", "PutObject", times=None, key_contains="bad-7"))
    client = _proxied(proxy)

    def upload_twenty() -> None:
        with Uploader(client, BUCKET, PARTS, WriteOptions()) as up:
            for i in range(20):
                up.put_stream(io.BytesIO(b"x" * 1000), f"bad-{i}.bin")
            list(up.results())

    with pytest.raises(S3ConnectError, match="InternalError") as info:
        upload_twenty()
    assert "not callable" not in str(info.value)


def test_a_plain_process_with_a_failed_upload_exits(moto: MotoServer, proxy: FaultProxy) -> None:
    proxy.schedule(Fault("500", "UploadPart", times=None))
    script = textwrap.dedent(
        f"""
        import io
        from airflow_s3connect.client import build_s3_client, build_session
        from airflow_s3connect.connection import effective_mode, parse_settings
        from airflow_s3connect.uploads import Uploader
        from airflow_s3connect.writes import WriteOptions
        from airflow_s3connect.objects import TransferConfig
        settings = parse_settings("p", "AKIA1", "s", {{"endpoint_url": "{proxy.url}", "region_name": "{REGION}",
                                                       "addressing_style": "path", "max_attempts": 1}})
        client = build_s3_client(settings, build_session(settings))
        config = TransferConfig(multipart_threshold=5 * 2**20, chunk_size=5 * 2**20, max_concurrency=4)
        with Uploader(client, "{BUCKET}", config, WriteOptions()) as up:
            up.put_stream(io.BytesIO(b"x" * (30 * 2**20)), "big.bin")
            list(up.results())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "InternalError" in done.stderr
    assert "not callable" not in done.stderr
    assert moto.admin_client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


# -- reads: the version downloaded is the version acted on -----------------------------------


def _versions(store: Store, bucket: str, key: str) -> str:
    """Put v1, remember its ETag, replace it by v2 of the same size; return v1's ETag."""
    store.admin.put_object(Bucket=bucket, Key=key, Body=b"version-1")
    etag = str(store.admin.head_object(Bucket=bucket, Key=key)["ETag"])
    store.admin.put_object(Bucket=bucket, Key=key, Body=b"version-2")
    return etag


def test_archive_never_moves_or_deletes_a_replaced_original(store: Store) -> None:
    """RGW 16 ignores x-amz-copy-source-if-match: the copy's ETag shows the replacement."""
    bucket = store.new_bucket()
    etag = _versions(store, bucket, "inbox/a.csv")
    client = _client(store, bucket)
    with pytest.raises(ObjectChangedError, match=r"replaced after it was downloaded .* not archived nor deleted"):
        archive_object(client, bucket, "inbox/a.csv", "processed/a.csv", etag, 9)
    assert store.admin.get_object(Bucket=bucket, Key="inbox/a.csv")["Body"].read() == b"version-2"
    assert store.admin.list_objects_v2(Bucket=bucket, Prefix="processed/")["KeyCount"] == 0
    with pytest.raises(ObjectChangedError, match="not archived nor deleted"):
        delete_object(client, bucket, "inbox/a.csv", etag)
    assert store.admin.get_object(Bucket=bucket, Key="inbox/a.csv")["Body"].read() == b"version-2"
    current = str(store.admin.head_object(Bucket=bucket, Key="inbox/a.csv")["ETag"])
    archive_object(client, bucket, "inbox/a.csv", "processed/a.csv", current, 9)
    assert store.admin.get_object(Bucket=bucket, Key="processed/a.csv")["Body"].read() == b"version-2"
    assert store.admin.list_objects_v2(Bucket=bucket, Prefix="inbox/")["KeyCount"] == 0


def test_archive_of_an_original_uploaded_in_parts(store: Store) -> None:
    """Swift answers 412 to a copy pinned to a ``-N`` ETag of an unchanged object: Get's
    ``after="archive"`` failed "replaced after it was downloaded" for every such object."""
    bucket = store.new_bucket()
    client = _client(store, bucket)
    body = b"p" * (6 * MiB)
    (done,) = _put(client, bucket, "inbox/parts.bin", body, overwrite=True)
    assert done.etag.endswith('-2"')
    archive_object(client, bucket, "inbox/parts.bin", "processed/parts.bin", done.etag, len(body))
    assert store.admin.get_object(Bucket=bucket, Key="processed/parts.bin")["Body"].read() == body
    assert store.admin.list_objects_v2(Bucket=bucket, Prefix="inbox/")["KeyCount"] == 0


def _download(client: Any, key: str, path: Path, size: int | None = None, etag: str | None = None) -> Any:
    config = TransferConfig(multipart_threshold=5 * MiB, chunk_size=5 * MiB, max_concurrency=4, max_attempts=3)
    return list(Downloader(client, BUCKET, config).download([DownloadTask(key, path, size, etag)]))


def test_a_store_answering_the_new_version_despite_if_match_is_caught(
    moto: MotoServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="big.bin", Body=b"1" * (12 * MiB))
    old = str(admin.head_object(Bucket=BUCKET, Key="big.bin")["ETag"])
    admin.put_object(Bucket=BUCKET, Key="big.bin", Body=b"2" * (12 * MiB))
    proxy.schedule(Fault("strip", "GetObject", times=None, header="if-match"))
    with pytest.raises(ObjectChangedError, match="store ignored If-Match"):
        _download(_proxied(proxy), "big.bin", tmp_path / "big.bin", 12 * MiB, old)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("times", [1, None], ids=["once", "always"])
def test_short_bodies_are_fetched_again_or_fail(
    moto: MotoServer, proxy: FaultProxy, tmp_path: Path, times: int | None
) -> None:
    body = bytes(range(256)) * (48 * 1024)  # 12 MiB: three ranged GETs
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="big.bin", Body=body)
    proxy.schedule(Fault("short", "GetObject", times=times, ranged=True))
    if times is None:
        with pytest.raises(TransferInterrupted, match="broke off 3 times"):
            _download(_proxied(proxy), "big.bin", tmp_path / "big.bin")
        assert list(tmp_path.iterdir()) == []
    else:
        (done,) = _download(_proxied(proxy), "big.bin", tmp_path / "big.bin")
        assert (tmp_path / "big.bin").read_bytes() == body
        assert done.size == len(body)


def test_an_empty_object_answered_206_without_a_body_reads_as_empty(
    moto: MotoServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="empty.bin", Body=b"")
    proxy.schedule(Fault("empty206", "GetObject", times=None, ranged=True))
    (done,) = _download(_proxied(proxy), "empty.bin", tmp_path / "empty.bin")
    assert (tmp_path / "empty.bin").read_bytes() == b""
    assert done.size == 0
    assert read_object(_proxied(proxy), BUCKET, "empty.bin", 1000)[0] == b""


def test_errors_quote_the_stores_own_message(moto: MotoServer, proxy: FaultProxy) -> None:
    proxy.schedule(Fault("501", "PutObject", times=None))
    with pytest.raises(S3ConnectError) as info:
        _put(_proxied(proxy), BUCKET, "any.bin", b"x", overwrite=True)
    assert str(info.value).endswith(
        'failed: NotImplemented: the store says "A header you provided implies functionality that is not implemented."'
    )
    assert store_message("The request signature we calculated does not match; StringToSign ...") == ""


def test_a_key_repeated_across_a_page_boundary_is_listed_once(moto: MotoServer, proxy: FaultProxy) -> None:
    admin = moto.admin_client("s3")
    for i in range(1500):
        admin.put_object(Bucket=BUCKET, Key=f"many/{i:04d}", Body=b"")
    proxy.schedule(Fault("repeat", "ListObjectsV2", times=None))
    listed = [o.key for o in Lister(_proxied(proxy), BUCKET, ListQuery(base="many/"))]
    assert listed == [f"many/{i:04d}" for i in range(1500)]
    assert proxy.operations.count("ListObjectsV2") == 2


def test_an_empty_etag_from_complete_is_fetched(moto: MotoServer, proxy: FaultProxy) -> None:
    proxy.schedule(Fault("noetag", "CompleteMultipartUpload", times=None))
    (done,) = _put(_proxied(proxy), BUCKET, "big.bin", b"e" * (6 * MiB), overwrite=True)
    assert done.etag == moto.admin_client("s3").head_object(Bucket=BUCKET, Key="big.bin")["ETag"]
    assert done.etag.endswith('-2"')


# -- reservations: safe under every failure ---------------------------------------------------------

RESERVED_BY = {"s3connect-reservation": "upload in progress", "s3connect-writer": "dag.run.task.-1"}


def _reserving(proxy: FaultProxy, *extra: Fault) -> Any:
    """A store that ignores If-None-Match on CompleteMultipartUpload: multipart uploads
    with overwrite=False reserve their key first."""
    proxy.schedule(Fault("strip", "CompleteMultipartUpload", times=None, header="if-none-match"), *extra)
    return _proxied(proxy)


@pytest.mark.parametrize(("writer", "taken_over"), [("dag.run.task.-1", True), ("other.run.task.-1", False)])
def test_a_retry_takes_over_the_reservation_its_killed_try_left(
    moto: MotoServer, proxy: FaultProxy, writer: str, taken_over: bool
) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="killed.bin", Body=RESERVATION_BODY, Metadata=RESERVED_BY)  # SIGKILL left it
    client = _reserving(proxy)
    body = b"r" * (6 * MiB)
    with Uploader(client, BUCKET, PARTS, WriteOptions(overwrite=False, writer=writer)) as up:
        up.put_stream(io.BytesIO(body), "killed.bin")
        if taken_over:
            (done,) = list(up.results())
            assert done.size == len(body)
        else:
            with pytest.raises(KeyExistsError):
                list(up.results())
    stored = admin.get_object(Bucket=BUCKET, Key="killed.bin")["Body"].read()
    assert stored == (body if taken_over else RESERVATION_BODY)


def test_reservations_are_reported_while_held_and_released_by_a_later_try(
    moto: MotoServer, proxy: FaultProxy, make_conn: Callable[..., str]
) -> None:
    """A SIGKILLed try leaves its reservation; a retry that does not write that key again
    (its source moved, a key with {uuid}) never takes it over. The try records it in the
    task state, and the retry releases it while it still is that task's."""
    from airflow_s3connect.operators import S3PutObjectOperator
    from airflow_s3connect.operators.base import OPEN_STATE

    reported: list[Any] = []
    body = b"h" * (6 * MiB)
    with Uploader(_reserving(proxy), BUCKET, PARTS, WriteOptions(overwrite=False, writer="dag.run.task.-1"),
                  on_open=reported.append) as up:  # fmt: skip
        up.put_stream(io.BytesIO(body), "held.bin")
        list(up.results())
    held = [r["reservations"] for r in reported if r["reservations"]]
    assert held
    assert all(list(r) == ["held.bin"] for r in held)  # recorded while the upload ran
    assert reported[-1] == {"uploads": {}, "reservations": {}}  # and forgotten once complete

    admin = moto.admin_client("s3")
    make_conn("retry", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name="eu-west-1", bucket=BUCKET)
    put = S3PutObjectOperator(task_id="task", key="x", data="x", overwrite=False, s3connect_conn_id="retry")
    context = {"ti": type("TI", (), {"dag_id": "dag", "run_id": "run", "task_id": "task", "map_index": -1})()}
    tag = put.task_tag(context)
    left = {}
    for key, writer in (("ours.bin", tag), ("theirs.bin", "another-task")):
        metadata = {"s3connect-reservation": "upload in progress", "s3connect-writer": writer}
        left[key] = admin.put_object(Bucket=BUCKET, Key=key, Body=RESERVATION_BODY, Metadata=metadata)["ETag"]
    left["replaced.bin"] = left["ours.bin"]  # our reservation was there; another writer's object is now
    admin.put_object(Bucket=BUCKET, Key="replaced.bin", Body=b"another writer's object")
    state = TaskState({OPEN_STATE: {"uploads": {}, "reservations": left}})
    put.track_open({**context, "task_state_store": state}, BUCKET)
    assert state[OPEN_STATE] == {}
    keys = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET).get("Contents", []))
    assert keys == ["held.bin", "replaced.bin", "theirs.bin"]  # only ours released
    assert admin.get_object(Bucket=BUCKET, Key="replaced.bin")["Body"].read() == b"another writer's object"


def test_a_failed_upload_never_deletes_what_another_writer_stored_meanwhile(
    moto: MotoServer, proxy: FaultProxy
) -> None:
    client = _reserving(
        proxy,
        Fault("slow", "CreateMultipartUpload", delay=2.0, key_contains="contested"),
        Fault("500", "UploadPart", times=None, key_contains="contested"),
    )

    def upload() -> None:
        with Uploader(client, BUCKET, PARTS, WriteOptions(overwrite=False)) as up:
            up.put_stream(io.BytesIO(b"m" * (6 * MiB)), "contested.bin")
            list(up.results())

    arrival = moto.arrival_after_request(BUCKET, "contested.bin", b"other writer's", delay=0.3)
    with moto.recording(), arrival, pytest.raises(S3ConnectError):
        upload()
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key="contested.bin")["Body"].read() == b"other writer's"
    assert moto.admin_client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_reservation_is_never_seen_as_data(moto: MotoServer) -> None:
    """A reservation has fixed bytes: a listing tells it by its size and ETag, with no
    request more; an object of its size whose ETag differs (encryption) costs one HEAD."""
    from airflow_s3connect.events import ObjectStream
    from airflow_s3connect.listing import Lister, ListQuery
    from airflow_s3connect.watch import WatchSpec, observe

    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="r/upload.bin", Body=RESERVATION_BODY, Metadata=RESERVED_BY)
    admin.put_object(Bucket=BUCKET, Key="r/_SUCCESS", Body=b"")
    admin.put_object(Bucket=BUCKET, Key="r/data.csv", Body=b"1")
    client = endpoint_client(moto.url, max_attempts=1)
    lister = Lister(client, BUCKET, ListQuery(base="r/"))
    assert [e.key for e in lister] == ["r/_SUCCESS", "r/data.csv"]
    assert lister.requests == 1
    stream = ObjectStream(client, BUCKET, "r/", start="all")
    assert sorted(i.key for i in stream.poll()) == ["r/_SUCCESS", "r/data.csv"]
    assert observe(client, WatchSpec(bucket=BUCKET, base="r/", key="r/upload.bin")).matches == []
    assert [i.key for i in observe(client, WatchSpec(bucket=BUCKET, base="r/", key="r/_SUCCESS")).matches] == [
        "r/_SUCCESS"
    ]
    same_size = b"x" * len(RESERVATION_BODY)
    admin.put_object(Bucket=BUCKET, Key="r/same-size.txt", Body=same_size)
    lister = Lister(client, BUCKET, ListQuery(base="r/"))
    assert [e.key for e in lister] == ["r/_SUCCESS", "r/data.csv", "r/same-size.txt"]
    assert lister.requests == 2  # the page, and one HEAD for the object of a reservation's size


def test_an_upload_a_retried_create_left_behind_is_aborted(moto: MotoServer, proxy: FaultProxy) -> None:
    """The first CreateMultipartUpload's answer is lost after the store created the upload:
    botocore retries and gets a second one; the first would stay open for good."""
    proxy.schedule(Fault("cut", "CreateMultipartUpload", times=1), Fault("initiated", "ListMultipartUploads"))
    client = endpoint_client(proxy.url, max_attempts=3)
    body = b"o" * (6 * MiB)
    with Uploader(client, BUCKET, PARTS, WriteOptions()) as up:
        up.put_stream(io.BytesIO(body), "orphan.bin")
        (done,) = list(up.results())
    assert done.size == len(body)
    assert [i.kind for i in proxy.injected] == ["cut", "initiated"]
    assert moto.admin_client("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
