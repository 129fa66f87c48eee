"""Streamed listings against a real moto server: pages, requests, the pattern's prefix, windows."""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.objects import CommonPrefix, ObjectInfo
from airflow_s3connect.patterns import compile_pattern
from tests.conftest import BUCKET
from tests.support.moto_server import MotoServer


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
