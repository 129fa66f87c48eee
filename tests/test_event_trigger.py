"""S3ObjectEventTrigger: each new or updated object announced once, across restarts.

The watermark arithmetic is tested on plain values; everything else runs against real
servers (moto, Ceph RGW over HTTP and HTTPS): the trigger as the triggerer runs it, the
shared stream through Airflow's own SharedStreamManager, and asset state through a
store with the accessors' interface.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_s3connect.errors import S3ConnectError, WatcherError
from airflow_s3connect.events import ObjectStream, objects_from_events
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.objects import ObjectInfo
from airflow_s3connect.triggers import S3ObjectEventTrigger
from airflow_s3connect.triggers.object_events import _STATE_STORES, ObjectProducer, _accessors
from airflow_s3connect.watermark import Watermark
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer
from tests.support.stores import Store

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def _info(key: str, seconds: float, etag: str = '"e"') -> ObjectInfo:
    return ObjectInfo(key, 1, etag, T0 + datetime.timedelta(seconds=seconds))


class MemoryState:
    """The interface of one asset's state accessor, in memory, counting writes."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values.get(key, default)))

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))
        self.writes += 1


# The watermark, on plain values.


def test_a_late_visible_object_inside_the_lookback_is_new_once() -> None:
    mark = Watermark()
    mark.advance([_info("b.csv", 600)], lookback=900)
    late = _info("big.parquet", 100)  # a multipart upload that began before b.csv and ended after
    assert mark.is_new(late, 900)
    mark.advance([late], 900)
    assert not mark.is_new(late, 900)
    assert not mark.is_new(_info("ancient.csv", -400), 900)  # before the window: taken as seen


def test_a_replaced_object_is_new_again_and_the_window_is_pruned() -> None:
    mark = Watermark()
    mark.advance([_info("a.csv", 0), _info("b.csv", 10)], 60)
    assert not mark.is_new(_info("a.csv", 0), 60)
    assert mark.is_new(_info("a.csv", 20, etag='"f"'), 60)  # rewritten in place
    mark.advance([_info("c.csv", 100)], 60)
    assert sorted(mark.seen) == ["c.csv"]  # a and b fell out of the 60 s window
    assert Watermark.from_json(json.loads(json.dumps(mark.to_json()))) == mark
    assert Watermark.from_json({"version": 99}) is None
    assert Watermark.from_json(None) is None
    # The state of Get's earlier watermark: its newest time, nothing seen (refetch, never lose).
    legacy = Watermark.from_json({"time": "2025-04-14T00:10:00+00:00", "keys": ["a.csv"]})
    assert legacy is not None
    assert legacy.newest == datetime.datetime(2025, 4, 14, 0, 10, tzinfo=datetime.timezone.utc)
    assert legacy.seen == {}


def test_objects_from_events_dedupes_and_raises_reported_errors() -> None:
    entry = {"key": "a.csv", "uri": "s3://b/in/a.csv", "etag": '"e"', "last_modified": T0.isoformat(), "size": 1}
    later = {**entry, "key": "b.csv", "uri": "s3://b/in/b.csv", "last_modified": "2026-01-02T00:00:00+00:00"}
    event = {"from_trigger": True, "payload": {"status": "success", "bucket": "b", "objects": [later, entry]}}
    again = {"from_trigger": True, "payload": {"status": "success", "bucket": "b", "objects": [entry]}}
    assert [o["key"] for o in objects_from_events({"asset": [event, again]})] == ["a.csv", "b.csv"]
    error = {"payload": {"status": "error", "type": "AccessDeniedError", "message": "denied by policy", "objects": []}}
    with pytest.raises(WatcherError, match=r"AccessDeniedError.*denied by policy"):
        objects_from_events([event, error])


def test_bad_options_are_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(S3ConnectError, match="start='later'"):
        S3ObjectEventTrigger(prefix="in/", start="later")
    with pytest.raises(S3ConnectError, match="poll_interval must be > 0"):
        S3ObjectEventTrigger(prefix="in/", poll_interval=0)


def test_the_per_asset_accessors_are_found_in_airflows_accessor_table() -> None:
    """Fails when Airflow renames what :func:`_accessors` reads."""
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import AssetStateStoreAccessor, AssetStateStoreAccessors

    store = AssetStateStoreAccessors(inlets=[Asset("landing", uri="s3://b/landing/"), Asset("other")])
    found = _accessors(store)
    assert len(found) == 2
    assert all(isinstance(accessor, AssetStateStoreAccessor) for accessor in found)
    single = MemoryState()
    assert _accessors(single) == [single]


