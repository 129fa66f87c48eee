"""S3ObjectEventTrigger with ``queue_url``: S3 notifications from SQS, each object announced once.

On moto's server (S3, SQS and SNS in one process, IAM enforced where a test is about
permissions): the bucket's own notifications (S3 → SQS, S3 → SNS → SQS), and messages
sent by hand where a real store does what moto does not (sequencers, EventBridge's
envelope, duplicates, reordering). Exactly-once is asserted by counting the events per
object; request counts come from moto's recording.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import boto3
import pytest

from airflow_s3connect.errors import S3ConnectError
from airflow_s3connect.iam import OPERATIONS
from airflow_s3connect.notifications import parse_message, queue_address
from airflow_s3connect.triggers import S3ObjectEventTrigger
from airflow_s3connect.triggers.object_events import ObjectProducer
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import IamFactory, MotoServer
from tests.support.stores import Store
from tests.test_event_trigger import MemoryState, subscribe, until

PREFIX = "tenants/acme/"


def _record(key: str, *, etag: str = "e", sequencer: str | None = None, event: str = "ObjectCreated:Put",
            bucket: str = BUCKET) -> dict[str, Any]:  # fmt: skip
    found: dict[str, Any] = {"key": key, "size": 1, "eTag": etag}
    if sequencer:
        found["sequencer"] = sequencer
    return {"eventSource": "aws:s3", "eventName": event, "s3": {"bucket": {"name": bucket}, "object": found}}


def _body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


# The envelopes, on plain values.


def test_the_three_envelopes_and_what_is_not_a_written_object() -> None:
    direct = parse_message(
        _body(_record("in/a+b%2Bc%C3%A9.csv", sequencer="0A"), _record("x", event="ObjectRemoved:Delete"))
    )
    (note,) = direct.created
    assert (note.bucket, note.key, note.etag, note.sequencer) == (BUCKET, "in/a b+cé.csv", '"e"', "0A")
    assert direct.ignored == 1
    sns = parse_message(json.dumps({"Type": "Notification", "Message": _body(_record("in/s.csv"))}))
    assert [n.key for n in sns.created] == ["in/s.csv"]
    bridge = {"source": "aws.s3", "detail-type": "Object Created",
              "detail": {"bucket": {"name": BUCKET}, "reason": "PutObject",
                         "object": {"key": "in/a b:c.csv", "size": 3, "etag": "f", "sequencer": "0B"}}}  # fmt: skip
    (created,) = parse_message(json.dumps(bridge)).created
    assert (created.key, created.etag, created.size, created.event) == (
        "in/a b:c.csv",
        '"f"',
        3,
        "ObjectCreated:PutObject",
    )
    assert parse_message(json.dumps({**bridge, "detail-type": "Object Deleted"})).created == []
    assert parse_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})).ignored == 1
    assert parse_message("not json").foreign
    assert parse_message(json.dumps({"hello": 1})).foreign


def test_sequencers_compare_as_s3_says_and_queue_urls_name_their_endpoint() -> None:
    (later,) = parse_message(_body(_record("k", sequencer="0055AED6DCD90281E6"))).created
    assert later.is_newer_than("0055AED6DCD90281E5")
    assert later.is_newer_than("0055AED6DCD902")  # shorter: padded on the right
    assert not later.is_newer_than("0055AED6DCD90281E6")  # the same notification again
    assert not later.is_newer_than("0055AED6DCD90281E60001")
    assert later.is_newer_than(None)
    aws = queue_address("https://sqs.eu-west-1.amazonaws.com/123456789012/s3-events")
    assert (aws.endpoint, aws.region, aws.arn()) == (
        "https://sqs.eu-west-1.amazonaws.com", "eu-west-1", "arn:aws:sqs:eu-west-1:123456789012:s3-events")  # fmt: skip
    local = queue_address("http://127.0.0.1:5000/123456789012/q")
    assert (local.endpoint, local.region, local.arn("us-east-2")) == (
        "http://127.0.0.1:5000", None, "arn:aws:sqs:us-east-2:123456789012:q")  # fmt: skip
    with pytest.raises(S3ConnectError, match="not an SQS queue URL"):
        S3ObjectEventTrigger(prefix="in/", queue_url="s3-events")


# Against moto.


class Queue:
    """A queue on moto, with what the tests read back: messages waiting and in flight."""

    def __init__(self, moto: MotoServer, name: str, visibility: int = 30, region: str = REGION) -> None:
        # A local queue's URL names no region: it must be the connection's.
        self.sqs = boto3.client("sqs", endpoint_url=moto.url, region_name=region, aws_access_key_id="setup",
                                aws_secret_access_key="setup")  # fmt: skip
        self.url = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility)})["QueueUrl"]
        self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body)

    def counts(self) -> tuple[int, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        found = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)["Attributes"]
        return int(found[names[0]]), int(found[names[1]])

    def notify_from(self, s3: Any, bucket: str = BUCKET) -> None:
        """The bucket sends its ObjectCreated notifications here (S3 → SQS)."""
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": self.arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )


@pytest.fixture
def queue(moto: MotoServer) -> Queue:
    return Queue(moto, "s3connect-events")


@pytest.fixture
def conn(moto: MotoServer, make_conn: Callable[..., str]) -> str:
    return make_conn("notes", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION, bucket=BUCKET,
                     path_prefix=PREFIX, addressing_style="path")  # fmt: skip


def _trigger(conn: str, queue: Queue, state: MemoryState | None = None, **options: Any) -> S3ObjectEventTrigger:
    options = {"s3connect_conn_id": conn, "prefix": "in/", "queue_url": queue.url, "poll_interval": 1, **options}
    trigger = S3ObjectEventTrigger(**options)
    trigger.asset_state_store = state
    return trigger


def _put(moto: MotoServer, key: str, body: bytes = b"x") -> dict[str, Any]:
    return dict(moto.admin_client("s3").put_object(Bucket=BUCKET, Key=PREFIX + key, Body=body))


async def _events(generator: AsyncIterator[Any], quiet: float) -> list[dict[str, Any]]:
    """Every event until none came for ``quiet`` seconds (which ends the generator)."""
    found: list[dict[str, Any]] = []
    while True:
        try:
            found.append((await asyncio.wait_for(anext(generator), quiet)).payload)
        except TimeoutError:
            return found


def _keys(payloads: list[dict[str, Any]]) -> list[str]:
    return [o["key"] for p in payloads for o in p["objects"]]


def _listings(rec: Any) -> list[str]:
    return [r.query.get("prefix", [""])[0] for r in rec.s3() if "list-type" in r.query]


def test_each_notified_object_once_with_one_listing_each_and_messages_deleted(
    moto: MotoServer, conn: str, queue: Queue
) -> None:
    """S3 → SQS as moto's bucket sends it: each object announced once, confirmed by one
    listing of its key; no listing of the prefix after the first start; the queue empty."""
    queue.notify_from(moto.admin_client("s3"))
    _put(moto, "in/before.csv")  # there before the watcher: start="now" does not announce it
    state = MemoryState()

    async def run() -> list[dict[str, Any]]:
        events = _trigger(conn, queue, state).run()
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)
        for name in ("a.csv", "b.csv", "c.csv"):
            _put(moto, f"in/{name}")
        _put(moto, "elsewhere/z.csv")  # in scope, another prefix: not this watcher's
        return [(await asyncio.wait_for(first, 30)).payload, *await _events(events, 3)]

    with moto.recording() as rec:
        payloads = asyncio.run(run())
    assert sorted(_keys(payloads)) == ["in/a.csv", "in/b.csv", "in/c.csv"]
    assert all(p["objects"][0]["uri"].startswith(f"s3://{BUCKET}/{PREFIX}in/") for p in payloads)
    listed = _listings(rec)
    assert listed.count(PREFIX + "in/") == 1  # the first start's baseline, nothing periodic
    # One listing of each notified key; before.csv's notification was waiting in the queue:
    # confirmed as the object the baseline saw, not announced.
    confirmed = sorted(p for p in listed if p != PREFIX + "in/")
    assert confirmed == [PREFIX + f"in/{n}" for n in ("a.csv", "b.csv", "before.csv", "c.csv")]
    assert queue.counts() == (0, 0)  # the test event, the four notifications: all deleted
    (saved,) = state.values.values()
    assert {PREFIX + f"in/{n}" for n in ("a.csv", "b.csv", "c.csv")} <= set(saved["seen"])


@pytest.mark.parametrize("ordered", [True, False], ids=["aws-sequencers", "other-store"])
def test_duplicates_and_reordering_announce_the_current_object_once(
    moto: MotoServer, conn: str, queue: Queue, monkeypatch: pytest.MonkeyPatch, ordered: bool
) -> None:
    """The same message twice, and two versions' notifications in reverse order: one event
    per object, for what the key holds. On Amazon S3 (whose sequencers order a key's
    notifications; moto stands in for it here) a repeated or older sequencer costs no
    request; on other stores every notification is confirmed by a listing."""
    import airflow_s3connect.events

    monkeypatch.setattr(airflow_s3connect.events, "is_aws_endpoint", lambda url: ordered)
    state = MemoryState()
    _put(moto, "in/dup.csv", b"one")
    _put(moto, "in/twice.csv", b"first")
    current = _put(moto, "in/twice.csv", b"second")

    async def run() -> list[dict[str, Any]]:
        events = _trigger(conn, queue, state).run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)  # the baseline took all three as seen: rewrite them after it
        _put(moto, "in/dup.csv", b"one, again")
        latest = _put(moto, "in/twice.csv", b"third")
        dup = _body(_record(PREFIX + "in/dup.csv", sequencer="0A"))
        queue.send(dup)
        queue.send(_body(_record(PREFIX + "in/twice.csv", etag=latest["ETag"].strip('"'), sequencer="0C")))
        queue.send(dup)  # S3 delivered it twice
        queue.send(_body(_record(PREFIX + "in/twice.csv", etag=current["ETag"].strip('"'), sequencer="0B")))
        return [(await asyncio.wait_for(pending, 30)).payload, *await _events(events, 4)]

    with moto.recording() as rec:
        payloads = asyncio.run(run())
    keys = _keys(payloads)
    assert sorted(keys) == ["in/dup.csv", "in/twice.csv"]  # once each
    (twice,) = [o for p in payloads for o in p["objects"] if o["key"] == "in/twice.csv"]
    head = moto.admin_client("s3").head_object(Bucket=BUCKET, Key=PREFIX + "in/twice.csv")
    assert twice["etag"] == head["ETag"]  # the third write, whatever order the notifications came in
    confirmed = [p for p in _listings(rec) if p != PREFIX + "in/"]
    if ordered:
        assert sorted(confirmed) == [PREFIX + "in/dup.csv", PREFIX + "in/twice.csv"]  # later ones: no request
    else:
        assert 2 < len(confirmed) <= 4  # each receive's notifications of a key: one listing
    (saved,) = state.values.values()
    remembered = {key: sequencer for key, sequencer, *_ in saved["announced"]}
    assert remembered == {PREFIX + "in/dup.csv": "0A", PREFIX + "in/twice.csv": "0C"}
    assert queue.counts() == (0, 0)


def test_a_lost_notification_is_found_by_reconcile_once_and_logged(
    moto: MotoServer, conn: str, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """The bucket sends nothing (a notification lost); the reconcile listing announces the
    object once, and says what to check. An object younger than the settling time is left
    to its notification, then taken by the next reconcile."""
    trigger = _trigger(conn, queue, reconcile_interval=0.5)
    offset = {"seconds": 0.0}

    async def run() -> list[dict[str, Any]]:
        producer = ObjectProducer(trigger.options, lambda: [])
        producer.clock = lambda: time.time() + offset["seconds"]
        stream = producer.open_stream()
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(1.5)
        _put(moto, "in/lost.csv")
        await asyncio.sleep(2.5)  # several reconciles: the object is too young for them
        assert not pending.done()
        offset["seconds"] = 120.0
        raw, delivery = await asyncio.wait_for(pending, 30)
        await producer.commit(delivery)
        payloads = [raw]
        with pytest.raises(TimeoutError):  # nothing more: announced once
            await asyncio.wait_for(anext(stream), 2.5)
        await producer.aclose()
        return payloads

    with caplog.at_level(logging.WARNING, logger="airflow_s3connect.triggers.object_events"):
        payloads = asyncio.run(run())
    assert [o["key"] for o in payloads[0]["objects"]] == ["in/lost.csv"]
    found = [r.getMessage() for r in caplog.records if "found by reconcile" in r.getMessage()]
    assert len(found) == 1
    assert found[0].startswith("1 objects found by reconcile under s3://")
    assert "Check the bucket's notification configuration" in found[0]


def test_notifications_outside_the_scope_are_logged_and_never_announced(
    moto: MotoServer, conn: str, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    moto.admin_client("s3").create_bucket(Bucket="s3c-other", CreateBucketConfiguration={"LocationConstraint": REGION})
    moto.admin_client("s3").put_object(Bucket="s3c-other", Key=PREFIX + "in/x.csv", Body=b"x")
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="tenants/other/in/y.csv", Body=b"y")

    async def run() -> list[dict[str, Any]]:
        events = _trigger(conn, queue).run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)
        queue.send(_body(_record(PREFIX + "in/x.csv", bucket="s3c-other")))
        queue.send(_body(_record("tenants/other/in/y.csv")))
        queue.send(json.dumps({"hello": "world"}))
        _put(moto, "in/mine.csv")
        queue.send(_body(_record(PREFIX + "in/mine.csv")))
        return [(await asyncio.wait_for(pending, 30)).payload, *await _events(events, 3)]

    with caplog.at_level(logging.WARNING, logger="airflow_s3connect.triggers.object_events"):
        payloads = asyncio.run(run())
    assert _keys(payloads) == ["in/mine.csv"]
    ignored = [r.getMessage() for r in caplog.records if "outside the connection's scope" in r.getMessage()]
    assert len(ignored) == 2
    assert any("s3://s3c-other/" in m for m in ignored)
    assert any("no S3 event notification" in r.getMessage() for r in caplog.records)
    assert queue.counts() == (0, 0)


def test_a_crash_after_storing_events_redelivers_without_a_second_event(moto: MotoServer, conn: str) -> None:
    """Events stored, watermark saved, then the triggerer dies before deleting the message:
    it comes back after its visibility timeout and starts nothing. A crash *before* the
    events were stored: the message comes back and is announced."""
    queue = Queue(moto, "s3connect-crash", visibility=1)
    queue.notify_from(moto.admin_client("s3"))
    state = MemoryState()
    trigger = _trigger(conn, queue, state)

    async def deliveries(count: int, then: Callable[[ObjectProducer, Any], Any]) -> list[dict[str, Any]]:
        producer = ObjectProducer(trigger.options, lambda: [state])
        stream = producer.open_stream()
        raws = []
        for _ in range(count):
            raw, delivery = await asyncio.wait_for(anext(stream), 30)
            raws.append(raw)
            await then(producer, delivery)
        await stream.aclose()
        await producer.aclose()  # the process ends: the queue is free for the next one
        return raws

    async def stored_then_killed(producer: ObjectProducer, delivery: Any) -> None:
        assert producer.stream is not None
        producer.stream.commit(delivery.infos)
        await producer._save()  # stored and saved; the delete never happens

    async def killed_before_storing(producer: ObjectProducer, delivery: Any) -> None:
        return None

    async def normal(producer: ObjectProducer, delivery: Any) -> None:
        await producer.commit(delivery)

    async def baseline() -> None:
        producer = ObjectProducer(trigger.options, lambda: [state])
        stream = producer.open_stream()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), 2)
        await stream.aclose()
        await producer.aclose()

    asyncio.run(baseline())
    _put(moto, "in/first.csv")
    assert _keys(asyncio.run(deliveries(1, stored_then_killed))) == ["in/first.csv"]
    assert queue.counts()[0] + queue.counts()[1] == 1  # not deleted

    async def after_restart() -> list[Any]:
        producer = ObjectProducer(trigger.options, lambda: [state])
        stream = producer.open_stream()
        found = []
        try:
            while True:
                found.append(await asyncio.wait_for(anext(stream), 4))
        except TimeoutError:
            await producer.aclose()
            return found

    assert asyncio.run(after_restart()) == []  # redelivered, recognised, deleted
    assert queue.counts() == (0, 0)
    _put(moto, "in/second.csv")
    assert _keys(asyncio.run(deliveries(1, killed_before_storing))) == ["in/second.csv"]
    # Announced again: by the listing at the restart, before its redelivered message.
    assert _keys(asyncio.run(deliveries(1, normal))) == ["in/second.csv"]
    assert asyncio.run(after_restart()) == []  # then the message: recognised, deleted
    assert queue.counts() == (0, 0)


def test_a_missing_or_denied_queue_is_a_clear_error_event(
    moto: MotoServer, conn: str, iam: IamFactory, make_conn: Callable[..., str]
) -> None:
    missing = f"{moto.url}/123456789012/no-such-queue"

    async def first(trigger: S3ObjectEventTrigger) -> dict[str, Any]:
        events = trigger.run()
        payload = (await asyncio.wait_for(anext(events), 30)).payload
        await events.aclose()
        return dict(payload)

    async def all_events(trigger: S3ObjectEventTrigger) -> list[dict[str, Any]]:
        return await _events(trigger.run(), 3)

    gone_trigger = S3ObjectEventTrigger(s3connect_conn_id=conn, prefix="in/", queue_url=missing, poll_interval=0.2)
    with moto.recording() as rec:
        (gone,) = asyncio.run(all_events(gone_trigger))  # one event for the same error, however often retried
    assert gone["status"] == "error"
    assert "does not exist" in gone["message"]
    assert "check queue_url" in gone["message"]
    assert len(rec.sqs("GetQueueAttributes")) >= 5  # asked again every poll_interval, until fixed
    assert _listings(rec) == []  # and the watcher does not fall back to listing meanwhile

    sqs = iam.admin_client("sqs")
    url = sqs.create_queue(QueueName="denied")["QueueUrl"]
    reader = iam.user("lister", ["s3:ListBucket"])
    denied_conn = make_conn("denied_sqs", reader.key, reader.secret, endpoint_url=iam.server.url,
                            region_name=REGION, bucket=BUCKET, addressing_style="path")  # fmt: skip
    iam.server.set_auth(enforced=True)
    denied = asyncio.run(first(S3ObjectEventTrigger(s3connect_conn_id=denied_conn, prefix="in/", queue_url=url)))
    assert denied["type"] == "AccessDeniedError"
    assert "sqs:GetQueueAttributes" in denied["message"]
    assert "s3connect policy --operations watch-sqs" in denied["message"]
    assert "secret" not in json.dumps(denied).lower().replace("secret access key", "")


def _route(moto: MotoServer, queue: Queue, envelope: str) -> None:
    """The bucket's ObjectCreated events to the queue, through SNS or through EventBridge."""
    s3 = moto.admin_client("s3")
    if envelope == "sns":
        sns = moto.admin_client("sns")
        topic = sns.create_topic(Name="s3connect-topic")["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue.arn)
        config: dict[str, Any] = {"TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]}
    else:
        events = moto.admin_client("events")
        pattern = {"source": ["aws.s3"], "detail-type": ["Object Created"]}
        events.put_rule(Name="s3connect-created", EventPattern=json.dumps(pattern))
        events.put_targets(Rule="s3connect-created", Targets=[{"Id": "queue", "Arn": queue.arn}])
        config = {"EventBridgeConfiguration": {}}
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=config)


@pytest.mark.parametrize("envelope", ["sns", "eventbridge"])
def test_sns_and_eventbridge_envelopes_from_the_bucket_are_announced(
    moto: MotoServer, conn: str, queue: Queue, envelope: str
) -> None:
    """S3 → SNS → SQS and S3 → EventBridge → SQS, all moto's: the envelopes are opened."""
    _route(moto, queue, envelope)

    async def run() -> list[dict[str, Any]]:
        events = _trigger(conn, queue).run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)
        _put(moto, "in/via a bus.csv")
        return [(await asyncio.wait_for(pending, 30)).payload, *await _events(events, 3)]

    assert _keys(asyncio.run(run())) == ["in/via a bus.csv"]
    assert queue.counts() == (0, 0)


