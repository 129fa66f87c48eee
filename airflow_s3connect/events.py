"""New and changed objects under one prefix, found by polling: what an event watcher emits.

No Airflow here. S3 has no cursor over "what changed": a listing is in key order, and
LastModified is when an upload *started* (a multipart upload that ran for ten minutes
appears with the time it began). So a watermark of "the newest LastModified seen" alone
would miss an object that became visible after a newer one. The watermark therefore keeps
the newest LastModified and every object (key, ETag, LastModified) seen within
``lookback`` seconds before it: an object is new when it is not among them and is not
older than that window. An object replaced in place has a new LastModified (and usually
ETag), so it is new again: "new or updated".

What a poll returns stays *pending* until :meth:`ObjectStream.commit` (the events built
from it are stored) or :meth:`ObjectStream.release` (they were not: the next poll
returns them again). Committing in LastModified order keeps the watermark honest when
only the first part of a poll's objects was committed before a restart.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from airflow_s3connect.connection import is_aws_endpoint
from airflow_s3connect.errors import S3ConnectError, WatcherError
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.notifications import Notification
from airflow_s3connect.objects import ObjectInfo
from airflow_s3connect.watch import WatchSpec, observe
from airflow_s3connect.watermark import DEFAULT_LOOKBACK, Watermark, identity

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Start = Literal["now", "all"]
STARTS: tuple[Start, ...] = ("now", "all")
#: Dates in keys are often the writer's local date, up to 14 hours off UTC: a listing that
#: skips keys by their date starts a day earlier than the lookback alone would.
DATE_SLACK = datetime.timedelta(days=1)


class ObjectStream:
    """One prefix, polled: each poll is one listing (one request per 1,000 keys).

    :param watermark: what an earlier run committed; None on a first start, where
        ``start="now"`` takes everything listed as seen and ``start="all"`` returns it.
    :param start_after: for keys that sort by a date in them, the full key to list after
        for a moment (:meth:`~airflow_s3connect.patterns.KeyPattern.start_after`): a poll
        then skips the keys dated before the lookback (and :data:`DATE_SLACK`). An object
        rewritten under such an old date is not seen.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str,
        *,
        start: Start = "now",
        lookback: float = DEFAULT_LOOKBACK,
        watermark: Watermark | None = None,
        start_after: Callable[[datetime.datetime], str] | None = None,
        notified: bool = False,
    ) -> None:
        if start not in STARTS:
            raise S3ConnectError(f"start={start!r}: use 'now' (only what arrives from now on) or 'all'.")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.start = start
        self.lookback = lookback
        self.first_start = watermark is None
        self.watermark = watermark or Watermark()
        self.requests = 0
        self._start_after = start_after
        self._pending: set[tuple[str, str, str]] = set()
        #: With notifications, announced objects are remembered past the lookback
        #: (:attr:`Watermark.announced`); pending object → its notification's sequencer.
        self.notified = notified
        self._sequencers: dict[tuple[str, str, str], str] = {}
        #: Sequencers order the notifications of a key on Amazon S3; other stores' need not.
        self._ordered = notified and is_aws_endpoint(str(client.meta.endpoint_url))
        #: Polls and confirmations run in worker threads, commits on the triggerer's loop:
        #: the state they share changes under this lock (never held across a request).
        self._lock = threading.Lock()

    def poll(self) -> list[ObjectInfo]:
        """What is new since the watermark and not already pending, oldest first."""
        after = None
        if self._start_after is not None and self.watermark.newest is not None:
            after = self._start_after(self.watermark.newest - datetime.timedelta(seconds=self.lookback) - DATE_SLACK)
        lister = Lister(self.client, self.bucket, ListQuery(base=self.prefix, start_after=after))
        listed = [info for info in lister if isinstance(info, ObjectInfo)]
        self.requests += lister.requests
        with self._lock:
            new = [
                info
                for info in listed
                if self.watermark.is_new(info, self.lookback)
                and not (self.notified and self.watermark.was_announced(info.key, identity(info)))
                and _pending_key(info) not in self._pending
            ]
            new.sort(key=lambda info: (info.last_modified, info.key))
            if self.first_start:
                self.first_start = False
                if self.start == "now":
                    self.watermark.advance(new, self.lookback)
                    self.watermark.since = self.watermark.newest if self.notified else None
                    return []
            self._pending.update(_pending_key(info) for info in new)
        return new

    def confirm(self, notified: Iterable[Notification]) -> tuple[list[ObjectInfo], set[str]]:
        """The objects S3 notifications told of that are new, oldest first, each confirmed
        by one listing of its key; and the keys whose object is pending (announced, not yet
        stored: their messages must wait).

        A notification is delivered at least once and in any order, and the object may
        have been replaced or deleted since. The listing says what the key holds *now*:
        that is announced once, whichever of its notifications comes first, and remembered
        past the lookback (:attr:`Watermark.announced`); a deleted object is not announced.
        On Amazon S3, a notification whose sequencer is not newer than the one acted on
        costs no request. Unlike a poll, age does not hide a notified object (a queue
        drained after an outage announces what it held), except what existed before a
        ``start="now"`` watcher first listed.
        """
        latest: dict[str, Notification] = {}
        for notification in notified:
            known = latest.get(notification.key)
            if known is None or notification.is_newer_than(known.sequencer):
                latest[notification.key] = notification
        new: list[ObjectInfo] = []
        busy: set[str] = set()
        for key, notification in latest.items():
            with self._lock:
                acted = self.watermark.announced.get(key, ("",))[0] or None
            if self._ordered and acted and not notification.is_newer_than(acted):
                continue
            seen = observe(self.client, WatchSpec(self.bucket, key=key))
            self.requests += seen.requests
            with self._lock:
                for info in seen.matches:
                    pending = _pending_key(info)
                    if pending in self._pending:
                        busy.add(key)
                    elif self.watermark.was_announced(key, identity(info)):
                        if (
                            notification.sequencer
                            and notification.is_newer_than(acted)
                            and self.watermark.announced.get(key, ("",))[1:] == identity(info)
                        ):  # the same object, told again: later duplicates cost no request
                            self.watermark.remember(key, notification.sequencer, identity(info))
                    elif not self._before_start(info):
                        new.append(info)
                        self._pending.add(pending)
                        self._sequencers[pending] = notification.sequencer or ""
        return sorted(new, key=lambda info: (info.last_modified, info.key)), busy

    def _before_start(self, info: ObjectInfo) -> bool:
        since = self.watermark.since
        return since is not None and info.last_modified < since - datetime.timedelta(seconds=self.lookback)

    def commit(self, infos: Iterable[ObjectInfo]) -> None:
        """The events for ``infos`` are stored: the watermark moves past them."""
        infos = list(infos)
        with self._lock:
            sequencers = {}
            for info in infos:
                self._pending.discard(pending := _pending_key(info))
                sequencers[info.key] = self._sequencers.pop(pending, "")
            self.watermark.advance(infos, self.lookback, sequencers if self.notified else None)

    def release(self, infos: Iterable[ObjectInfo]) -> None:
        """The events for ``infos`` were not stored: the next poll returns them again."""
        with self._lock:
            for info in infos:
                self._pending.discard(pending := _pending_key(info))
                self._sequencers.pop(pending, None)


