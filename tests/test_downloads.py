"""Downloads against a real moto server: requests on the wire, bytes on disk, failures."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.downloads import Downloader, DownloadTask, plan_fetch, plan_ranges, range_size, read_object
from airflow_s3connect.errors import LocalPathError, NoSuchKeyError, S3ConnectError
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.local import ETAG_XATTR, LocalTree, stored_etag
from airflow_s3connect.objects import MiB, ObjectInfo, TransferConfig
from tests.conftest import BUCKET
from tests.support.moto_server import MotoServer

SMALL = TransferConfig(max_concurrency=4, chunk_size=5 * MiB, multipart_threshold=5 * MiB)


def _s3_gets(recording: Any) -> list[Any]:
    return [r for r in recording.s3() if r.method == "GET" and "list-type" not in r.query]


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


def test_a_large_object_takes_about_four_ranges_a_worker() -> None:
    """Fewer, larger ranges for a large object (each GET costs the worker CPU), never
    below chunk_size, never above 64 MiB."""
    eight = TransferConfig(max_concurrency=8, chunk_size=8 * MiB)
    assert range_size(100 * MiB, eight) == 8 * MiB  # up to 32 chunks: chunk_size
    assert range_size(256 * MiB, eight) == 8 * MiB
    assert range_size(1024 * MiB, eight) == 32 * MiB  # 32 ranges for 8 workers
    assert range_size(1024 * MiB + 1, eight) == 33 * MiB  # whole MiB
    assert range_size(100 * 1024 * MiB, eight) == 64 * MiB
    assert range_size(1024 * MiB, TransferConfig(max_concurrency=64, chunk_size=8 * MiB)) == 8 * MiB


def test_a_large_download_is_fewer_ranges_on_the_wire(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    """With 2 workers and 5 MiB chunks, a 48 MiB object is 7 ranges of 7 MiB, not 10 of 5
    (after a 5 MiB probe where its size is not known); the file is byte-exact."""
    body = os.urandom(48 * MiB + 3)
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="d/big.bin", Body=body)
    config = TransferConfig(max_concurrency=2, chunk_size=5 * MiB, multipart_threshold=5 * MiB)
    for known, expected in ((len(body), 7), (None, 8)):
        target = tmp_path / f"big-{known}.bin"
        with moto.recording() as rec:
            list(Downloader(client, BUCKET, config).download([DownloadTask("d/big.bin", target, known)]))
        assert target.read_bytes() == body
        ranges = sorted(int(r.headers["Range"][6:].split("-")[0]) for r in _s3_gets(rec))
        assert len(ranges) == expected
        if known is None:  # the probe's 5 MiB, then 7 MiB ranges (48 MiB / 8, in whole MiB)
            assert ranges[:3] == [0, 5 * MiB, 12 * MiB]
            assert len(ranges) == 8
        else:
            assert ranges[:3] == [0, 7 * MiB, 14 * MiB]


class _Breaking:
    """A response body that breaks off (a read timeout) after ``every`` bytes."""

    def __init__(self, body: Any, every: int) -> None:
        self.body, self.every = body, every

    def iter_chunks(self, size: int) -> Any:
        from botocore.exceptions import ReadTimeoutError

        got = 0
        for chunk in self.body.iter_chunks(size):
            yield chunk
            got += len(chunk)
            if got >= self.every:
                self.body.close()
                raise ReadTimeoutError(endpoint_url="test")

    def close(self) -> None:
        self.body.close()


def test_a_larger_range_bears_as_many_breaks_as_the_chunks_it_stands_for(moto: MotoServer, tmp_path: Path) -> None:
    """max_attempts counts per chunk_size bytes: a 13 MiB range (48 MiB, one worker, 5 MiB
    chunks) whose body breaks every 3 MiB takes 5 bodies, beyond max_attempts=3 for one
    chunk but within 3 for each of the 3 chunks it stands for; a link that breaks every
    1 MiB still exhausts the budget, and says so."""
    from tests.support.stores import endpoint_client

    body = os.urandom(48 * MiB + 3)
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="d/flaky.bin", Body=body)
    config = TransferConfig(max_concurrency=1, chunk_size=5 * MiB, multipart_threshold=5 * MiB, max_attempts=3)
    assert range_size(len(body), config) == 13 * MiB
    for every, fails in ((3 * MiB, False), (1 * MiB, True)):
        client = endpoint_client(moto.url, engine="botocore")
        client.meta.events.register(
            "after-call.s3.GetObject",
            lambda parsed, every=every, **_: parsed.update(Body=_Breaking(parsed["Body"], every)),
        )
        target = tmp_path / f"flaky-{every}.bin"
        task = DownloadTask("d/flaky.bin", target, len(body))
        if fails:
            with pytest.raises(S3ConnectError, match=r"broke off 9 times \(at byte 9437184 of bytes 0-13631487\)"):
                list(Downloader(client, BUCKET, config).download([task]))
            assert not target.exists()
        else:
            list(Downloader(client, BUCKET, config).download([task]))
            assert target.read_bytes() == body


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