def test_shared_watchers_delete_messages_only_after_the_events_are_stored(
    moto: MotoServer, conn: str, queue: Queue
) -> None:
    """Airflow's SharedStreamManager in ack mode: until the triggerer confirms the asset
    events stored, the message stays in flight (a crash re-delivers it); then it is deleted."""
    from airflow.triggers.shared_stream import SharedStreamManager

    queue.notify_from(moto.admin_client("s3"))
    states = MemoryState(), MemoryState()
    csv, jsn = _trigger(conn, queue, states[0], pattern="*.csv"), _trigger(conn, queue, states[1], pattern="*.json")
    assert csv.shared_stream_key() == jsn.shared_stream_key()

    async def run() -> dict[str, list[str]]:
        manager = SharedStreamManager(ack_timeout=30)
        tasks, seen, seqs = subscribe(manager, {"csv": csv, "json": jsn})
        await asyncio.sleep(2.0)
        _put(moto, "in/a.csv")
        await until(lambda: len(seqs) == 1)
        await asyncio.sleep(1.5)
        assert queue.counts() == (0, 1)  # received, not deleted: the event is not stored yet
        manager.confirm_persisted(list(seqs))
        await until(lambda: queue.counts() == (0, 0))
        _put(moto, "in/b.json")
        await until(lambda: len(seqs) == 2)
        manager.confirm_persisted(list(seqs))
        await until(lambda: queue.counts() == (0, 0))
        for task in tasks:
            task.cancel()
        await manager.stop_all()
        return seen

    assert asyncio.run(run()) == {"csv": ["in/a.csv"], "json": ["in/b.json"]}


