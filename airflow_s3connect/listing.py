"""Streamed listings: what to list (:class:`ListQuery`) and the pages (:class:`Lister`).

Memory holds one page; every filter applies while streaming, and a pattern's literal part
is sent to S3 as the Prefix, so no call lists more than it must.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_s3connect.connection import is_aws_endpoint
from airflow_s3connect.errors import NoSuchKeyError, translated
from airflow_s3connect.objects import CommonPrefix, ObjectInfo
from airflow_s3connect.patterns import KeyPattern, compile_pattern
from airflow_s3connect.scope import Scope
from airflow_s3connect.writes import RESERVATION_METADATA, looks_reserved

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


#: S3's page size for ListObjectsV2: requests per listing = ceil(listed / 1000).
PAGE_SIZE = 1000


@dataclass(frozen=True)
class ListQuery:
    """What to list: everything here is applied while streaming, nothing after.

    ``base`` is the full key prefix listed; ``pattern`` matches keys relative to it, and
    its literal part is added to the ``Prefix`` sent to S3, so no call lists more than it
    must. ``modified_until`` is exclusive, so consecutive windows never count an object twice.
    """

    base: str = ""
    pattern: KeyPattern | None = None
    delimiter: str | None = None
    start_after: str | None = None
    modified_since: datetime.datetime | None = None
    modified_until: datetime.datetime | None = None
    max_objects: int | None = None
    min_size: int = 0
    include_folder_markers: bool = False

    @property
    def prefix(self) -> str:
        return self.base + (self.pattern.prefix if self.pattern is not None else "")

    def admits(self, info: ObjectInfo) -> bool:
        if info.key.endswith("/") and not self.include_folder_markers:
            return False
        if self.pattern is not None and not self.pattern.matches(info.key[len(self.base) :]):
            return False
        if info.size < self.min_size:
            return False
        if self.modified_since is not None and info.last_modified < self.modified_since:
            return False
        return self.modified_until is None or info.last_modified < self.modified_until


class Lister:
    """Streams ListObjectsV2 pages; memory holds one page. Counts what it did.

    Stops asking for pages once ``max_objects`` results were yielded (``truncated`` then
    tells whether more existed).
    """

    def __init__(self, client: S3Client, bucket: str, query: ListQuery) -> None:
        self.client = client
        self.bucket = bucket
        self.query = query
        # Reservations exist only where a store ignores the condition on
        # CompleteMultipartUpload, never on AWS. Their size and ETag tell them from data; only
        # an object of their size whose ETag encryption changed costs a HEAD.
        self._reservations_possible = not is_aws_endpoint(str(client.meta.endpoint_url))
        self.requests = 0
        self.scanned = 0
        self.truncated = False

    def __iter__(self) -> Iterator[ObjectInfo | CommonPrefix]:
        query = self.query
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": query.prefix, "MaxKeys": PAGE_SIZE}
        if query.delimiter:
            params["Delimiter"] = query.delimiter
        if query.start_after:
            params["StartAfter"] = query.start_after
        yielded = 0
        limit = query.max_objects or None
        # A store whose key order is not S3's byte order can repeat a key across a page
        # boundary: each page's names are checked against the previous page's.
        previous: set[str] = set()
        while True:
            with translated("ListObjectsV2", self.bucket, query.prefix):
                page = self.client.list_objects_v2(**params)
            self.requests += 1
            names = {p["Prefix"] for p in page.get("CommonPrefixes", [])} | {o["Key"] for o in page.get("Contents", [])}
            entries: list[ObjectInfo | CommonPrefix] = [
                CommonPrefix(p["Prefix"]) for p in page.get("CommonPrefixes", []) if p["Prefix"] not in previous
            ]
            for item in page.get("Contents", []):
                if item["Key"] in previous:
                    continue
                self.scanned += 1
                info = ObjectInfo(
                    item["Key"], item["Size"], item["ETag"], item["LastModified"], item.get("StorageClass")
                )
                if query.admits(info) and not self._is_reservation(info):
                    entries.append(info)
            # Directories and objects interleave in key order, as S3 sorts them.
            entries.sort(key=lambda e: e.prefix if isinstance(e, CommonPrefix) else e.key)
            for entry in entries:
                if limit is not None and yielded >= limit:
                    self.truncated = True
                    return
                yield entry
                yielded += 1
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            previous = names
            params["ContinuationToken"] = token
            params.pop("StartAfter", None)

    def _is_reservation(self, info: ObjectInfo) -> bool:
        told = looks_reserved(info.size, info.etag)
        if told is not None or not self._reservations_possible:
            return bool(told)
        self.requests += 1
        return is_reservation(self.client, self.bucket, info.key)


def is_reservation(client: S3Client, bucket: str, key: str) -> bool:
    """Whether the object at ``key`` is a multipart upload's reservation, not data (one
    HeadObject: listings carry no metadata)."""
    try:
        with translated("HeadObject", bucket, key):
            head = client.head_object(Bucket=bucket, Key=key)
    except NoSuchKeyError:
        return True  # gone since the listing: nothing to act on either
    return RESERVATION_METADATA in head.get("Metadata", {})


def listing_query(
    scope: Scope,
    prefix: str,
    pattern: str | None,
    bucket: str | None,
    **options: Any,
) -> tuple[str, ListQuery]:
    """Resolve ``prefix`` (relative to path_prefix) and compile ``pattern`` (relative to it)
    into the bucket and query to list: shared by List, Get and the sensor."""
    ref = scope.resolve_prefix(prefix or "", bucket)
    return ref.bucket, ListQuery(base=ref.key, pattern=compile_pattern(pattern) if pattern else None, **options)
