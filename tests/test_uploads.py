"""Uploads against a real moto server: conditional writes, multipart, streams, checksums."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.errors import KeyExistsError
from airflow_s3connect.objects import MiB, TransferConfig
from airflow_s3connect.uploads import ChunkStream, Uploader
from airflow_s3connect.writes import WriteOptions
from tests.conftest import BUCKET
from tests.support.moto_server import MotoServer
from tests.support.stores import make_client

SMALL = TransferConfig(max_concurrency=4, chunk_size=5 * MiB, multipart_threshold=5 * MiB)


def test_conditional_write_race_has_exactly_one_winner(moto: MotoServer) -> None:
    """8 workers (own clients, as on 8 Celery workers) write one key with overwrite off."""
    barrier = threading.Barrier(8)
    outcomes: dict[int, str] = {}

    def writer(n: int) -> None:
        client = make_client(moto)
        barrier.wait()
        try:
            with Uploader(client, BUCKET, SMALL, WriteOptions(overwrite=False)) as up:
                up.put_stream(io.BytesIO(f"writer {n}".encode()), "race/report.csv")
                list(up.results())
            outcomes[n] = "won"
        except KeyExistsError as exc:
            outcomes[n] = str(exc)

    with moto.recording() as rec:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    winners = [n for n, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1
    losers = [o for o in outcomes.values() if o != "won"]
    assert len(losers) == 7
    assert all("already exists and overwrite is off" in o for o in losers)
    body = moto.admin_client("s3").get_object(Bucket=BUCKET, Key="race/report.csv")["Body"].read()
    assert body == f"writer {winners[0]}".encode()
    # The store's conditional-write probe (once per process) writes its own key only.
    requests = [r for r in rec.s3() if ".s3connect-probe-" not in r.path]
    puts = [r for r in requests if r.method == "PUT"]
    assert len(puts) == 8
    assert all(r.headers.get("If-None-Match") == "*" for r in puts)
    assert all(r.method == "PUT" for r in requests)  # no HEAD, no listing


def test_multipart_upload_conditional_and_aborted_on_conflict(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(11 * MiB))
    options = WriteOptions(overwrite=False, metadata={"origin": "test"}, storage_class="STANDARD_IA")
    with Uploader(client, BUCKET, SMALL, options) as up:
        up.put_file(path, "mp/big.bin")
        (done,) = up.results()
    assert done.size == 11 * MiB
    assert done.etag.endswith('-3"')  # three parts
    admin = moto.admin_client("s3")
    head = admin.head_object(Bucket=BUCKET, Key="mp/big.bin")
    assert head["Metadata"] == {"origin": "test"}
    assert head["StorageClass"] == "STANDARD_IA"

    def write_again() -> None:
        with Uploader(client, BUCKET, SMALL, options) as up:
            up.put_file(path, "mp/big.bin")
            list(up.results())

    with moto.recording() as rec, pytest.raises(KeyExistsError):
        write_again()
    complete = [r for r in rec.s3() if r.method == "POST" and "uploadId" in r.query]
    assert complete[0].headers["If-None-Match"] == "*"
    assert admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []  # aborted, nothing left


def test_streamed_upload_holds_parts_not_the_whole(moto: MotoServer, client: Any) -> None:
    produced = []

    def chunks() -> Any:
        for i in range(24):
            chunk = bytes([i]) * MiB
            produced.append(len(chunk))
            yield chunk

    stream = ChunkStream(chunks())
    with Uploader(client, BUCKET, SMALL, WriteOptions(checksum_algorithm="SHA256")) as up:
        up.put_stream(stream, "stream/all.bin")
        (done,) = up.results()
    assert done.size == 24 * MiB == sum(produced)
    body = moto.admin_client("s3").get_object(Bucket=BUCKET, Key="stream/all.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(bytes([i]) * MiB for i in range(24))).digest()


def test_small_put_reports_etag_checksum_and_sends_sse(moto: MotoServer, client: Any) -> None:
    options = WriteOptions(server_side_encryption="AES256")
    with moto.recording() as rec, Uploader(client, BUCKET, SMALL, options) as up:
        up.put_stream(io.BytesIO(b"hello"), "p/hello.txt", "text/plain")
        (done,) = up.results()
    assert done.as_dict()["size"] == 5
    assert done.etag == '"5d41402abc4b2a76b9719d911017c592"'  # md5("hello")
    assert done.checksum == "NhCmhg=="  # CRC32 by default
    (put,) = rec.s3()
    assert put.headers["X-Amz-Server-Side-Encryption"] == "AES256"
    assert put.headers["Content-Type"] == "text/plain"
    assert "If-None-Match" not in put.headers
