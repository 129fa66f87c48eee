"""S3ObjectEventTrigger: start a DAG run when objects arrive, with no task waiting for them.

Used in an asset's watchers (``Asset(..., watchers=[AssetWatcher(name, trigger)])``): the
triggerer polls, and every event it emits becomes an asset event that schedules the
DAGs consuming that asset. Nothing holds a worker or a task slot between files.

Exactly once, as far as the Airflow line allows:

* Airflow 3.3 and later: the watermark (:class:`~airflow_s3connect.watermark.Watermark`)
  lives in the watched asset's state, and it moves only after the triggerer confirmed
  that the asset events were stored (a shared stream in ack mode). A triggerer restart,
  a redeploy or a second triggerer reads it back: nothing fires twice, nothing is
  skipped. The one window left is a crash between "events stored" and "watermark saved"
  (about a second); what was in it fires again, never is lost. Watchers of the same
  listing (connection, bucket, prefix and the pattern's literal part) share one poll.
* Airflow 3.0 to 3.2: no asset state and no shared streams. The watermark lives in the
  triggerer's memory; after a restart ``start`` decides again ("now": what arrived
  while it was down is not announced; "all": everything is announced again).

With ``queue_url``, S3 event notifications delivered to an SQS queue (directly, through
SNS or through EventBridge) replace the polling: an object is announced as soon as its
notification arrives, and an idle queue costs one long poll per ``poll_interval`` (at
most 20 s). Each notification is confirmed by a one-key listing and deduplicated against
the same watermark, so a notification delivered twice, late or out of order starts no
second run; its message is deleted only after the events are stored. Every
``reconcile_interval`` one listing of the prefix catches what no notification announced
(a misconfigured filter, a purged queue, a consumer down past the retention period).

Like :class:`~airflow_s3connect.triggers.s3object.S3ObjectTrigger`, this module imports
neither boto3 nor the hook: the triggerer imports it on its event loop, and every
listing runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_s3connect._compat import BaseEventTrigger, SharedStreamProducer, TriggerEvent
from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import S3ConnectError
from airflow_s3connect.events import STARTS, ObjectStream, stream_id
from airflow_s3connect.notifications import Notification, parse_message, queue_address
from airflow_s3connect.objects import result_entry
from airflow_s3connect.patterns import compile_pattern
from airflow_s3connect.watermark import DEFAULT_LOOKBACK, Watermark

if TYPE_CHECKING:
    from airflow_s3connect.objects import ObjectInfo
    from airflow_s3connect.patterns import KeyPattern
    from airflow_s3connect.queues import NotificationQueue
    from airflow_s3connect.scope import Scope

log = logging.getLogger(__name__)

#: Seconds a reconciling listing leaves a new object to its notification (which S3 sends
#: within seconds): only older objects count as "found by reconcile".
SETTLE = 60.0
#: The default reconcile_interval (seconds); 0 turns reconciling off.
DEFAULT_RECONCILE = 900.0

#: Queue URL → the producer reading it in this process: a second one (another prefix or
#: connection, or a second watcher where Airflow shares no streams) would delete the first
#: one's messages, and is refused with an error event.
_QUEUE_READERS: dict[str, int] = {}

#: Stream key → the asset state stores of the watchers subscribed to it (id → store).
#: The triggerer builds a stream's producer from one watcher's kwargs only; this is how
#: the producer finds where to keep the watermark.
_STATE_STORES: dict[Hashable, dict[int, Any]] = {}


class S3ObjectEventTrigger(BaseEventTrigger):
    """Emit an event for each new or updated object under a prefix (or one per poll).

    :param prefix: where to watch, relative to the connection's path_prefix.
    :param pattern: glob / date-mask pattern relative to ``prefix``; its literal part
        narrows the listing.
    :param bucket: for connections without a bucket.
    :param s3connect_conn_id: the ``s3connect`` connection (needs s3:ListBucket only).
    :param tenant: / ``tap`` / ``stream_name``: macro values for path_prefix, prefix and
        pattern. Macros that need a run (``{date}``, ``{connection_run_id}``…) are refused:
        a watcher runs outside any run; use date masks in ``pattern`` instead.
    :param batch: one event per poll with every new object, instead of one per object.
    :param start: on the very first start, ``"now"`` announces only what arrives from
        then on; ``"all"`` also announces what is already there.
    :param poll_interval: seconds between listings; each is one request per 1,000 keys.
    :param jitter: a fraction of ``poll_interval`` by which each wait varies, so many
        watchers do not list in step.
    :param lookback: seconds before the newest object in which a late-visible object
        (a long multipart upload keeps the time it began) is still found. Make it
        longer than the longest upload into the prefix.
    :param queue_url: an SQS queue receiving the bucket's ``s3:ObjectCreated:*``
        notifications (directly, through SNS or through EventBridge): objects are
        announced when their notification arrives instead of by listing every poll;
        ``poll_interval`` is then the long poll's wait (1 to 20 s). Give each watched
        prefix its own queue: the watcher deletes every message it has read.
    :param reconcile_interval: with ``queue_url``, seconds between listings that catch
        objects whose notification never came (they are announced once, like the others,
        and logged); 0 never lists after the first start.

    Every event has one shape, ``{"status", "bucket", "objects": [...]}``; each object is
    ``{key, uri, size, etag, last_modified, storage_class}`` with ``key`` relative to the
    connection's path_prefix. If listing fails (denied, no such bucket, unreachable
    after retries), one event with ``status="error"``, ``type`` and ``message`` is
    emitted per distinct error and polling goes on:
    :func:`~airflow_s3connect.events.objects_from_events` raises it in the run it starts.
    """

    #: The watched asset's state, injected by the triggerer of Airflow 3.3+; older lines
    #: have none (and do not set the attribute), so the watermark stays in memory there.
    asset_state_store: Any = None

    def __init__(
        self,
        *,
        prefix: str = "",
        pattern: str | None = None,
        bucket: str | None = None,
        s3connect_conn_id: str = DEFAULT_CONN_ID,
        tenant: str | None = None,
        tap: str | None = None,
        stream_name: str | None = None,
        batch: bool = False,
        start: str = "now",
        poll_interval: float = 60.0,
        jitter: float = 0.1,
        lookback: float = DEFAULT_LOOKBACK,
        queue_url: str | None = None,
        reconcile_interval: float = DEFAULT_RECONCILE,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if start not in STARTS:
            raise S3ConnectError(f"start={start!r}: use 'now' (only what arrives from now on) or 'all'.")
        if poll_interval <= 0 or not 0 <= jitter < 1 or lookback < 0 or reconcile_interval < 0:
            raise S3ConnectError(
                f"poll_interval={poll_interval}, jitter={jitter}, lookback={lookback}, "
                f"reconcile_interval={reconcile_interval}: poll_interval must be > 0 s, jitter in [0, 1), "
                "lookback and reconcile_interval >= 0 s."
            )
        if queue_url is not None:
            try:
                queue_address(queue_url)
            except ValueError as exc:
                raise S3ConnectError(str(exc)) from None
        self.options = {
            "prefix": prefix,
            "pattern": pattern,
            "bucket": bucket,
            "s3connect_conn_id": s3connect_conn_id,
            "tenant": tenant,
            "tap": tap,
            "stream_name": stream_name,
            "batch": batch,
            "start": start,
            "poll_interval": poll_interval,
            "jitter": jitter,
            "lookback": lookback,
            "queue_url": queue_url,
            "reconcile_interval": reconcile_interval,
        }

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", dict(self.options)

    # Shared stream (Airflow 3.3+): one producer lists, each watcher filters.

    def shared_stream_key(self) -> Hashable:
        key = _stream_key(self.options)
        _STATE_STORES.setdefault(key, {})[id(self)] = self.asset_state_store
        return key

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> ObjectProducer:
        key = _stream_key(kwargs)
        return ObjectProducer(kwargs, lambda: [s for s in _STATE_STORES.get(key, {}).values() if s is not None])

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        try:
            async for event in self._filter(shared_stream):
                yield event
        finally:
            key = _stream_key(self.options)
            stores = _STATE_STORES.get(key, {})
            stores.pop(id(self), None)
            if not stores:
                _STATE_STORES.pop(key, None)

    # Standalone (Airflow 3.0 to 3.2, or a trigger run outside the triggerer).

    async def run(self) -> AsyncIterator[TriggerEvent]:
        store = self.asset_state_store
        producer = ObjectProducer(self.options, lambda: [store] if store is not None else [])

        async def polls() -> AsyncIterator[dict[str, Any]]:
            async for raw, delivery in producer.open_stream():
                yield raw
                # Resumed once the events built from ``raw`` were handed to the triggerer.
                await producer.commit(delivery)

        try:
            async for event in self._filter(polls()):
                yield event
        finally:
            await producer.aclose()

    async def _filter(self, raws: AsyncIterator[dict[str, Any]]) -> AsyncIterator[TriggerEvent]:
        """This watcher's events from the stream's polls: its own pattern, one or a batch.

        Each event is yielded before the next poll is pulled: that is how the triggerer
        knows which poll an event came from, and so when the watermark may move.
        """
        pattern: KeyPattern | None = None
        resolved = False
        async for raw in raws:
            if raw["status"] == "error":
                yield _event(raw)
                continue
            if not resolved:
                try:
                    pattern = (await asyncio.to_thread(_resolve, self.options)).pattern
                    resolved = True
                except S3ConnectError as exc:
                    yield _event(_error(exc))
                    continue
            base = f"s3://{raw['bucket']}/{raw['base']}"
            objects = [o for o in raw["objects"] if pattern is None or pattern.matches(o["uri"][len(base) :])]
            if objects and self.options["batch"]:
                yield _event({"status": "success", "bucket": raw["bucket"], "objects": objects})
            elif objects:
                for found in objects:
                    yield _event({"status": "success", "bucket": raw["bucket"], "objects": [found]})


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]


def _error(exc: S3ConnectError) -> dict[str, Any]:
    return {"status": "error", "type": type(exc).__name__, "message": str(exc), "objects": []}


def _stream_key(options: dict[str, Any]) -> tuple[Any, ...]:
    """What the producer's listing depends on; watchers that agree on it share one poll."""
    pattern = compile_pattern(options["pattern"]) if options.get("pattern") else None
    listed = (pattern.prefix, pattern.date_order) if pattern is not None else ("", None)
    names = ("s3connect_conn_id", "bucket", "prefix", "tenant", "tap", "stream_name")
    if options.get("queue_url"):
        # Every watcher of one queue and prefix shares the stream, whatever its pattern or
        # timing (the first one's timing applies): the stream deletes every message it reads.
        return ("airflow_s3connect", *(options.get(n) for n in names), "queue", options["queue_url"])
    timing = ("start", "poll_interval", "jitter", "lookback")
    return ("airflow_s3connect", *(options.get(n) for n in names), *listed, *(options.get(n) for n in timing))