@pytest.fixture(autouse=True)
def _no_leftover_watchers() -> Iterator[None]:
    yield
    from airflow_s3connect.triggers.object_events import _QUEUE_READERS, _STATE_STORES

    _STATE_STORES.clear()
    _QUEUE_READERS.clear()


def _policy_user(iam: IamFactory, name: str, document: dict[str, Any]) -> tuple[str, str]:
    admin = iam.server.admin_client("iam")
    admin.create_user(UserName=name)
    admin.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(document))
    key = admin.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


SQS_NEEDS = list(OPERATIONS["watch-sqs"].grants)


@pytest.mark.parametrize("missing", [None, *SQS_NEEDS])
def test_the_watch_sqs_policy_is_exactly_enough(
    iam: IamFactory, make_conn: Callable[..., str], missing: str | None
) -> None:
    """The watcher on ``s3connect policy --operations watch-sqs --queue-url U``, IAM enforced:
    it announces an object and empties the queue; with one action less, the error names it."""
    from airflow_s3connect.iam import least_privilege_policy

    sqs = iam.admin_client("sqs")
    url = sqs.create_queue(QueueName="watched")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    iam.server.admin_client("s3").put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    policy = least_privilege_policy(BUCKET, "in/", ["watch-sqs"], queue_url=url)
    # AWS authorizes DeleteMessageBatch as sqs:DeleteMessage; moto asks for its own name too.
    queue_statement = next(s for s in policy["Statement"] if s["Sid"] == "S3ConnectQueue")
    if missing != "sqs:DeleteMessage":
        queue_statement["Action"] = [*queue_statement["Action"], "sqs:DeleteMessageBatch"]
    if missing is not None:
        for statement in policy["Statement"]:
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            statement["Action"] = [a for a in actions if a != missing] or ["sqs:ListQueueTags"]
    key, secret = _policy_user(iam, "watcher", policy)
    conn_id = make_conn("watch_sqs", key, secret, endpoint_url=iam.server.url, region_name=REGION, bucket=BUCKET,
                        addressing_style="path")  # fmt: skip
    trigger = S3ObjectEventTrigger(s3connect_conn_id=conn_id, prefix="in/", queue_url=url, poll_interval=1)
    writer = iam.admin_client("s3")
    iam.enforce()

    async def run() -> list[dict[str, Any]]:
        events = trigger.run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)
        writer.put_object(Bucket=BUCKET, Key="in/new.csv", Body=b"x")
        return [(await asyncio.wait_for(pending, 30)).payload, *await _events(events, 3)]

    payloads = asyncio.run(run())
    iam.server.set_auth(enforced=False)
    if missing is None:
        assert _keys(payloads) == ["in/new.csv"]
        left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        assert left["Attributes"]["ApproximateNumberOfMessages"] == "0"
    else:
        errors = [p for p in payloads if p["status"] == "error"]
        assert errors, payloads
        assert errors[0]["type"] == "AccessDeniedError"
        assert f"Access denied: {missing} on " in errors[0]["message"]