def _pending_key(info: ObjectInfo) -> tuple[str, str, str]:
    return (info.key, *identity(info))


def stream_id(*parts: Any) -> str:
    """A short, stable name for one watched stream, to key its saved watermark."""
    digest = hashlib.blake2s(json.dumps(parts, default=str).encode(), digest_size=8).hexdigest()
    return f"s3connect-watermark-{digest}"


def objects_from_events(events: Any) -> list[dict[str, Any]]:
    """The objects a run's ``triggering_asset_events`` announce, each once, oldest first.

    Accepts Airflow's mapping of asset → events (or any iterable of events, or of their
    ``extra`` dicts). An error the watcher reported is raised here as
    :class:`WatcherError`, so the run fails with the store's message instead of
    processing nothing.
    """
    if isinstance(events, Mapping):
        events = [event for group in events.values() for event in group]
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in events:
        extra = event if isinstance(event, Mapping) else getattr(event, "extra", None) or {}
        payload = extra.get("payload", extra)
        if not isinstance(payload, Mapping) or "objects" not in payload:
            continue
        if payload.get("status") == "error":
            raise WatcherError(f"The S3 event watcher failed ({payload.get('type')}): {payload.get('message')}")
        for entry in payload["objects"]:
            found.setdefault((entry["uri"], entry["etag"], entry["last_modified"]), dict(entry))
    return sorted(found.values(), key=lambda entry: (entry["last_modified"], entry["uri"]))
