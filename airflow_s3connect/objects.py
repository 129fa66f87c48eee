"""What transfers are about: objects as a listing or a transfer describes them, the
sizes and limits of S3, and how a transfer uses the network.

Pure value types, no I/O: every other engine module and the operators share them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.scope import Scope

KiB = 1024
MiB = 1024 * KiB
#: CopyObject's limit; bigger copies are multipart copies.
MAX_COPY_BYTES = 5 * 1024 * MiB


@dataclass(frozen=True)
class TransferConfig:
    """How a transfer uses the network; ``max_concurrency`` comes from the connection.

    :param max_concurrency: requests in flight (download workers, multipart parts).
    :param chunk_size: bytes per multipart part and per ranged GET; a large download takes
        larger ranges, about four per worker (:func:`~airflow_s3connect.downloads.range_size`).
    :param multipart_threshold: objects above this are fetched in ranges / uploaded in parts.
    :param read_size: bytes read from a response body at a time.
    :param max_attempts: tries of one part (of each ``chunk_size`` bytes of a larger range) when
        its body breaks off (connection reset, timeout).
    """

    max_concurrency: int = 8
    chunk_size: int = 8 * MiB
    multipart_threshold: int = 8 * MiB
    read_size: int = 256 * KiB
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if self.chunk_size < 5 * MiB:
            raise ArgumentError(f"chunk_size {self.chunk_size} is below S3's 5 MiB part minimum: use at least 5 MiB.")
        if not 1 <= self.max_concurrency <= 64:
            raise ArgumentError(f"max_concurrency {self.max_concurrency} must be within 1..64.")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing (or a GET) described it."""

    key: str
    size: int
    etag: str
    last_modified: datetime.datetime
    storage_class: str | None = None
    #: set when one version was asked for (``version_id=``): every request about the object names it
    version_id: str | None = None
    #: HeadObject's ``x-amz-restore`` answer ("" when it had none) where the object was
    #: described by a HEAD; None where a listing described it and its restore state is unknown
    restore: str | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified.isoformat(),
            "storage_class": self.storage_class,
            "version_id": self.version_id,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ObjectInfo:
        """Back from :meth:`as_dict` (e.g. a trigger event's payload)."""
        return cls(
            value["key"],
            value["size"],
            value["etag"],
            datetime.datetime.fromisoformat(value["last_modified"]),
            value.get("storage_class"),
            value.get("version_id"),
        )


def version_args(version_id: str | None) -> dict[str, Any]:
    """``VersionId`` for a request about one version of an object; nothing for its current one."""
    return {"VersionId": version_id} if version_id else {}


@dataclass(frozen=True, slots=True)
class CommonPrefix:
    """A "directory" of a listing with a delimiter."""

    prefix: str


@dataclass(frozen=True, slots=True)
class Downloaded:
    key: str
    path: Path
    size: int
    etag: str
    last_modified: datetime.datetime | None
    skipped: bool = False
    #: the version read, where the store keeps versions
    version_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "local_path": str(self.path),
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            "skipped": self.skipped,
            "version_id": self.version_id,
        }


@dataclass(frozen=True, slots=True)
class Uploaded:
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None
    checksum: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "version_id": self.version_id,
            "checksum": self.checksum,
        }


def result_entry(scope: Scope, bucket: str, item: ObjectInfo | Downloaded | Uploaded | str | Any) -> dict[str, Any]:
    """One object as every operator, hook call and trigger returns it: what the engine
    knows of it, plus ``bucket``, ``key`` relative to the connection's path_prefix (what
    ``resolve`` takes back) and ``uri``. The only place results are shaped."""
    key = item if isinstance(item, str) else item.key
    fields = {"size": None, "etag": None, "last_modified": None} if isinstance(item, str) else item.as_dict()
    return {**fields, "bucket": bucket, "key": scope.relative(key), "uri": f"s3://{bucket}/{key}"}
