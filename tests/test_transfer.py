"""The transfer engine against a real moto server: requests on the wire, bytes on disk, failures."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import itertools
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.downloads import Downloader, DownloadTask, plan_fetch, plan_ranges, read_object
from airflow_s3connect.errors import FormatError, KeyExistsError, LocalPathError, NoSuchKeyError, S3ConnectError
from airflow_s3connect.formats import FORMATS, encode_records, write_parquet
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.local import ETAG_XATTR, LocalTree, stored_etag
from airflow_s3connect.objects import CommonPrefix, MiB, ObjectInfo, TransferConfig
from airflow_s3connect.patterns import compile_pattern
from airflow_s3connect.uploads import ChunkStream, Uploader
from airflow_s3connect.writes import WriteOptions
from tests.conftest import BUCKET, REGION
from tests.moto_server import MotoServer
from tests.stores import endpoint_client

SMALL = TransferConfig(max_concurrency=4, chunk_size=5 * MiB, multipart_threshold=5 * MiB)


def make_client(moto: MotoServer, **extra: Any) -> Any:
    return endpoint_client(moto.url, region=REGION, **extra)


@pytest.fixture
def client(moto: MotoServer) -> Any:
    return make_client(moto)


def _s3_gets(recording: Any) -> list[Any]:
    return [r for r in recording.s3() if r.method == "GET" and "list-type" not in r.query]


# --------------------------------------------------------------------------- listing
def test_listing_pages_requests_and_pattern_prefix(moto: MotoServer, client: Any) -> None:
    admin = moto.admin_client("s3")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: admin.put_object(Bucket=BUCKET, Key=f"logs/2025/{i:05d}.csv", Body=b""), range(2500)))
    admin.put_object(Bucket=BUCKET, Key="logs/2025/notes.txt", Body=b"")
    admin.put_object(Bucket=BUCKET, Key="other/x.csv", Body=b"")
    with moto.recording() as rec:
        lister = Lister(client, BUCKET, ListQuery(base="logs/", pattern=compile_pattern("2025/*.csv")))
        keys = [e.key for e in lister if isinstance(e, ObjectInfo)]
    assert len(keys) == 2500
    assert lister.requests == 3 == len(rec.s3())  # ceil(2501 / 1000)
    assert {r.query["prefix"][0] for r in rec.s3()} == {"logs/2025/"}  # the pattern's literal part

    with moto.recording() as rec:
        lister = Lister(client, BUCKET, ListQuery(base="logs/2025/", max_objects=1500))
        assert len(list(lister)) == 1500
    assert lister.truncated
    assert len(rec.s3()) == 2  # stops asking once the limit is reached


def test_listing_delimiter_start_after_and_time_window(moto: MotoServer, client: Any) -> None:
    admin = moto.admin_client("s3")
    for key in ("in/a.csv", "in/b.csv", "in/sub/c.csv", "in/sub2/d.csv", "in/folder/"):
        admin.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    entries = list(Lister(client, BUCKET, ListQuery(base="in/", delimiter="/")))
    assert entries[0] == ObjectInfo(entries[0].key, 1, entries[0].etag, entries[0].last_modified, "STANDARD")  # type: ignore[union-attr]
    shown = [e.prefix if isinstance(e, CommonPrefix) else e.key for e in entries]
    assert shown == ["in/a.csv", "in/b.csv", "in/folder/", "in/sub/", "in/sub2/"]
    after = [e.key for e in Lister(client, BUCKET, ListQuery(base="in/", start_after="in/b.csv"))]  # type: ignore[union-attr]
    assert after == ["in/sub/c.csv", "in/sub2/d.csv"]  # the folder marker in/folder/ is skipped
    modified = entries[0].last_modified  # type: ignore[union-attr]
    window = ListQuery(base="in/", modified_since=modified + datetime.timedelta(seconds=5))
    assert list(Lister(client, BUCKET, window)) == []
    window = ListQuery(base="in/", modified_until=modified)
    assert list(Lister(client, BUCKET, window)) == []  # exclusive upper bound


# --------------------------------------------------------------------------- downloads
def test_small_object_is_one_get_and_large_one_parallel_ranges(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    admin = moto.admin_client("s3")
    small, large = os.urandom(1000), os.urandom(12 * MiB + 17)
    admin.put_object(Bucket=BUCKET, Key="d/small.bin", Body=small)
    admin.put_object(Bucket=BUCKET, Key="d/large.bin", Body=large)
    with moto.recording() as rec:
        done = list(
            Downloader(client, BUCKET, SMALL).download(
                [
                    DownloadTask("d/small.bin", tmp_path / "small.bin"),
                    DownloadTask("d/large.bin", tmp_path / "large.bin"),
                ]
            )
        )
    assert (tmp_path / "small.bin").read_bytes() == small
    assert (tmp_path / "large.bin").read_bytes() == large
    assert {d.size for d in done} == {1000, len(large)}
    gets = _s3_gets(rec)
    assert [r.method for r in rec.s3()] == ["GET"] * 4  # no HEAD, ever
    ranges = sorted(r.headers.get("Range", "") for r in gets)
    assert ranges == [
        "bytes=0-5242879",  # small: the first range is the whole object
        "bytes=0-5242879",
        "bytes=10485760-12582928",
        "bytes=5242880-10485759",
    ]
    # Parts after the first are pinned to the ETag the first answered; the first is not.
    large_etag = next(d.etag for d in done if d.key == "d/large.bin")
    later = [r for r in gets if not r.headers.get("Range", "").startswith("bytes=0-")]
    assert len(later) == 2
    assert {r.headers.get("If-Match") for r in later} == {large_etag}
    assert all("If-Match" not in r.headers for r in gets if r.headers.get("Range", "").startswith("bytes=0-"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.bin", "small.bin"]  # no temporary left


def test_fetch_plans_follow_what_is_known_before_any_request() -> None:
    config = TransferConfig(chunk_size=5 * MiB, multipart_threshold=8 * MiB)
    assert plan_fetch(None, config) == "probe"
    assert plan_fetch(0, config) == "whole"
    assert plan_fetch(8 * MiB, config) == "whole"
    assert plan_fetch(8 * MiB + 1, config) == "ranges"
    assert plan_ranges(12, 5) == [(0, 4), (5, 9), (10, 11)]
    assert plan_ranges(12, 5, start=5) == [(5, 9), (10, 11)]  # after a probe of the first chunk
    assert plan_ranges(5, 5, start=5) == []
    assert plan_ranges(0, 5) == []
    covered = plan_ranges(10 * MiB + 3, 5 * MiB)
    assert covered[0][0] == 0
    assert covered[-1][1] == 10 * MiB + 2
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(covered))


def test_listed_objects_skip_the_size_probe(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    admin = moto.admin_client("s3")
    for i in range(20):
        admin.put_object(Bucket=BUCKET, Key=f"many/{i}.txt", Body=f"file {i}".encode())
    tasks = [
        DownloadTask(o.key, LocalTree(tmp_path).path_for(o.key, "many/"), o.size, o.etag, o.last_modified)
        for o in Lister(client, BUCKET, ListQuery(base="many/"))
        if isinstance(o, ObjectInfo)
    ]
    with moto.recording() as rec:
        list(Downloader(client, BUCKET, SMALL).download(tasks))
    gets = _s3_gets(rec)
    assert len(gets) == 20
    assert all("Range" not in r.headers for r in gets)
    assert (tmp_path / "7.txt").read_text() == "file 7"
    # skip_unchanged: the files carry LastModified as mtime, so a second pass sends nothing.
    with moto.recording() as rec:
        again = list(Downloader(client, BUCKET, SMALL, skip_unchanged=True).download(tasks))
    assert rec.s3() == []
    assert all(d.skipped for d in again)


def test_skip_unchanged_single_key_is_a_conditional_get(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="one.txt", Body=b"v1")
    task = DownloadTask("one.txt", tmp_path / "one.txt")
    list(Downloader(client, BUCKET, SMALL).download([task]))
    with moto.recording() as rec:
        (done,) = Downloader(client, BUCKET, SMALL, skip_unchanged=True).download([task])
    assert done.skipped
    assert len(rec.s3()) == 1
    assert rec.s3()[0].headers["If-None-Match"] == stored_etag(tmp_path / "one.txt")
    # A file whose version is not recorded (copied in, or no extended attributes): its mtime.
    os.removexattr(tmp_path / "one.txt", ETAG_XATTR)
    with moto.recording() as rec:
        (done,) = Downloader(client, BUCKET, SMALL, skip_unchanged=True).download([task])
    assert done.skipped
    assert "If-Modified-Since" in rec.s3()[0].headers
    assert "If-None-Match" not in rec.s3()[0].headers


def test_skip_unchanged_sees_a_same_size_replacement_within_the_same_second(
    moto: MotoServer, client: Any, tmp_path: Path
) -> None:
    """Size and LastModified cannot tell two versions of one second apart; the ETag each file
    was written from (an extended attribute) can, for listed objects and for one key."""
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="same/a.txt", Body=b"version 1")
    listed = [o for o in Lister(client, BUCKET, ListQuery(base="same/")) if isinstance(o, ObjectInfo)]
    task = DownloadTask(listed[0].key, tmp_path / "a.txt", listed[0].size, listed[0].etag, listed[0].last_modified)
    list(Downloader(client, BUCKET, SMALL, skip_unchanged=True).download([task]))
    assert stored_etag(tmp_path / "a.txt") == listed[0].etag
    admin.put_object(Bucket=BUCKET, Key="same/a.txt", Body=b"version 2")  # same size
    new = next(o for o in Lister(client, BUCKET, ListQuery(base="same/")) if isinstance(o, ObjectInfo))
    stamp = int(new.last_modified.timestamp())  # as if both versions had the same second
    os.utime(tmp_path / "a.txt", (stamp, stamp))
    relisted = DownloadTask(new.key, tmp_path / "a.txt", new.size, new.etag, new.last_modified)
    (done,) = Downloader(client, BUCKET, SMALL, skip_unchanged=True).download([relisted])
    assert not done.skipped
    assert (tmp_path / "a.txt").read_bytes() == b"version 2"
    (again,) = Downloader(client, BUCKET, SMALL, skip_unchanged=True).download([relisted])
    assert again.skipped  # and now it is the same version: skipped without a request

    # One key (size unknown): a conditional GET on the ETag, not on the mtime.
    admin.put_object(Bucket=BUCKET, Key="same/a.txt", Body=b"version 3")
    future = stamp + 3600  # an mtime after the new LastModified: If-Modified-Since would skip it
    os.utime(tmp_path / "a.txt", (future, future))
    with moto.recording() as rec:
        (one,) = Downloader(client, BUCKET, SMALL, skip_unchanged=True).download(
            [DownloadTask("same/a.txt", tmp_path / "a.txt")]
        )
    assert not one.skipped
    assert (tmp_path / "a.txt").read_bytes() == b"version 3"
    assert rec.s3()[0].headers.get("If-None-Match") == new.etag
    assert "If-Modified-Since" not in rec.s3()[0].headers
    with moto.recording() as rec:
        (same,) = Downloader(client, BUCKET, SMALL, skip_unchanged=True).download(
            [DownloadTask("same/a.txt", tmp_path / "a.txt")]
        )
    assert same.skipped
    assert len(rec.s3()) == 1


def test_failure_leaves_no_partial_file_and_names_the_key(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    admin = moto.admin_client("s3")
    for i in range(10):
        admin.put_object(Bucket=BUCKET, Key=f"f/{i}.bin", Body=os.urandom(100_000))
    tasks = [DownloadTask(f"f/{i}.bin", tmp_path / f"{i}.bin") for i in range(10)]
    tasks.insert(5, DownloadTask("f/missing.bin", tmp_path / "missing.bin"))
    downloader = Downloader(client, BUCKET, SMALL)
    with pytest.raises(NoSuchKeyError, match=r"s3://s3connect-test/f/missing.bin"):
        list(downloader.download(tasks))
    leftovers = [p.name for p in tmp_path.iterdir() if ".part" in p.name or p.name == "missing.bin"]
    assert leftovers == []
    # The same instance again: a failed call does not cancel the next one.
    (again,) = downloader.download([DownloadTask("f/3.bin", tmp_path / "again.bin")])
    assert (tmp_path / "again.bin").read_bytes() == admin.get_object(Bucket=BUCKET, Key="f/3.bin")["Body"].read()
    assert again.size == 100_000


def test_unwritable_target_and_file_in_the_way(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="w/a.txt", Body=b"a")
    (tmp_path / "blocker").write_text("I am a file")
    with pytest.raises(LocalPathError, match="remove files that sit where directories must go"):
        list(Downloader(client, BUCKET, SMALL).download([DownloadTask("w/a.txt", tmp_path / "blocker" / "a.txt")]))
    (tmp_path / "a.txt").mkdir()
    with pytest.raises(LocalPathError, match="is a directory"):
        list(Downloader(client, BUCKET, SMALL).download([DownloadTask("w/a.txt", tmp_path / "a.txt")]))
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []


@pytest.mark.parametrize(
    "key",
    ["in/../../etc/passwd", "in//abs", "in/a\\..\\b", "in/./x", "in/"],
)
def test_keys_that_would_escape_local_dir_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(LocalPathError, match="cannot be saved under"):
        LocalTree(tmp_path).path_for(key, "in/")


def test_a_symlinked_directory_leading_outside_local_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link").symlink_to(outside)
    tree = LocalTree(tmp_path / "in")
    with pytest.raises(LocalPathError, match=r"would land outside .* through a symlink"):
        tree.path_for("p/link/file.csv", "p/")
    assert tree.path_for("p/other/file.csv", "p/") == tmp_path / "in" / "other" / "file.csv"


def test_local_path_keeps_structure(tmp_path: Path) -> None:
    assert LocalTree(tmp_path).path_for("in/a/b/c.csv", "in/") == tmp_path / "a" / "b" / "c.csv"


def test_read_object_caps_the_size(moto: MotoServer, client: Any) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="r/small.json", Body=b'{"a": 1}')
    admin.put_object(Bucket=BUCKET, Key="r/empty", Body=b"")
    admin.put_object(Bucket=BUCKET, Key="r/big", Body=b"x" * 2000)
    etags = {key: admin.head_object(Bucket=BUCKET, Key=key)["ETag"] for key in ("r/small.json", "r/empty")}
    assert read_object(client, BUCKET, "r/small.json", 1000) == (b'{"a": 1}', etags["r/small.json"])
    assert read_object(client, BUCKET, "r/empty", 1000) == (b"", etags["r/empty"])
    with pytest.raises(S3ConnectError, match="2000 bytes, over the XCom limit of 1000"):
        read_object(client, BUCKET, "r/big", 1000)


# --------------------------------------------------------------------------- uploads
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


# --------------------------------------------------------------------------- formats and state
RECORDS = [{"id": 1, "name": "a,b", "when": datetime.date(2025, 4, 14)}, {"id": 2, "name": 'q"uote'}]


def test_text_formats_round_trip() -> None:
    csv_text = b"".join(encode_records(iter(RECORDS), FORMATS["csv"])).decode()
    assert csv_text == 'id,name,when\n1,"a,b",2025-04-14\n2,"q""uote",\n'
    gz = b"".join(encode_records(iter(RECORDS), FORMATS["csv.gz"]))
    assert gzip.decompress(gz).decode() == csv_text
    lines = gzip.decompress(b"".join(encode_records(iter(RECORDS), FORMATS["jsonl.gz"]))).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "name": "a,b", "when": "2025-04-14"},
        {"id": 2, "name": 'q"uote'},
    ]


def test_format_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"Record 2 has fields \['extra'\] that the first record lacks"):
        list(encode_records(iter([{"a": 1}, {"a": 2, "extra": 3}]), FORMATS["csv"]))
    with pytest.raises(FormatError, match="Record 1 is a list, not a dict"):
        list(encode_records(iter([[1, 2]]), FORMATS["jsonl"]))  # type: ignore[list-item]
    with pytest.raises(FormatError, match="parquet needs at least one record"):
        write_parquet(iter([]), tmp_path / "x.parquet")


def test_parquet_batches_into_row_groups(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = write_parquet(({"id": i, "v": f"r{i}"} for i in range(25)), tmp_path / "x.parquet", batch_rows=10)
    assert rows == 25
    meta = pq.ParquetFile(tmp_path / "x.parquet").metadata
    assert (meta.num_rows, meta.num_row_groups) == (25, 3)


def _info(key: str, second: int) -> ObjectInfo:
    return ObjectInfo(key, 1, '"e"', datetime.datetime(2025, 4, 14, 0, 0, second, tzinfo=datetime.timezone.utc))


def test_listed_traversal_keys_are_refused_before_any_download(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="trav/ok.txt", Body=b"ok")
    admin.put_object(Bucket=BUCKET, Key="trav/a\\..\\..\\evil.txt", Body=b"evil")
    listed = [o for o in Lister(client, BUCKET, ListQuery(base="trav/")) if isinstance(o, ObjectInfo)]
    assert {o.key for o in listed} == {"trav/ok.txt", "trav/a\\..\\..\\evil.txt"}

    def plan() -> Any:
        tree = LocalTree(tmp_path / "in")
        for o in listed:
            yield DownloadTask(o.key, tree.path_for(o.key, "trav/"), o.size, o.etag, o.last_modified)

    with pytest.raises(LocalPathError, match=r"contains a backslash\. Rename the object or narrow prefix/pattern"):
        list(Downloader(client, BUCKET, SMALL).download(plan()))
    assert not any(p.name == "evil.txt" or ".part" in p.name for p in tmp_path.rglob("*"))