# Against the servers.


@pytest.fixture
def watched(store: Store, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, str, str]:
    bucket = store.new_bucket("s3c-ev")
    monkeypatch.setenv("AIRFLOW_CONN_EVENTS", json.dumps(store.conn(bucket, path_prefix="tenants/{tenant}")))
    return store, bucket, "events"


def _put(store: Store, bucket: str, key: str, body: bytes = b"x") -> None:
    store.admin.put_object(Bucket=bucket, Key=f"tenants/acme/{key}", Body=body)


async def _take(events: AsyncIterator[Any], count: int, timeout: float = 30) -> list[dict[str, Any]]:
    return [(await asyncio.wait_for(anext(events), timeout)).payload for _ in range(count)]


async def _quiet(events: AsyncIterator[Any], seconds: float) -> None:
    """Nothing more within ``seconds`` (this ends the generator)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(events), seconds)


def _trigger(state: MemoryState | None, **options: Any) -> S3ObjectEventTrigger:
    options = {"s3connect_conn_id": "events", "tenant": "acme", "prefix": "landing/", "poll_interval": 0.2, **options}
    trigger = S3ObjectEventTrigger(**options)
    trigger.asset_state_store = state  # what the triggerer injects on Airflow 3.3
    return trigger


def test_each_new_object_once_across_a_triggerer_restart(watched: tuple[Store, str, str]) -> None:
    store, bucket, _ = watched
    _put(store, bucket, "landing/before.csv")
    state = MemoryState()

    async def first_life() -> list[dict[str, Any]]:
        events = _trigger(state, pattern="*.csv").run()
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.0)  # the baseline poll took before.csv as seen
        _put(store, bucket, "landing/a.csv", b"alpha")
        _put(store, bucket, "landing/b.csv", b"bravo!")
        _put(store, bucket, "landing/skip.txt")  # not the pattern
        payloads = [(await asyncio.wait_for(first, 30)).payload, *await _take(events, 1)]
        await _quiet(events, 1.0)
        return payloads

    payloads = asyncio.run(first_life())
    objects = [p["objects"] for p in payloads]
    assert [[o["key"] for o in batch] for batch in objects] == [["landing/a.csv"], ["landing/b.csv"]]
    assert [o["size"] for batch in objects for o in batch] == [5, 6]
    head = store.admin.head_object(Bucket=bucket, Key="tenants/acme/landing/a.csv")
    assert objects[0][0]["etag"] == head["ETag"]
    assert objects[0][0]["uri"] == f"s3://{bucket}/tenants/acme/landing/a.csv"
    # Listings carry milliseconds on RGW; HEAD's Last-Modified is an HTTP date, whole seconds.
    listed = datetime.datetime.fromisoformat(objects[0][0]["last_modified"])
    assert listed.replace(microsecond=0) == head["LastModified"]
    (saved,) = state.values.values()
    assert set(saved["seen"]) == {f"tenants/acme/landing/{k}" for k in ("before.csv", "a.csv", "b.csv", "skip.txt")}

    async def second_life() -> list[dict[str, Any]]:
        events = _trigger(state, pattern="*.csv").run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.0)  # a, b and before are in the saved watermark: nothing fires
        assert not pending.done()
        _put(store, bucket, "landing/c.csv")
        _put(store, bucket, "landing/a.csv", b"alpha, updated")  # replaced in place: updated
        payloads = [(await asyncio.wait_for(pending, 30)).payload, *await _take(events, 1)]
        await _quiet(events, 1.0)
        return payloads

    again = sorted(o["key"] for p in asyncio.run(second_life()) for o in p["objects"])
    assert again == ["landing/a.csv", "landing/c.csv"]


def test_start_all_and_batch_announce_what_exists_in_one_event(watched: tuple[Store, str, str]) -> None:
    store, bucket, _ = watched
    for name in ("x1.json", "x2.json", "x3.json"):
        _put(store, bucket, f"landing/{name}")

    async def run() -> list[dict[str, Any]]:
        events = _trigger(None, start="all", batch=True).run()
        payloads = await _take(events, 1)
        await _quiet(events, 1.0)
        return payloads

    (payload,) = asyncio.run(run())
    assert payload["status"] == "success"
    assert payload["bucket"] == bucket
    assert [o["key"] for o in payload["objects"]] == ["landing/x1.json", "landing/x2.json", "landing/x3.json"]


def test_an_idle_poll_is_one_request(watched: tuple[Store, str, str]) -> None:
    store, bucket, conn_id = watched
    for index in range(5):
        _put(store, bucket, f"landing/{index}.csv")
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    hook.pin_path_prefix("tenants/acme/")
    stream = ObjectStream(hook.get_conn(), bucket, "tenants/acme/landing/", start="now")
    assert stream.poll() == []  # the baseline
    for _ in range(3):
        before = stream.requests
        assert stream.poll() == []
        assert stream.requests - before == 1
    _put(store, bucket, "landing/new.csv")
    (new,) = stream.poll()
    assert new.key == "tenants/acme/landing/new.csv"
    assert stream.poll() == []  # pending until committed, not announced twice
    stream.release([new])
    assert [i.key for i in stream.poll()] == [new.key]  # not stored: offered again
    stream.commit([new])
    assert stream.poll() == []


def test_a_dated_pattern_lists_only_recent_dates(watched: tuple[Store, str, str]) -> None:
    """StartAfter skips the dates before the lookback: an upload into an old date folder
    after the baseline is not listed, one into today's folder is."""
    store, bucket, _ = watched
    today = datetime.datetime.now(datetime.timezone.utc)
    _put(store, bucket, f"landing/{today:%Y/%m/%d}/first.csv")
    _put(store, bucket, "landing/2020/01/01/old.csv")
    state = MemoryState()

    async def run() -> list[dict[str, Any]]:
        events = _trigger(state, pattern="{YYYY}/{MM}/{DD}/*.csv").run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.0)  # the baseline: first.csv is the newest, old.csv is listed once
        _put(store, bucket, "landing/2020/01/01/late.csv")  # new, but under a date far before the lookback
        _put(store, bucket, f"landing/{today:%Y/%m/%d}/second.csv")
        payloads = [(await asyncio.wait_for(pending, 30)).payload]
        await _quiet(events, 1.0)
        return payloads

    (payload,) = asyncio.run(run())
    assert [o["key"] for o in payload["objects"]] == [f"landing/{today:%Y/%m/%d}/second.csv"]
    (saved,) = state.values.values()
    assert "tenants/acme/landing/2020/01/01/late.csv" not in saved["seen"]