@dataclass
class _Watch:
    """A watcher's options resolved through its connection (in a worker thread)."""

    client: Any
    bucket: str
    base: str
    pattern: KeyPattern | None
    scope: Scope
    queue: NotificationQueue | None = None

    @property
    def listing_prefix(self) -> str:
        return self.base + (self.pattern.prefix if self.pattern is not None else "")

    def start_after(self, moment: datetime.datetime) -> str:
        assert self.pattern is not None
        return self.base + (self.pattern.start_after(moment) or "")


def _resolve(options: dict[str, Any]) -> _Watch:
    from airflow_s3connect.errors import MacroError
    from airflow_s3connect.hooks.s3connect import S3ConnectHook
    from airflow_s3connect.macros import MacroValues, render
    from airflow_s3connect.patterns import compile_pattern, escape_literal

    hook = S3ConnectHook(s3connect_conn_id=options["s3connect_conn_id"])
    overrides = {n: options[n] for n in ("tenant", "tap", "stream_name") if options.get(n)}
    values = MacroValues({}, overrides, hook.macro_fallbacks())
    what = f"path_prefix {hook.settings.path_prefix!r} of connection {hook.s3connect_conn_id!r}"
    try:
        hook.render_path_prefix(values)
        what = f"prefix {options['prefix']!r}"
        prefix = render(options["prefix"] or "", values)
        pattern = options["pattern"]
        if pattern:
            what = f"pattern {pattern!r}"
            pattern = render(pattern, values, keep_unknown=True, escape=escape_literal)
    except MacroError as exc:
        raise MacroError(
            f"The event watcher cannot render the {what}: {exc} A watcher runs outside any DAG run: "
            "only the connection's fields and tenant/tap/stream_name give macro values; "
            "match dates with masks in pattern ({YYYY}/{MM}/{DD})."
        ) from None
    scope = hook.scope_settings.scope
    ref = scope.resolve_prefix(prefix, options["bucket"])
    queue = None
    if options.get("queue_url"):
        queue = hook.notification_queue(options["queue_url"], wait_seconds=options["poll_interval"])
    return _Watch(hook.get_conn(), ref.bucket, ref.key, compile_pattern(pattern) if pattern else None, scope, queue)


