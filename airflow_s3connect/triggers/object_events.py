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

Like :class:`~airflow_s3connect.triggers.s3object.S3ObjectTrigger`, this module imports
neither boto3 nor the hook: the triggerer imports it on its event loop, and every
listing runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime
import random
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_s3connect._compat import BaseEventTrigger, SharedStreamProducer, TriggerEvent
from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import S3ConnectError
from airflow_s3connect.events import STARTS, ObjectStream, stream_id
from airflow_s3connect.objects import result_entry
from airflow_s3connect.patterns import compile_pattern
from airflow_s3connect.watermark import DEFAULT_LOOKBACK, Watermark

if TYPE_CHECKING:
    from airflow_s3connect.objects import ObjectInfo
    from airflow_s3connect.patterns import KeyPattern
    from airflow_s3connect.scope import Scope

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
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if start not in STARTS:
            raise S3ConnectError(f"start={start!r}: use 'now' (only what arrives from now on) or 'all'.")
        if poll_interval <= 0 or not 0 <= jitter < 1 or lookback < 0:
            raise S3ConnectError(
                f"poll_interval={poll_interval}, jitter={jitter}, lookback={lookback}: "
                "poll_interval must be > 0 s, jitter in [0, 1), lookback >= 0 s."
            )
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
            async for raw, infos in producer.open_stream():
                yield raw
                # Resumed once the events built from ``raw`` were handed to the triggerer.
                await producer.commit(infos)

        async for event in self._filter(polls()):
            yield event

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
    return _Watch(hook.get_conn(), ref.bucket, ref.key, compile_pattern(pattern) if pattern else None, scope)


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


class ObjectProducer(SharedStreamProducer):
    """Lists the stream's prefix every poll; the watermark moves when events are stored.

    :param stores: the asset state stores to read the watermark from and save it to,
        asked afresh each time (watchers join and leave a shared stream).
    """

    def __init__(self, options: dict[str, Any], stores: Callable[[], Sequence[Any]]) -> None:
        self.options = options
        self.stores = stores
        self.state_key = stream_id(*_stream_key(options))
        self.stream: ObjectStream | None = None
        self._saved: dict[str, Any] | None = None
        self._random = random.Random()

    async def open_stream(self) -> AsyncIterator[tuple[dict[str, Any], list[ObjectInfo]]]:
        reported: str | None = None
        watch: _Watch | None = None
        while True:
            try:
                if watch is None or self.stream is None:
                    watch = await asyncio.to_thread(_resolve, self.options)
                    watermark = await self._load()
                    self._saved = watermark.to_json() if watermark else None
                    self.stream = ObjectStream(
                        watch.client,
                        watch.bucket,
                        watch.listing_prefix,
                        start=self.options["start"],
                        lookback=self.options["lookback"],
                        watermark=watermark,
                        start_after=watch.start_after if watch.pattern and watch.pattern.date_order else None,
                    )
                new = await asyncio.to_thread(self.stream.poll)
                reported = None
                if self.stream.watermark.to_json() != self._saved:  # a first start took what exists as seen
                    await self._save()
                if new:
                    objects = [_entry(watch, info) for info in new]
                    yield {"status": "success", "bucket": watch.bucket, "base": watch.base, "objects": objects}, new
            except S3ConnectError as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    yield _error(exc), []
            interval = self.options["poll_interval"]
            jitter = self.options["jitter"]
            await asyncio.sleep(interval * (1 + self._random.uniform(-jitter, jitter)))

    async def advance(self, batch: Sequence[Any]) -> None:
        """Events stored for every watcher: commit; any failure: the next poll retries them."""
        if self.stream is None:  # only errors were announced so far
            return
        for item in batch:
            if item.outcome.is_clean:
                self.stream.commit(item.broker_payload)
            else:
                self.stream.release(item.broker_payload)
        await self._save()

    async def commit(self, infos: list[ObjectInfo]) -> None:
        """Standalone run: the events were handed to the triggerer."""
        if self.stream is not None and infos:
            self.stream.commit(infos)
            await self._save()

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


def _entry(watch: _Watch, info: ObjectInfo) -> dict[str, Any]:
    return result_entry(watch.scope, watch.bucket, info)