def test_errors_are_events_once_per_distinct_error_and_polling_goes_on(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = store.new_bucket("s3c-ev")
    missing = f"{bucket}-gone"
    monkeypatch.setenv("AIRFLOW_CONN_EVENTS", json.dumps(store.conn(missing)))
    monkeypatch.setenv("AIRFLOW_CONN_DATED", json.dumps(store.conn(bucket, path_prefix="in/{date}")))

    async def run(conn_id: str) -> list[dict[str, Any]]:
        events = _trigger(None, s3connect_conn_id=conn_id, poll_interval=0.1).run()
        payloads = await _take(events, 1)
        await _quiet(events, 1.0)  # the same error, polled again, is not announced again
        return payloads

    (gone,) = asyncio.run(run("events"))
    assert gone["status"] == "error"
    assert gone["type"] == "NoSuchBucketError"
    assert missing in gone["message"]
    (dated,) = asyncio.run(run("dated"))
    assert dated["type"] == "MacroError"
    assert "path_prefix 'in/{date}' of connection 'dated'" in dated["message"]
    assert "runs outside any DAG run" in dated["message"]
    with pytest.raises(WatcherError, match="NoSuchBucketError"):
        objects_from_events([{"payload": gone}])


def test_watchers_of_one_prefix_share_one_poll_and_save_after_the_events_are_stored(
    watched: tuple[Store, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's SharedStreamManager in ack mode, driven as the triggerer drives it."""
    from airflow.triggers.shared_stream import SharedStreamManager

    store, bucket, _ = watched
    states = MemoryState(), MemoryState()
    csv, jsn = _trigger(states[0], pattern="*.csv"), _trigger(states[1], pattern="*.json")
    assert csv.shared_stream_key() == jsn.shared_stream_key()  # literal prefixes are both ""
    polls: list[int] = []  # which stream each poll was made by
    original = ObjectStream.poll

    def counted(self: ObjectStream) -> list[ObjectInfo]:
        polls.append(id(self))
        return original(self)

    monkeypatch.setattr(ObjectStream, "poll", counted)

    async def run() -> dict[str, list[str]]:
        manager = SharedStreamManager(ack_timeout=30)
        tasks, seen, seqs = subscribe(manager, {"csv": csv, "json": jsn})
        await asyncio.sleep(1.0)
        baseline = [dict(s.values) for s in states]
        _put(store, bucket, "landing/a.csv")
        _put(store, bucket, "landing/a.json")
        await until(lambda: len(seqs) == 2)
        await asyncio.sleep(0.6)  # more polls: the events are not confirmed stored yet
        assert [dict(s.values) for s in states] == baseline
        manager.confirm_persisted(list(seqs))
        await until(lambda: all(len(next(iter(s.values.values()))["seen"]) == 2 for s in states))
        for task in tasks:
            task.cancel()
        await manager.stop_all()
        return seen

    seen = asyncio.run(run())
    assert seen == {"csv": ["landing/a.csv"], "json": ["landing/a.json"]}
    assert len(polls) >= 5
    assert len(set(polls)) == 1  # one listing per poll for both watchers
    assert _STATE_STORES == {}  # the watchers left


def subscribe(
    manager: Any, triggers: dict[str, S3ObjectEventTrigger]
) -> tuple[list[asyncio.Future[None]], dict[str, list[str]], list[int]]:
    """Watchers subscribed to ``manager`` as the triggerer subscribes them: their consuming
    tasks, the keys each announced, and the sequence numbers of the events still to confirm."""
    seen: dict[str, list[str]] = {name: [] for name in triggers}
    seqs: list[int] = []

    async def consume(trigger_id: int, trigger: S3ObjectEventTrigger, name: str) -> None:
        key = trigger.shared_stream_key()
        shared = manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=key)
        async for event in trigger.filter_shared_stream(shared):
            seq = manager.bind_pending_event(trigger_id=trigger_id, key=key)
            assert seq is not None
            seqs.append(seq)
            seen[name] += [o["key"] for o in event.payload["objects"]]

    tasks = [asyncio.ensure_future(consume(i, t, name)) for i, (name, t) in enumerate(triggers.items(), 1)]
    return tasks, seen, seqs


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), timeout)


