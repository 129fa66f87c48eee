"""Watching for objects: one observation per poke, and the decision whether the wait is over.

No Airflow here: the sensor (worker) and the trigger (triggerer) both drive a
:class:`Watcher`. An observation is a listing of the pattern's literal prefix that stops
paginating as soon as the answer is known, and never sends a HeadObject (sizes and
LastModified come from the listing). An exact key costs one request: ListObjectsV2 with
the key as Prefix and MaxKeys=1 (a key sorts before every longer key it prefixes).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_s3connect.connection import is_aws_endpoint
from airflow_s3connect.errors import translated
from airflow_s3connect.listing import Lister, ListQuery, is_reservation
from airflow_s3connect.objects import ObjectInfo
from airflow_s3connect.patterns import compile_pattern
from airflow_s3connect.writes import looks_reserved

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class WatchSpec:
    """What to wait for, fully resolved (bucket, full prefix or key, absolute times).

    Plain values only: it is what a trigger serializes (no credentials, ever).

    :param key: an exact full key; else ``base`` + ``pattern``.
    :param new_since: only objects modified at or after this instant (ISO 8601).
    :param stable_for: seconds the matching set (keys, sizes, ETags) must stay unchanged.
    :param absent: wait until nothing matches.
    :param collect_all: read every page, so the result holds every match, instead of
        stopping as soon as ``min_objects`` are seen.
    """

    bucket: str
    key: str | None = None
    base: str = ""
    pattern: str | None = None
    min_objects: int = 1
    min_size: int = 0
    new_since: str | None = None
    stable_for: float = 0
    absent: bool = False
    collect_all: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> WatchSpec:
        return cls(**value)

    @property
    def since(self) -> datetime.datetime | None:
        return datetime.datetime.fromisoformat(self.new_since) if self.new_since else None

    @property
    def needs_every_page(self) -> bool:
        return self.collect_all or self.stable_for > 0


@dataclass
class Observation:
    matches: list[ObjectInfo]
    requests: int

    def signature(self) -> str:
        """A digest of what matched: changes when an object appears, goes, grows or is replaced."""
        digest = hashlib.blake2s()
        for info in sorted(self.matches, key=lambda i: i.key):
            digest.update(f"{info.key}\x1f{info.size}\x1f{info.etag}\x1e".encode())
        return digest.hexdigest()


def observe(client: S3Client, spec: WatchSpec) -> Observation:
    """List what matches now, reading no more pages than the answer needs."""
    if spec.key is not None:
        with translated("ListObjectsV2", spec.bucket, spec.key):
            page = client.list_objects_v2(Bucket=spec.bucket, Prefix=spec.key, MaxKeys=1)
        found = [
            ObjectInfo(item["Key"], item["Size"], item["ETag"], item["LastModified"], item.get("StorageClass"))
            for item in page.get("Contents", [])
            if item["Key"] == spec.key
        ]
        query = ListQuery(base=spec.key, min_size=spec.min_size, modified_since=spec.since)
        admitted = [info for info in found if query.admits(info)]
        told = looks_reserved(admitted[0].size, admitted[0].etag) if admitted else False
        if told:
            return Observation([], 1)  # a multipart upload's reservation: not yet the object
        if told is None and not is_aws_endpoint(str(client.meta.endpoint_url)):
            return Observation([] if is_reservation(client, spec.bucket, spec.key) else admitted, 2)
        return Observation(admitted, 1)
    query = ListQuery(
        base=spec.base,
        pattern=compile_pattern(spec.pattern) if spec.pattern else None,
        min_size=spec.min_size,
        modified_since=spec.since,
    )
    enough = 1 if spec.absent else spec.min_objects
    lister = Lister(client, spec.bucket, query)
    matches: list[ObjectInfo] = []
    for entry in lister:
        if isinstance(entry, ObjectInfo):
            matches.append(entry)
            if len(matches) >= enough and not spec.needs_every_page:
                break
    return Observation(matches, lister.requests)


@dataclass
class Watcher:
    """Decides, poke by poke, whether the wait is over.

    ``stable_for`` needs memory across pokes: the signature of the matching set and when
    it was first seen. It lives here (poke mode, trigger) or is saved and restored through
    :meth:`state` / :meth:`restore` (reschedule mode, in Airflow's task state store).
    """

    spec: WatchSpec
    signature: str | None = None
    since: float | None = None
    requests: int = field(default=0)

    def poke(self, client: S3Client, now: float) -> list[ObjectInfo] | None:
        """The matches when the condition holds, else None."""
        seen = observe(client, self.spec)
        self.requests += seen.requests
        if self.spec.absent:
            return [] if not seen.matches else None
        if len(seen.matches) < self.spec.min_objects:
            self.signature = self.since = None
            return None
        if self.spec.stable_for <= 0:
            return seen.matches
        signature = seen.signature()
        if signature != self.signature or self.since is None:
            self.signature, self.since = signature, now
            return None
        return seen.matches if now - self.since >= self.spec.stable_for else None

    def state(self) -> dict[str, Any]:
        return {"signature": self.signature, "since": self.since}

    def restore(self, state: Any) -> None:
        if isinstance(state, dict):
            self.signature, self.since = state.get("signature"), state.get("since")
