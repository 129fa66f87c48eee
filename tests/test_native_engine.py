"""The native engine (obstore) keeps every guarantee the botocore engine keeps.

Each test sends real requests through the fault proxy to moto (or to Ceph RGW over HTTPS),
and counts what the store saw: which requests went native (``engine.events``), which went
through botocore, and what is left in the bucket and on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect import native
from airflow_s3connect.downloads import Downloader, DownloadTask
from airflow_s3connect.errors import (
    ConnectionSettingsError,
    EndpointUnreachableError,
    IntegrityError,
    KeyExistsError,
    ObjectChangedError,
    ScopeError,
    TransferInterrupted,
)
from airflow_s3connect.objects import MiB, TransferConfig
from airflow_s3connect.progress import Meter
from airflow_s3connect.uploads import Uploader
from airflow_s3connect.writes import WriteOptions
from tests.conftest import BUCKET, REGION
from tests.support.fault_proxy import Fault
from tests.support.stores import endpoint_client

CONFIG = TransferConfig(max_concurrency=4, chunk_size=5 * MiB, multipart_threshold=5 * MiB, max_attempts=3)
LARGE = os.urandom(12 * MiB + 7)


def _client(url: str, **extra: Any) -> Any:
    extra.setdefault("max_attempts", 3)
    return endpoint_client(url, region=REGION, **extra)


class Sent:
    """The requests each engine of ``client`` sends while open."""

    def __init__(self, client: Any) -> None:
        self.native = 0
        self.engine = native.engine_of(client)
        assert self.engine is not None, "the native engine is installed in the dev group"
        self.engine.events.register("before-send.s3", self._count, unique_id="test-sent")

    def _count(self, **_: Any) -> None:
        self.native += 1

    def close(self) -> None:
        assert self.engine is not None
        self.engine.events.unregister("before-send.s3", unique_id="test-sent")


def _get(client: Any, tmp_path: Path, *keys: str, **task: Any) -> list[Any]:
    tasks = [DownloadTask(key, tmp_path / key.replace("/", "_"), **task) for key in keys]
    return list(Downloader(client, BUCKET, CONFIG).download(tasks))


def _put(client: Any, options: WriteOptions, *files: tuple[Path, str]) -> list[Any]:
    with Uploader(client, BUCKET, CONFIG, options) as up:
        for path, key in files:
            up.put_file(path, key)
        return list(up.results())


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".part"))


# --------------------------------------------------------------------------- routing
def test_gets_and_small_puts_go_native_multipart_and_options_it_cannot_send_go_botocore(
    moto: Any, proxy: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(proxy.url)
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="in/small.bin", Body=b"small")
    admin.put_object(Bucket=BUCKET, Key="in/large.bin", Body=LARGE)
    (tmp_path / "up.bin").write_bytes(b"up")
    (tmp_path / "big.bin").write_bytes(LARGE)
    sent = Sent(client)
    with Meter("test", interval=0).attached(client) as counter:
        got = _get(client, tmp_path, "in/small.bin", "in/large.bin")
    # auto: the whole GET and the large object's first range natively, its later ranges botocore's
    assert (sent.native, counter.requests) == (1 + 1, 1 + 3)
    assert [Path(d.path).read_bytes() for d in got] == [b"small", LARGE]
    with Uploader(client, BUCKET, CONFIG, WriteOptions()) as up:
        up.put_file(tmp_path / "up.bin", "out/up.bin")
        up.put_file(tmp_path / "big.bin", "out/big.bin")
        results = list(up.results())
    assert sent.native == 2 + 1  # the small PutObject; the multipart upload is botocore's
    assert proxy.operations.count("UploadPart") == 3
    assert results[0].etag == f'"{hashlib.md5(b"up").hexdigest()}"'
    with caplog.at_level(logging.INFO, "airflow_s3connect.native"):
        _put(client, WriteOptions(acl="bucket-owner-full-control"), (tmp_path / "up.bin", "out/acl.bin"))
    assert sent.native == 3  # ACL: botocore (through s3transfer, as any botocore upload), and said why
    assert "goes through botocore: the native engine it does not send ACL" in caplog.text
    assert admin.get_object_acl(Bucket=BUCKET, Key="out/acl.bin")["Grants"]
    with Uploader(client, BUCKET, CONFIG, WriteOptions(acl="private")) as up:
        up.put_file(tmp_path / "up.bin", "out/acl2.bin")
        assert up._native is None  # a refused small file is s3transfer's, like any botocore upload
        list(up.results())


@pytest.mark.parametrize(
    "key",
    ["a b+c.txt", "pct%41.txt", "ü/é ☃.txt", "q?x=1&y#z", "back\\slash", "br{a}[c]^~<>|`.txt",
     "dir//double.txt", "trail/", "./dot", "a/../b", "tab\tkey"],
)  # fmt: skip
def test_every_key_is_the_object_it_names_on_either_engine(moto: Any, proxy: Any, tmp_path: Path, key: str) -> None:
    """obstore drops a trailing '/' and refuses '//', '.' and '..' segments: such keys go to
    botocore; every other key reaches exactly its object natively, whatever it holds."""
    client = _client(proxy.url)
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    sent = Sent(client)
    assert _get(client, tmp_path, key)[0].path.read_bytes() == key.encode()
    assert sent.native == (1 if native.key_refusal(BUCKET, key) is None else 0)
    assert (native.key_refusal(BUCKET, key) is None) == (key in {"a b+c.txt", "pct%41.txt", "ü/é ☃.txt",
        "q?x=1&y#z", "back\\slash", "br{a}[c]^~<>|`.txt"})  # fmt: skip


def test_engine_botocore_sends_nothing_native_and_native_without_obstore_says_what_to_install(
    moto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert native.engine_of(_client(moto.url, engine="botocore")) is None
    monkeypatch.setattr(native, "available", lambda: False)
    assert native.engine_of(_client(moto.url, engine="auto")) is None
    with pytest.raises(ConnectionSettingsError, match=r"engine.*obstore.*airflow-s3connect\[fast\]"):
        _client(moto.url, engine="native")


def test_a_setting_the_native_engine_cannot_send_keeps_the_connection_on_botocore(
    moto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for extra in ({"expected_bucket_owner": "123456789012"}, {"server_side_encryption": "AES256"},
                  {"acl": "private"}):  # fmt: skip
        assert native.engine_of(_client(moto.url, engine="native", **extra)) is None, extra
    tagged = native.engine_of(_client(moto.url, tags="team=data", storage_class="STANDARD_IA"))
    assert tagged is not None
    # obstore would read these from the environment for what the connection leaves unset
    for name, value in (("AWS_SERVER_SIDE_ENCRYPTION", "aws:kms"), ("AWS_DISABLE_TAGGING", "true"),
                        ("AWS_ENDPOINT", "http://elsewhere:9000")):  # fmt: skip
        with monkeypatch.context() as env:
            env.setenv(name, value)
            assert native.engine_of(_client(moto.url)) is None, name
    # on AWS without a region: botocore follows the bucket's region, obstore would not
    from airflow_s3connect.client import build_s3_client, build_session
    from airflow_s3connect.connection import parse_settings

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    aws = parse_settings("aws", "AKIAEXAMPLE", "secret", {})
    assert native.engine_of(build_s3_client(aws, build_session(aws))) is None
    regional = parse_settings("aws", "AKIAEXAMPLE", "secret", {"region_name": "eu-west-1"})
    engine = native.engine_of(build_s3_client(regional, build_session(regional)))
    assert engine is not None
    assert engine.refusal("GetObject", {"Bucket": "my.dotted.bucket", "Key": "k"}) is not None
    assert engine.refusal("GetObject", {"Bucket": "plain-bucket", "Key": "k"}) is None
    for clash in ("StorageClass", "content-type", "ContentType", "cache-control"):
        why = engine.refusal("PutObject", {"Bucket": "plain-bucket", "Key": "k", "Metadata": {clash: "x"}})
        assert why is not None, clash
    assert engine.refusal("PutObject", {"Bucket": "plain-bucket", "Key": "k", "ChecksumAlgorithm": "CRC32"})


# --------------------------------------------------------------------------- scope
def test_the_scope_is_checked_before_any_native_request(moto: Any, proxy: Any) -> None:
    client = _client(proxy.url, bucket=BUCKET, path_prefix="tenant-a")
    engine = native.engine_of(client)
    assert engine is not None
    for call in (
        lambda: engine.get_object(Bucket=BUCKET, Key="tenant-b/x.csv"),
        lambda: engine.get_object(Bucket="other-bucket", Key="tenant-a/x.csv"),
        lambda: engine.put_object(Bucket=BUCKET, Key="tenant-b/x.csv", Body=b"x"),
    ):
        with pytest.raises(ScopeError, match="tenant-a"):
            call()
    assert proxy.operations == []  # nothing reached the store


# --------------------------------------------------------------------------- failures
def test_retries_follow_max_attempts_and_are_counted(moto: Any, proxy: Any, tmp_path: Path) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="in/a.bin", Body=b"a" * 100)
    client = _client(proxy.url)
    proxy.schedule(Fault("503", "GetObject", times=2))
    with Meter("test", interval=0).attached(client) as counter:
        assert _get(client, tmp_path, "in/a.bin")[0].path.read_bytes() == b"a" * 100
    assert counter.requests == 3
    proxy.schedule(Fault("500", "GetObject", times=None))
    with (
        Meter("test", interval=0).attached(client) as counter,
        pytest.raises(Exception, match=r"InternalError|500") as failed,
    ):
        _get(client, tmp_path, "in/a.bin")
    assert counter.requests == 3  # max_attempts
    assert "in/a.bin" in str(failed.value)
    assert _leftovers(tmp_path) == []


def test_a_body_cut_off_is_asked_again_from_the_byte_it_reached(moto: Any, proxy: Any, tmp_path: Path) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="in/large.bin", Body=LARGE)
    client = _client(proxy.url, engine="native")  # every range native (auto sends later ranges by botocore)
    proxy.schedule(Fault("cut", "GetObject", times=1, ranged=True))
    sent = Sent(client)
    done = _get(client, tmp_path, "in/large.bin", size=len(LARGE))
    assert done[0].path.read_bytes() == LARGE
    assert sent.native == 3 + 1  # three ranges and the rest of the cut one


def test_a_part_of_another_version_fails_the_download_and_leaves_nothing(moto: Any, proxy: Any, tmp_path: Path) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="in/large.bin", Body=LARGE)
    client = _client(proxy.url, engine="native")
    # A range answered with another ETag (a store that ignored If-Match): each answer's is compared.
    proxy.schedule(Fault("etag", "GetObject", times=1, ranged=True))
    with pytest.raises(ObjectChangedError, match="replaced while it was being downloaded"):
        _get(client, tmp_path, "in/large.bin", size=len(LARGE), etag=f'"{hashlib.md5(LARGE).hexdigest()}"')
    assert list(tmp_path.iterdir()) == []


def test_cancel_stops_a_native_download_and_removes_its_files(moto: Any, proxy: Any, tmp_path: Path) -> None:
    admin = moto.admin_client("s3")
    for i in range(6):
        admin.put_object(Bucket=BUCKET, Key=f"in/{i}.bin", Body=b"x" * 1000)
    client = _client(proxy.url)
    proxy.schedule(Fault("slow", "GetObject", times=None, delay=0.5))
    downloader = Downloader(client, BUCKET, CONFIG)
    tasks = [DownloadTask(f"in/{i}.bin", tmp_path / f"{i}.bin") for i in range(6)]
    import threading

    threading.Timer(0.2, downloader.cancel, args=("the task was killed",)).start()
    with pytest.raises(TransferInterrupted, match="the task was killed"):
        list(downloader.download(tasks))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- writes
def test_create_only_refuses_an_existing_key_natively_and_keeps_its_bytes(
    moto: Any, proxy: Any, tmp_path: Path
) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="out/taken.bin", Body=b"first")
    (tmp_path / "second.bin").write_bytes(b"second")
    client = _client(proxy.url)
    sent = Sent(client)
    files = ((tmp_path / "second.bin", "out/taken.bin"), (tmp_path / "second.bin", "out/free.bin"))
    with pytest.raises(KeyExistsError, match="already exists"):
        _put(client, WriteOptions(overwrite=False), *files)
    assert admin.get_object(Bucket=BUCKET, Key="out/taken.bin")["Body"].read() == b"first"
    assert sent.native == 2  # both PutObjects, each with If-None-Match: *


def test_a_write_the_store_answers_with_another_etag_fails(moto: Any, proxy: Any, tmp_path: Path) -> None:
    """The answer's ETag is not the MD5 sent: the write fails. The object is removed only
    while the key holds the ETag answered (a body damaged on the way: test_stores.py); here
    the key holds an object under another ETag, as another writer's would be: it is kept,
    and the error says so."""
    (tmp_path / "a.bin").write_bytes(b"payload")
    client = _client(proxy.url)
    proxy.schedule(Fault("etag", "PutObject", times=1))
    with pytest.raises(IntegrityError, match="damaged on the way; it was not removed") as info:
        _put(client, WriteOptions(), (tmp_path / "a.bin", "out/a.bin"))
    assert "check s3://s3connect-test/out/a.bin" in str(info.value)
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key="out/a.bin")["Body"].read() == b"payload"


def test_a_write_under_the_buckets_default_kms_is_read_back_not_removed(moto: Any, proxy: Any, tmp_path: Path) -> None:
    """Under SSE-KMS the ETag is no MD5: a mismatch is checked by reading the object back."""
    admin = moto.admin_client("s3")
    admin.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})  # fmt: skip
    (tmp_path / "a.bin").write_bytes(b"encrypted at rest")
    client = _client(proxy.url)
    proxy.schedule(Fault("etag", "PutObject", times=1))  # an ETag that is not the MD5, as KMS answers
    sent = Sent(client)
    (done,) = _put(client, WriteOptions(), (tmp_path / "a.bin", "out/a.bin"))
    assert done.key == "out/a.bin"
    assert sent.native == 1
    assert admin.get_object(Bucket=BUCKET, Key="out/a.bin")["Body"].read() == b"encrypted at rest"
    assert proxy.operations.count("GetObject") == 1  # the read-back


def test_write_options_it_sends_are_stored(moto: Any, proxy: Any, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"a,b\n")
    client = _client(proxy.url, tags="team=data&env=prod", storage_class="STANDARD_IA")
    sent = Sent(client)
    options = WriteOptions(cache_control="no-cache", content_disposition="attachment", content_language="de",
                           metadata={"origin": "native"}, writer="task-1")  # fmt: skip
    with Uploader(client, BUCKET, CONFIG, options) as up:
        up.put_file(tmp_path / "a.csv", "out/a.csv", content_type="text/csv")
        list(up.results())
    assert sent.native == 1
    admin = moto.admin_client("s3")
    head = admin.head_object(Bucket=BUCKET, Key="out/a.csv")
    assert (head["ContentType"], head["CacheControl"], head["ContentDisposition"], head["ContentLanguage"]) == (
        "text/csv", "no-cache", "attachment", "de")  # fmt: skip
    assert head["Metadata"]["origin"] == "native"
    assert head["StorageClass"] == "STANDARD_IA"
    tags = admin.get_object_tagging(Bucket=BUCKET, Key="out/a.csv")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "prod"), ("team", "data")]


# --------------------------------------------------------------------------- TLS and credentials
def test_tls_without_verification_natively_and_a_ca_bundle_on_botocore(rgw: Any, tmp_path: Path) -> None:
    """A ca_bundle keeps the connection on botocore, which trusts the bundle alone (rustls would
    add it to the public roots); the same download over TLS works on both."""
    bucket = "native-tls"
    admin = rgw.client(https=True)
    admin.create_bucket(Bucket=bucket)
    admin.put_object(Bucket=bucket, Key="a.bin", Body=b"over tls")
    for extra, native_requests in (({"ca_bundle": str(rgw.ca_file)}, None), ({"verify_ssl": False}, 1)):
        client = endpoint_client(rgw.https_url, key=rgw.access_key, secret=rgw.secret_key, region="us-east-1",
                                 **extra)  # fmt: skip
        engine = native.engine_of(client)
        assert (engine is None) == (native_requests is None)
        sent = Sent(client) if engine is not None else None
        target = tmp_path / f"{sorted(extra)[0]}.bin"
        done = list(Downloader(client, bucket, CONFIG).download([DownloadTask("a.bin", target)]))
        assert done[0].path.read_bytes() == b"over tls"
        assert sent is None or sent.native == native_requests
    untrusted = endpoint_client(rgw.https_url, key=rgw.access_key, secret=rgw.secret_key, region="us-east-1",
                                max_attempts=1)  # fmt: skip
    with pytest.raises(
        EndpointUnreachableError,
        match=r"TLS certificate of https://127\.0\.0\.1:\d+ could not be verified: set the connection's ca_bundle",
    ):
        list(Downloader(untrusted, bucket, CONFIG).download([DownloadTask("a.bin", tmp_path / "x.bin")]))
    assert _leftovers(tmp_path) == []


def test_refreshed_credentials_reach_the_native_engine(moto: Any) -> None:
    """obstore asks the engine for credentials again each minute: what it gets is what the
    botocore client signs with now (for assume_role, its refreshing session)."""
    client = _client(moto.url)
    engine = native.engine_of(client)
    assert engine is not None
    first = engine._credential()
    assert first["access_key_id"] == "AKIAEXAMPLE"
    assert first["expires_at"] is None

    class Refreshing:
        refresh_needed = True

        def __init__(self, key: str) -> None:
            self.key = key

        def get_frozen_credentials(self) -> Any:
            from botocore.credentials import ReadOnlyCredentials

            return ReadOnlyCredentials(self.key, "secret-" + self.key, "token-" + self.key)

    client._request_signer._credentials = Refreshing("ASIAROTATED")
    second = engine._credential()
    assert (second["access_key_id"], second["token"]) == ("ASIAROTATED", "token-ASIAROTATED")
    assert second["expires_at"] is not None


def test_every_request_of_both_engines_goes_through_the_connections_proxy(moto: Any, tmp_path: Path) -> None:
    from tests.support.forward_proxy import ForwardProxy

    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="in/a.bin", Body=b"via proxy")
    (tmp_path / "b.bin").write_bytes(b"up via proxy")
    egress = ForwardProxy().start()
    try:
        client = _client(moto.url, proxy_url=egress.url)
        sent = Sent(client)
        with Meter("test", interval=0).attached(client) as counter:
            assert _get(client, tmp_path, "in/a.bin")[0].path.read_bytes() == b"via proxy"
            _put(client, WriteOptions(), (tmp_path / "b.bin", "out/b.bin"))
            client.head_object(Bucket=BUCKET, Key="out/b.bin")  # botocore's own request
    finally:
        egress.stop()
    assert sent.native == 2
    assert sum(egress.seen.values()) == counter.requests == 3
    assert egress.seen == {"GET": 1, "PUT": 1, "HEAD": 1}