def test_the_trigger_serializes_no_secret_and_round_trips() -> None:
    trigger = S3ObjectEventTrigger(prefix="landing/", pattern="{YYYY}/{MM}/*.csv", batch=True, start="all")
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_s3connect.triggers.object_events.S3ObjectEventTrigger"
    assert S3ObjectEventTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert set(kwargs) == set(ObjectProducer(kwargs, list).options)


def test_assumed_role_credentials_refresh_across_sessions(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    """A watcher lives for days, across many one-hour sessions: 50 minutes on (inside the
    refresh margin) its listings carry a new session. Only the client's clock can move
    (moto's STS keeps its own), so one session boundary is what can be crossed here."""
    import time_machine

    conn_id = make_conn("watch_role", "AKIABASE", "base-secret-do-not-log", region_name=REGION,
                        endpoint_url=moto.url, sts_endpoint_url=moto.url, bucket=BUCKET,
                        auth_type="assume_role", role_arn="arn:aws:iam::210987654321:role/partner-reader")  # fmt: skip
    trigger = S3ObjectEventTrigger(s3connect_conn_id=conn_id, prefix="days/", poll_interval=0.2)
    assert "secret" not in json.dumps(trigger.serialize())
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=50)

    async def watch() -> dict[str, Any]:
        events = trigger.run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.0)  # baseline and a few polls in the first session
        with time_machine.travel(later, tick=True):
            await asyncio.sleep(1.0)
            moto.admin_client("s3").put_object(Bucket=BUCKET, Key="days/late.csv", Body=b"x")
            event = await asyncio.wait_for(pending, 30)
        await events.aclose()
        return dict(event.payload)

    with moto.recording() as rec:
        payload = asyncio.run(watch())
    assert [o["key"] for o in payload["objects"]] == ["days/late.csv"]
    tokens = [r.headers["X-Amz-Security-Token"] for r in rec.s3() if "list-type" in r.query]
    assert len(rec.sts("AssumeRole")) >= 2
    assert tokens[0] != tokens[-1]