def _accessors(store: Any) -> list[Any]:
    """One accessor per watched asset.

    The triggerer hands a watcher ``AssetStateStoreAccessors`` for every asset it
    watches, but its public ``aget``/``aset`` work only when there is exactly one. The
    per-asset accessors are read from its two private tables here, and only here (a
    test fails if Airflow renames them); anything else (one accessor) is used as is.
    """
    tables = [getattr(store, name, None) for name in ("_by_name", "_by_uri")]
    if all(table is None for table in tables):
        return [store]
    return [accessor for table in tables if table for accessor in table.values()]


@dataclass
class Delivery:
    """What the events of one poll came from: the objects, and the queue messages to
    delete once those events are stored (none when a listing found them)."""

    infos: list[ObjectInfo]
    receipts: list[str] = field(default_factory=list)


class ObjectProducer(SharedStreamProducer):
    """Lists the stream's prefix every poll, or reads its notification queue; the watermark
    moves, and read messages are deleted, when the events are stored.

    :param stores: the asset state stores to read the watermark from and save it to,
        asked afresh each time (watchers join and leave a shared stream).
    """

    def __init__(self, options: dict[str, Any], stores: Callable[[], Sequence[Any]]) -> None:
        self.options = options
        self.stores = stores
        self.state_key = stream_id(*_stream_key(options))
        self.stream: ObjectStream | None = None
        self.queue: NotificationQueue | None = None
        self._saved: dict[str, Any] | None = None
        self._unreported: S3ConnectError | None = None
        self._random = random.Random()
        #: the wall clock objects' ages are measured with; a test moves it
        self.clock: Callable[[], float] = time.time

    async def open_stream(self) -> AsyncIterator[tuple[dict[str, Any], Delivery]]:
        # An error is announced once, and again only after objects were announced since
        # (an idle poll between two failures is no recovery).
        reported: str | None = None
        watch: _Watch | None = None
        listing_due = 0.0  # monotonic time of the next listing (with a queue: of the next reconcile)
        restarted = False
        while True:
            failed = False
            try:
                if self._unreported is not None:
                    failure, self._unreported = self._unreported, None
                    raise failure
                if watch is None or self.stream is None:
                    watch = await asyncio.to_thread(_resolve, self.options)
                    if watch.queue is not None:  # missing or denied: an error now, and again until fixed
                        self._claim(watch)
                        await asyncio.to_thread(watch.queue.check)
                    watermark = await self._load()
                    self._saved = watermark.to_json() if watermark else None
                    self.stream = self._stream(watch, watermark)
                    self.queue = watch.queue
                    restarted = watermark is not None
                if self.queue is None or time.monotonic() >= listing_due:
                    async for item in self._list(watch, restarted):
                        reported = None
                        yield item
                    restarted = False
                    listing_due = time.monotonic() + (self._reconcile_interval if self.queue else 0)
                if self.queue is not None:
                    async for item in self._receive(watch):
                        reported = None
                        yield item
            except S3ConnectError as exc:
                failed = True
                if str(exc) != reported:
                    reported = str(exc)
                    yield _error(exc), Delivery([])
            if self.queue is None or failed:
                interval = self.options["poll_interval"]
                jitter = self.options["jitter"]
                await asyncio.sleep(interval * (1 + self._random.uniform(-jitter, jitter)))

    def _claim(self, watch: _Watch) -> None:
        url = self.options["queue_url"]
        if _QUEUE_READERS.setdefault(url, id(self)) != id(self):
            raise S3ConnectError(
                f"The SQS queue {url} is read by another watcher of this triggerer: s3://{watch.bucket}/{watch.base} "
                "needs a queue of its own, since a watcher deletes every message it reads. Give each watched "
                "prefix its own queue (and bucket notification); on Airflow 3.3, watchers of one prefix and "
                "queue share it."
            )

    async def aclose(self) -> None:
        if _QUEUE_READERS.get(self.options.get("queue_url") or "") == id(self):
            del _QUEUE_READERS[self.options["queue_url"]]

    @property
    def _reconcile_interval(self) -> float:
        interval = float(self.options.get("reconcile_interval") or 0)
        return interval if interval > 0 else math.inf

    def _stream(self, watch: _Watch, watermark: Watermark | None) -> ObjectStream:
        """With a queue, the stream lists the whole prefix (the watchers sharing it have their
        own patterns), and what it announced stays seen for the lookback plus a reconcile
        interval: a reconcile finds what no notification announced since the one before."""
        lookback = float(self.options["lookback"])
        if watch.queue is None:
            dated = watch.pattern is not None and watch.pattern.date_order
            return ObjectStream(watch.client, watch.bucket, watch.listing_prefix, start=self.options["start"],
                                lookback=lookback, watermark=watermark,
                                start_after=watch.start_after if dated else None)  # fmt: skip
        if math.isfinite(self._reconcile_interval):
            lookback += self._reconcile_interval + 2 * SETTLE
        return ObjectStream(watch.client, watch.bucket, watch.base, start=self.options["start"], lookback=lookback,
                            watermark=watermark, notified=True)  # fmt: skip

    async def _list(self, watch: _Watch, restarted: bool) -> AsyncIterator[tuple[dict[str, Any], Delivery]]:
        """One listing: every poll without a queue; with one, the first start (or restart)
        and each reconcile. At a restart, what arrived while no watcher ran is listed before
        the queue is read (whose messages then find it announced): a queue purged or held
        past its retention meanwhile loses nothing."""
        assert self.stream is not None
        first = self.stream.first_start
        new = await asyncio.to_thread(self.stream.poll)
        if self.queue is not None and restarted and new:
            log.info("%d objects found by the listing at the watcher's start, under s3://%s/%s", len(new),
                     watch.bucket, watch.base)  # fmt: skip
        elif self.queue is not None and not first:
            # Objects a notification may still be on its way for are left to it (or to the
            # next reconcile): what remains is what no notification announced.
            settled = self.clock() - SETTLE
            recent = [info for info in new if info.last_modified.timestamp() > settled]
            self.stream.release(recent)
            new = [info for info in new if info not in recent]
            if new:
                log.warning(
                    "%d objects found by reconcile under s3://%s/%s: their notifications never reached %s. "
                    "Check the bucket's notification configuration (events s3:ObjectCreated:*, the prefix "
                    "filter) and the queue's policy.",
                    len(new),
                    watch.bucket,
                    watch.base,
                    self.options["queue_url"],
                )
        if self.stream.watermark.to_json() != self._saved:  # a first start took what exists as seen
            await self._save()
        if new:
            yield _payload(watch, new), Delivery(new)

    async def _receive(self, watch: _Watch) -> AsyncIterator[tuple[dict[str, Any], Delivery]]:
        """One long poll of the queue: the new objects its notifications name, confirmed."""
        assert self.stream is not None
        assert self.queue is not None
        messages = await asyncio.to_thread(self.queue.receive)
        if not messages:
            return
        told = [(m.receipt, _relevant(watch, parse_message(m.body), self.options["queue_url"])) for m in messages]
        notified = [notification for _, found in told for notification in found]
        new, busy = await asyncio.to_thread(self.stream.confirm, notified) if notified else ([], set())
        # A message naming an object whose events are not stored yet waits: SQS delivers it
        # again after its visibility timeout, and by then the object is seen or released.
        receipts = [receipt for receipt, found in told if not any(n.key in busy for n in found)]
        if new:
            yield _payload(watch, new), Delivery(new, receipts)
        elif receipts:  # duplicates, other events, other prefixes: nothing to store first
            await asyncio.to_thread(self.queue.delete, receipts)

    async def advance(self, batch: Sequence[Any]) -> None:
        """Events stored for every watcher: commit and delete their messages; any failure:
        the next poll (or the message, redelivered) brings them again."""
        if self.stream is None:  # only errors were announced so far
            return
        stored: list[str] = []
        for item in batch:
            if item.outcome.is_clean:
                self.stream.commit(item.broker_payload.infos)
                stored += item.broker_payload.receipts
            else:
                self.stream.release(item.broker_payload.infos)
        await self._save()
        await self._delete(stored)

    async def commit(self, delivery: Delivery) -> None:
        """Standalone run: the events were handed to the triggerer."""
        if self.stream is not None and delivery.infos:
            self.stream.commit(delivery.infos)
            await self._save()
        await self._delete(delivery.receipts)

    async def _delete(self, receipts: list[str]) -> None:
        """A failure here is reported by the stream's next turn (an error event): the events
        are stored already, and the messages come back and are recognised as duplicates."""
        if receipts and self.queue is not None:
            try:
                await asyncio.to_thread(self.queue.delete, receipts)
            except S3ConnectError as exc:
                self._unreported = exc

    async def _load(self) -> Watermark | None:
        for store in self.stores():
            for accessor in _accessors(store):
                if (found := Watermark.from_json(await accessor.aget(self.state_key))) is not None:
                    return found
        return None

    async def _save(self) -> None:
        assert self.stream is not None
        state = self.stream.watermark.to_json()
        for store in self.stores():
            for accessor in _accessors(store):
                await accessor.aset(self.state_key, state)
        self._saved = state


def _payload(watch: _Watch, infos: list[ObjectInfo]) -> dict[str, Any]:
    objects = [_entry(watch, info) for info in infos]
    return {"status": "success", "bucket": watch.bucket, "base": watch.base, "objects": objects}


def _relevant(watch: _Watch, parsed: Any, queue_url: str) -> list[Notification]:
    """The notifications of objects this stream watches. One of a key outside the
    connection's scope is logged and dropped: a queue is no way around the scope."""
    kept: list[Notification] = []
    scope = watch.scope
    for notification in parsed.created:
        if (scope.bucket is not None and notification.bucket != scope.bucket) or not notification.key.startswith(
            scope.prefix
        ):
            log.warning(
                "Ignored a notification from %s for s3://%s/%s: outside the connection's scope %s.",
                queue_url,
                notification.bucket,
                notification.key,
                watch.scope.describe(),
            )
            continue
        if notification.bucket == watch.bucket and notification.key.startswith(watch.base):
            kept.append(notification)
    if parsed.foreign:
        log.warning("Ignored a message from %s that is no S3 event notification.", queue_url)
    return kept


def _entry(watch: _Watch, info: ObjectInfo) -> dict[str, Any]:
    return result_entry(watch.scope, watch.bucket, info)