def test_assumed_role_credentials_read_the_queue_and_refresh(
    moto: MotoServer, make_conn: Callable[..., str], queue: Queue
) -> None:
    """The queue is read with the connection's assumed role, and 50 minutes on (inside the
    refresh margin) with a new session, as its S3 requests are."""
    import datetime

    import time_machine

    queue.notify_from(moto.admin_client("s3"))
    conn_id = make_conn("notes_role", "AKIABASE", "base-secret-do-not-log", region_name=REGION,
                        endpoint_url=moto.url, sts_endpoint_url=moto.url, bucket=BUCKET,
                        auth_type="assume_role", role_arn="arn:aws:iam::123456789012:role/events-reader")  # fmt: skip
    # (moto keeps a queue in the account of the credentials that ask: the role is the queue's account's.)
    trigger = S3ObjectEventTrigger(s3connect_conn_id=conn_id, prefix="in/", queue_url=queue.url, poll_interval=1)
    assert "secret" not in json.dumps(trigger.serialize())
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=50)

    async def watch() -> list[dict[str, Any]]:
        events = trigger.run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(2.5)  # the baseline and long polls in the first session
        with time_machine.travel(later, tick=True):
            await asyncio.sleep(1.5)
            moto.admin_client("s3").put_object(Bucket=BUCKET, Key="in/late.csv", Body=b"x")
            event = await asyncio.wait_for(pending, 30)
        await events.aclose()
        return [dict(event.payload)]

    with moto.recording() as rec:
        payloads = asyncio.run(watch())
    assert _keys(payloads) == ["in/late.csv"], payloads
    tokens = [r.headers.get("X-Amz-Security-Token") for r in rec.sqs("ReceiveMessage")]
    assert None not in tokens
    assert len(rec.sts("AssumeRole")) >= 2
    assert tokens[0] != tokens[-1]


