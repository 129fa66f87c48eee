"""What an operation acts on: one key, named keys, a listing, or a manifest's entries.

No Airflow here. Get, Copy, Delete and the hook's download, copy and delete all select
objects the same way, so they agree: one source lookup for one key (a HeadObject, which
needs s3:GetObject, never a listing that would need s3:ListBucket), one streamed listing
for a prefix, pattern and time window, and one ``max_objects`` rule that reads one past
the limit and refuses before anything is done.
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_s3connect.errors import ArgumentError, S3ConnectError, translated
from airflow_s3connect.listing import Lister, ListQuery, listing_query
from airflow_s3connect.objects import ObjectInfo, version_args
from airflow_s3connect.scope import Scope

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")


@dataclass
class Selection:
    """Objects to act on, resolved inside a scope before any request.

    ``base`` is where relative paths start (a listing's prefix, a key's folder, the scope's
    prefix for named keys and manifests); ``where`` names the selection in logs and lineage.
    """

    bucket: str
    base: str
    where: str
    key: str | None = None
    keys: Sequence[str] = ()
    query: ListQuery | None = None
    entries: Iterable[ObjectInfo | str] | None = None
    #: one version of ``key`` (looked up even when ``lookup`` is off: its size and ETag are that version's)
    version_id: str | None = None
    #: the listing, once :meth:`objects` ran one (its request and scan counts)
    lister: Lister | None = None

    @classmethod
    def of(
        cls,
        scope: Scope,
        *,
        key: str | None = None,
        keys: Iterable[str] | None = None,
        prefix: str | None = None,
        pattern: str | None = None,
        manifest: tuple[str, Iterable[ObjectInfo | str]] | None = None,
        bucket: str | None = None,
        window: Mapping[str, Any] | None = None,
        version_id: str | None = None,
    ) -> Selection:
        """Exactly one of ``key`` (with ``version_id``: that version of it), ``keys``,
        ``prefix``/``pattern`` (with a ``window``: modified_since / modified_until /
        min_size…), or ``manifest`` (its bucket and entries, already checked against the
        scope)."""
        if version_id is not None and key is None:
            raise ArgumentError(f"version_id={version_id!r} names a version of one object: give it with key=... .")
        given = (
            (key is not None)
            + (keys is not None)
            + (manifest is not None)
            + (prefix is not None or pattern is not None)
        )
        if given != 1:
            raise ArgumentError("Give exactly one of key=..., keys=[...], manifest=... or prefix=... / pattern=... .")
        if manifest is not None:
            found_bucket, entries = manifest
            return cls(found_bucket, scope.prefix, f"s3://{found_bucket}/{scope.prefix}", entries=entries)
        if key is not None:
            ref = scope.resolve(key, bucket)
            folder = posixpath.dirname(ref.key)
            return cls(ref.bucket, folder + "/" if folder else "", ref.uri, key=ref.key, version_id=version_id or None)
        if keys is not None:
            found_bucket, full = scope.resolve_keys([str(name) for name in keys], bucket)
            return cls(found_bucket, scope.prefix, f"s3://{found_bucket}/", keys=tuple(full))
        found_bucket, query = listing_query(scope, prefix or "", pattern, bucket, **(window or {}))
        return cls(found_bucket, query.base, f"s3://{found_bucket}/{query.prefix}", query=query)

    def objects(self, client: S3Client, *, lookup: bool = True) -> Iterator[ObjectInfo | str]:
        """The selected objects, as they are read: listed ones as :class:`ObjectInfo`; one
        key looked up with a HeadObject when ``lookup`` (else its key); named keys and bare
        manifest entries as keys."""
        if self.key is not None:
            looked_up = lookup or self.version_id is not None
            yield head(client, self.bucket, self.key, self.version_id) if looked_up else self.key
        elif self.query is not None:
            self.lister = Lister(client, self.bucket, self.query)
            yield from (entry for entry in self.lister if isinstance(entry, ObjectInfo))
        elif self.entries is not None:
            yield from self.entries
        else:
            yield from self.keys

    def at_most(self, client: S3Client, max_objects: int, verb: str, done: str, *, lookup: bool = True) -> list[Any]:
        """:meth:`objects`, refused above ``max_objects`` before anything is done with them
        (a listing stops one past the limit)."""
        if self.query is not None:
            self.query = _limited(self.query, max_objects + 1)
        narrow = {"key": "key", "keys": "keys", "listing": "prefix/pattern", "manifest": "the manifest"}[self.kind]
        return at_most(self.objects(client, lookup=lookup), max_objects, self.where, verb, done, narrow)

    @property
    def kind(self) -> str:
        if self.key is not None:
            return "key"
        if self.query is not None:
            return "listing"
        return "manifest" if self.entries is not None else "keys"


def _limited(query: ListQuery, limit: int) -> ListQuery:
    return replace(query, max_objects=min(query.max_objects or limit, limit))


def at_most(found: Iterable[T], max_objects: int, where: str, verb: str, done: str, narrow: str) -> list[T]:
    """What was found, read one past ``max_objects``: more is refused before anything is done."""
    taken = list(itertools.islice(found, max_objects + 1))
    if len(taken) > max_objects:
        raise S3ConnectError(
            f"{where} has more than max_objects={max_objects} objects to {verb}: nothing was {done}. "
            f"Narrow {narrow}, or raise max_objects."
        )
    return taken


def head(client: S3Client, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
    """One object (or one version of it) as a listing would describe it, from a HeadObject
    (s3:GetObject; s3:GetObjectVersion for a version)."""
    with translated("HeadObject", bucket, key, version_id=version_id):
        answer = client.head_object(Bucket=bucket, Key=key, **version_args(version_id))
    return ObjectInfo(key, int(answer["ContentLength"]), str(answer["ETag"]), answer["LastModified"],
                      answer.get("StorageClass"), version_id, str(answer.get("Restore") or ""))  # fmt: skip
