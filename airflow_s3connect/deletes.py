"""Deleting objects: one at a time, conditional on the version downloaded (and archives,
which copy then delete), and in batches of 1,000 keys per DeleteObjects request.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_s3connect import progress
from airflow_s3connect.conditional import pinned
from airflow_s3connect.connection import is_aws_endpoint
from airflow_s3connect.errors import (
    PRECONDITION_CODES,
    AccessDeniedError,
    ObjectChangedError,
    S3ConnectError,
    error_code,
    resource_arn,
    translated,
)
from airflow_s3connect.objects import MAX_COPY_BYTES, ObjectInfo, version_args

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef


def delete_object(client: S3Client, bucket: str, key: str, etag: str = "") -> None:
    """Delete ``key`` only if it is still the version downloaded (``etag``).

    AWS honours ``If-Match`` on DeleteObject. Other stores may ignore it, so there a
    HeadObject checks the version first (a window of one round trip instead of the whole
    run); a store that refuses the header gets a plain delete after that check.
    """
    with translated("DeleteObject", bucket, key):
        if not etag:
            client.delete_object(Bucket=bucket, Key=key)
            return
        if (
            not is_aws_endpoint(str(client.meta.endpoint_url))
            and client.head_object(Bucket=bucket, Key=key)["ETag"] != etag
        ):
            raise _replaced_after_download(bucket, key, etag)
        try:
            pinned(
                functools.partial(client.delete_object, Bucket=bucket, Key=key), client, "IfMatch", bucket, key, etag
            )
        except ClientError as exc:
            code = error_code(exc)
            if code in PRECONDITION_CODES:
                raise _replaced_after_download(bucket, key, etag) from None
            if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest", "501"):
                raise
            client.delete_object(Bucket=bucket, Key=key)


def archive_object(
    client: S3Client, bucket: str, key: str, target: str, etag: str, size: int, options: Mapping[str, Any] | None = None
) -> None:
    """Move an object: copy it (pinned to the ETag we downloaded), check the copy is that
    version, then delete the original (conditionally too). ``options``: the copy's write
    parameters (``WriteOptions.args("CopyObject")``).

    Some stores ignore ``x-amz-copy-source-if-match`` (Ceph RGW 16 reads another name), or
    refuse it and DELETE's ``If-Match`` for every multipart ETag (OpenStack Swift): the
    copy's size and, for a single-part original, its ETag prove which version was copied,
    and the HEAD before the delete which version is deleted, so a replaced original is never
    deleted unread.
    """
    extra = dict(options or {})
    with translated("CopyObject", bucket, target):
        try:
            if size <= MAX_COPY_BYTES:
                source: CopySourceTypeDef = {"Bucket": bucket, "Key": key}
                copy = functools.partial(client.copy_object, Bucket=bucket, Key=target, CopySource=source, **extra)
                pinned(copy, client, "CopySourceIfMatch", bucket, key, etag)
            else:
                client.copy({"Bucket": bucket, "Key": key}, bucket, target, ExtraArgs=extra or None)
        except ClientError as exc:
            if error_code(exc) in PRECONDITION_CODES:
                raise _replaced_after_download(bucket, key, etag) from None
            raise
        copied = client.head_object(Bucket=bucket, Key=target)
    single_part = bool(etag) and "-" not in etag
    if copied["ContentLength"] != size or (single_part and copied.get("ETag") != etag):
        with contextlib.suppress(BotoCoreError, ClientError):
            client.delete_object(Bucket=bucket, Key=target)
        raise _replaced_after_download(bucket, key, etag)
    delete_object(client, bucket, key, etag)


#: Keys per DeleteObjects request: S3's limit.
DELETE_BATCH = 1000


class BatchDelete:
    """DeleteObjects in batches of :data:`DELETE_BATCH` keys: one request per batch.

    With ``if_match`` each key carries the ETag it was listed with, so an object replaced
    since the listing is not deleted (AWS honours it; a store that does not know the
    field deletes unconditionally, which is why callers pass it for AWS only). S3 answers
    per key: what it refused is collected in :attr:`failed`, the rest is yielded.
    """

    def __init__(self, client: S3Client, bucket: str, *, if_match: bool = False) -> None:
        self.client = client
        self.bucket = bucket
        self.if_match = if_match
        self.requests = 0
        #: (key, code, message) of every key S3 did not delete
        self.failed: list[tuple[str, str, str]] = []
        #: whether a refused key named a version (deleting one needs s3:DeleteObjectVersion)
        self.versioned = False

    def run(
        self, objects: Iterable[ObjectInfo | str], markers: frozenset[str] = frozenset()
    ) -> Iterator[ObjectInfo | str]:
        """Delete ``objects`` (listed, with their ETag, or keys); yield each one deleted.

        :param markers: keys deleted in passing (a folder's marker, which may not exist: S3
            answers "deleted" all the same), not counted as objects in progress figures."""
        meter = progress.of(self.client)
        # objects count here, not their bytes; a marker not at all
        found = iter(meter.planning(objects, lambda _: None, counted=lambda item: _key(item) not in markers))
        while batch := list(itertools.islice(found, DELETE_BATCH)):
            entries: list[dict[str, Any]] = []
            for item in batch:
                entry: dict[str, Any] = {"Key": item.key if isinstance(item, ObjectInfo) else item}
                if isinstance(item, ObjectInfo):
                    entry.update(version_args(item.version_id))  # that version, for good
                if self.if_match and isinstance(item, ObjectInfo) and item.etag and "VersionId" not in entry:
                    entry["ETag"] = item.etag
                entries.append(entry)
            with translated("DeleteObjects", self.bucket, entries[0]["Key"]):
                answer = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": entries, "Quiet": True},  # type: ignore[typeddict-item]
                )
            self.requests += 1
            errors = {error.get("Key", ""): error for error in answer.get("Errors", [])}
            for item, entry in zip(batch, entries, strict=True):
                if (error := errors.get(entry["Key"])) is not None:
                    self.failed.append((entry["Key"], str(error.get("Code", "")), str(error.get("Message", ""))))
                    self.versioned = self.versioned or "VersionId" in entry
                else:
                    if entry["Key"] not in markers:
                        meter.finished()
                    yield item

    def check(self, deleted: int) -> None:
        """Raise what S3 refused, once every batch was sent: a missing permission as such."""
        if not self.failed:
            return
        key, code, _ = self.failed[0]
        if code == "AccessDenied":
            action = "s3:DeleteObjectVersion" if self.versioned else "s3:DeleteObject"
            raise AccessDeniedError(action, resource_arn(self.bucket, key))
        first = "; ".join(f"{key}: {code} ({message})" for key, code, message in self.failed[:5])
        raise S3ConnectError(f"{len(self.failed)} objects were not deleted ({deleted} were): {first}")


def _key(item: ObjectInfo | str) -> str:
    return item.key if isinstance(item, ObjectInfo) else item


def _replaced_after_download(bucket: str, key: str, etag: str) -> ObjectChangedError:
    return ObjectChangedError(
        f"s3://{bucket}/{key} was replaced after it was downloaded (it is no longer ETag {etag}): it was not "
        "archived nor deleted, so its new content is kept; run again to fetch it."
    )