def test_the_queue_watcher_never_blocks_the_event_loop(
    moto: MotoServer, make_conn: Callable[..., str], queue: Queue
) -> None:
    """The triggerer's loop through the queue path: AssumeRole, the first listing, long
    polls, a notification's confirmation and a credential refresh; never held 50 ms."""
    from tests.test_sensor import loop_probe

    queue.notify_from(moto.admin_client("s3"))
    warm_queue = Queue(moto, "s3connect-warm")
    conn_id = make_conn("notes_loop", "AKIABASE", "base-secret", region_name=REGION, endpoint_url=moto.url,
                        sts_endpoint_url=moto.url, bucket=BUCKET, path_prefix=PREFIX, auth_type="assume_role",
                        role_arn="arn:aws:iam::123456789012:role/events-reader")  # fmt: skip
    _put(moto, "warm/w.csv")
    classpath, kwargs = S3ObjectEventTrigger(
        s3connect_conn_id=conn_id, prefix="in/", queue_url=queue.url, poll_interval=1
    ).serialize()
    warm = dict(kwargs, prefix="warm/", start="all", queue_url=warm_queue.url)
    arrival = moto.arrival_after_request(BUCKET, PREFIX + "in/done.csv", b"x", delay=3, seen=PREFIX + "in/")
    with moto.recording() as rec, arrival:
        report = loop_probe(classpath, kwargs, warm)
    assert [o["key"] for o in report["event"]["objects"]] == ["in/done.csv"]
    assert len(rec.sqs("ReceiveMessage")) >= 2
    assert len(rec.sts("AssumeRole")) >= 3  # the warm-up's, this trigger's first credentials, a refresh
    assert report["ticks"] > 500
    assert report["max_gap_ms"] < 50, report


def test_every_store_with_a_queue_beside_it(
    store: Store, moto_plain: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue's URL names its own endpoint: an S3-compatible store (Ceph RGW over HTTP and
    HTTPS, Swift, moto) with notifications in an SQS queue elsewhere. Each notified object
    once, confirmed on the store; a duplicate and an older notification cost no request."""
    bucket = store.new_bucket("s3c-nq")
    monkeypatch.setenv("AIRFLOW_CONN_STORE_NOTES", json.dumps(store.conn(bucket, path_prefix=PREFIX)))
    queue = Queue(moto_plain, f"s3connect-{bucket}", region=store.region)
    trigger = S3ObjectEventTrigger(s3connect_conn_id="store_notes", prefix="in/", queue_url=queue.url,
                                   poll_interval=1)  # fmt: skip

    async def run() -> list[dict[str, Any]]:
        events = trigger.run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)
        for name, sequencer in (("a.csv", "0B"), ("b.csv", "01")):
            store.admin.put_object(Bucket=bucket, Key=f"{PREFIX}in/{name}", Body=name.encode())
            queue.send(_body(_record(f"{PREFIX}in/{name}", bucket=bucket, sequencer=sequencer)))
        queue.send(_body(_record(f"{PREFIX}in/a.csv", bucket=bucket, sequencer="0B")))  # again
        queue.send(_body(_record(f"{PREFIX}in/a.csv", bucket=bucket, sequencer="0A")))  # older
        return [(await asyncio.wait_for(pending, 30)).payload, *await _events(events, 3)]

    payloads = asyncio.run(run())
    assert sorted(_keys(payloads)) == ["in/a.csv", "in/b.csv"], payloads
    assert {o["size"] for p in payloads for o in p["objects"]} == {5}
    assert queue.counts() == (0, 0)


def test_an_idle_queue_is_one_long_poll_per_wait_never_a_busy_loop(moto: MotoServer, conn: str, queue: Queue) -> None:
    """poll_interval is the long poll's wait, at least 1 s: a watcher given 0.2 s asks an idle
    queue about once a second, and lists nothing after its first start."""
    with moto.recording() as rec:
        assert asyncio.run(_events(_trigger(conn, queue, poll_interval=0.2).run(), 4.5)) == []
    receives = rec.sqs("ReceiveMessage")
    assert 3 <= len(receives) <= 6
    assert {json.loads(r.body)["WaitTimeSeconds"] for r in receives} == {1}
    assert len(_listings(rec)) == 1


def test_a_second_reader_of_a_queue_is_refused_not_robbed(moto: MotoServer, conn: str, queue: Queue) -> None:
    """Two watchers of one queue that share no stream (another prefix, or an Airflow line
    without shared streams) would delete each other's messages: the second is an error
    event naming the fix, and the first announces every file."""
    queue.notify_from(moto.admin_client("s3"))

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        first = _trigger(conn, queue, prefix="in/").run()
        second = _trigger(conn, queue, prefix="other/").run()
        got_first = asyncio.ensure_future(_events(first, 4))
        await asyncio.sleep(1.5)
        got_second = asyncio.ensure_future(_events(second, 4))
        await asyncio.sleep(1.0)
        for index in range(4):
            _put(moto, f"in/f{index}.csv")
        return await got_first, await got_second

    firsts, seconds = asyncio.run(run())
    assert sorted(_keys(firsts)) == [f"in/f{i}.csv" for i in range(4)]
    (refused,) = seconds
    assert refused["status"] == "error"
    assert "is read by another watcher of this triggerer" in refused["message"]


# What an independent review found, each kept as a case. ``lookback=1`` stands for the
# default 900 s, so that a backlog "older than the lookback" takes seconds to make.


async def _collect(generator: AsyncIterator[Any], out: list[dict[str, Any]]) -> None:
    async for event in generator:
        out.append(event.payload)


def test_a_backlog_drained_out_of_order_announces_each_object_once(moto: MotoServer, conn: str, queue: Queue) -> None:
    state = MemoryState()
    out: list[dict[str, Any]] = []

    async def run() -> None:
        task = asyncio.ensure_future(_collect(_trigger(conn, queue, state, lookback=1).run(), out))
        await asyncio.sleep(1.5)
        _put(moto, "in/k.csv", b"v1")
        _put(moto, "in/k.csv", b"v2 longer")
        await asyncio.sleep(2.5)
        _put(moto, "in/later.csv")
        for key, sequencer in (("in/later.csv", "0C"), ("in/k.csv", "0A"), ("in/k.csv", "0B")):
            queue.send(_body(_record(PREFIX + key, sequencer=sequencer)))
            await asyncio.sleep(2.5)
        task.cancel()

    asyncio.run(run())
    assert sorted(_keys(out)) == ["in/k.csv", "in/later.csv"]


def test_a_message_naming_a_pending_object_waits_for_its_outcome(moto: MotoServer, conn: str) -> None:
    """Airflow's ack mode goes on reading while events await storage; a redelivered message
    of such an object is kept, so a failed store loses nothing."""
    from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome

    queue = Queue(moto, "s3connect-ack", visibility=1)
    queue.notify_from(moto.admin_client("s3"))
    state = MemoryState()
    trigger = _trigger(conn, queue, state)

    async def run() -> dict[str, Any] | None:
        producer = ObjectProducer(trigger.options, lambda: [state])
        stream = producer.open_stream()
        task = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(1.5)
        _put(moto, "in/a.csv")
        raw, delivery = await asyncio.wait_for(task, 30)
        assert _keys([raw]) == ["in/a.csv"]
        following = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(4)  # the message comes back while the event is not stored
        await producer.advance([AdvanceItem(delivery, AdvanceOutcome(acked=0, failed=1))])
        try:
            again, _ = await asyncio.wait_for(following, 8)
            return dict(again)
        except TimeoutError:
            return None
        finally:
            await producer.aclose()

    again = asyncio.run(run())
    assert again is not None
    assert _keys([again]) == ["in/a.csv"]


def test_a_watcher_down_past_the_queues_retention_loses_nothing(
    moto: MotoServer, conn: str, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_s3connect.triggers import object_events

    monkeypatch.setattr(object_events, "SETTLE", 0.0)
    state = MemoryState()
    out: list[dict[str, Any]] = []
    options = {"lookback": 1, "reconcile_interval": 1.5}

    async def run() -> None:
        task = asyncio.ensure_future(_collect(_trigger(conn, queue, state, **options).run(), out))
        await asyncio.sleep(1.5)
        _put(moto, "in/first.csv")
        queue.send(_body(_record(PREFIX + "in/first.csv")))
        await asyncio.sleep(2)
        task.cancel()  # the watcher goes down
        await asyncio.sleep(0.2)
        _put(moto, "in/expired.csv")  # its message expired from the queue meanwhile
        await asyncio.sleep(2.5)
        _put(moto, "in/kept.csv")
        queue.send(_body(_record(PREFIX + "in/kept.csv")))
        task = asyncio.ensure_future(_collect(_trigger(conn, queue, state, **options).run(), out))
        await asyncio.sleep(6)
        task.cancel()

    asyncio.run(run())
    assert sorted(_keys(out)) == ["in/expired.csv", "in/first.csv", "in/kept.csv"]


def test_a_lasting_failure_is_one_error_event_not_one_per_redelivery(
    moto: MotoServer, conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_s3connect.errors import AccessDeniedError
    from airflow_s3connect.queues import NotificationQueue

    queue = Queue(moto, "s3connect-denied", visibility=2)
    queue.notify_from(moto.admin_client("s3"))
    queue.sqs.purge_queue(QueueUrl=queue.url)  # the bucket's test event

    def denied(self: NotificationQueue, receipts: Any) -> None:
        raise AccessDeniedError("sqs:DeleteMessage", self.arn)

    monkeypatch.setattr(NotificationQueue, "delete", denied)
    out: list[dict[str, Any]] = []

    async def run() -> None:
        task = asyncio.ensure_future(_collect(_trigger(conn, queue, MemoryState()).run(), out))
        await asyncio.sleep(1.5)
        _put(moto, "in/a.csv")
        await asyncio.sleep(10)  # the message comes back every 2 s, and fails to delete each time
        task.cancel()

    asyncio.run(run())
    assert [p["status"] for p in out] == ["success", "error"]
    assert "sqs:DeleteMessage" in out[1]["message"]


def test_start_now_announces_no_backlog_of_objects_there_before(moto: MotoServer, conn: str, queue: Queue) -> None:
    queue.notify_from(moto.admin_client("s3"))
    _put(moto, "in/old.csv")
    time.sleep(1.2)  # older than the lookback (1 s here) before the newest
    _put(moto, "in/recent.csv")
    time.sleep(1.2)

    async def run() -> list[dict[str, Any]]:
        return await _events(_trigger(conn, queue, MemoryState(), start="now", lookback=1).run(), 5)

    assert _keys(asyncio.run(run())) == []
    assert queue.counts() == (0, 0)


def test_a_malformed_message_is_ignored_not_fatal(moto: MotoServer, conn: str, queue: Queue) -> None:
    for body in ('{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": "x"}}]}',
                 '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": 1, "object": {"key": 2}}}]}',
                 '{"source": "aws.s3", "detail-type": "Object Created", "detail": {"object": []}}'):  # fmt: skip
        assert parse_message(body).foreign
        queue.send(body)

    async def run() -> list[dict[str, Any]]:
        events = _trigger(conn, queue).run()
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1.5)
        _put(moto, "in/after.csv")
        queue.send(_body(_record(PREFIX + "in/after.csv")))
        return [(await asyncio.wait_for(pending, 30)).payload, *await _events(events, 3)]

    assert _keys(asyncio.run(run())) == ["in/after.csv"]
    assert queue.counts() == (0, 0)
