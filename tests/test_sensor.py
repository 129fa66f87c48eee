"""S3ObjectSensor and S3ObjectTrigger against a moto server: requests per poke, conditions, modes."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import time_machine

from airflow_s3connect.triggers import S3ObjectTrigger
from airflow_s3connect.watch import Watcher, WatchSpec, observe
from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.moto_server import MotoServer
from tests.support.stores import make_client
from tests.support.trigger_runner import first_event


def _lists(recording: Any) -> list[Any]:
    return [r for r in recording.s3() if "list-type" in r.query]


def test_exact_key_is_one_request_per_poke(moto: MotoServer) -> None:
    client = make_client(moto)
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="in/report.csv.bak", Body=b"not it")
    watcher = Watcher(WatchSpec(bucket=BUCKET, key="in/report.csv"))
    with moto.recording() as rec:
        assert watcher.poke(client, 0) is None
        admin.put_object(Bucket=BUCKET, Key="in/report.csv", Body=b"it")
        (found,) = watcher.poke(client, 1) or []
    assert found.key == "in/report.csv"
    assert found.size == 2
    puts = [r for r in rec.s3() if r.method == "PUT"]
    assert len(rec.s3()) - len(puts) == 2  # one ListObjectsV2 per poke, no HEAD
    assert all(r.query["max-keys"] == ["1"] and r.query["prefix"] == ["in/report.csv"] for r in _lists(rec))


def test_a_poke_reads_only_the_pages_it_needs(moto: MotoServer) -> None:
    client = make_client(moto)
    admin = moto.admin_client("s3")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: admin.put_object(Bucket=BUCKET, Key=f"drop/{i:04d}.csv", Body=b"x" * i), range(1200)))
    admin.put_object(Bucket=BUCKET, Key="elsewhere/0.csv", Body=b"")
    cases = [
        (WatchSpec(bucket=BUCKET, base="drop/", pattern="*.csv"), 1, 1),
        (WatchSpec(bucket=BUCKET, base="drop/", pattern="*.csv", min_objects=1100), 2, 1100),
        (WatchSpec(bucket=BUCKET, base="drop/", pattern="*.csv", collect_all=True), 2, 1200),
        (WatchSpec(bucket=BUCKET, base="drop/", pattern="*.csv", min_size=1195), 2, 1),  # found on page 2
        (WatchSpec(bucket=BUCKET, base="drop/", pattern="01*.csv", collect_all=True), 1, 100),
    ]
    for spec, requests, matched in cases:
        with moto.recording() as rec:
            seen = observe(client, spec)
        assert (len(rec.s3()), seen.requests, len(seen.matches)) == (requests, requests, matched), spec
    # The pattern's literal part is the Prefix sent.
    with moto.recording() as rec:
        observe(client, WatchSpec(bucket=BUCKET, base="drop/", pattern="01*.csv"))
    assert rec.s3()[0].query["prefix"] == ["drop/01"]


def test_new_since_absent_and_stable_for_with_a_growing_object(moto: MotoServer) -> None:
    client = make_client(moto)
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="grow/part.csv", Body=b"a" * 10)
    modified = admin.head_object(Bucket=BUCKET, Key="grow/part.csv")["LastModified"]
    later = (modified + datetime.timedelta(seconds=1)).isoformat()
    assert Watcher(WatchSpec(bucket=BUCKET, base="grow/", new_since=later)).poke(client, 0) is None
    assert Watcher(WatchSpec(bucket=BUCKET, base="grow/", new_since=modified.isoformat())).poke(client, 0)

    absent = Watcher(WatchSpec(bucket=BUCKET, base="grow/", absent=True))
    assert absent.poke(client, 0) is None
    stable = Watcher(WatchSpec(bucket=BUCKET, base="grow/", stable_for=30))
    assert stable.poke(client, 100) is None  # first sight starts the clock
    admin.put_object(Bucket=BUCKET, Key="grow/part.csv", Body=b"a" * 20)  # still being written
    assert stable.poke(client, 120) is None  # changed: the clock restarts
    assert stable.poke(client, 140) is None  # unchanged for 20 s only
    (done,) = stable.poke(client, 150) or []  # unchanged for 30 s
    assert done.size == 20
    admin.delete_object(Bucket=BUCKET, Key="grow/part.csv")
    assert absent.poke(client, 0) == []


def _trigger_conn(moto: MotoServer, make_conn: Callable[..., str], **extra: Any) -> str:
    return make_conn(
        "trig",
        "AKIABASE",
        "base-secret-do-not-log",
        aws_session_token="token-do-not-log",
        region_name=REGION,
        endpoint_url=moto.url,
        sts_endpoint_url=moto.url,
        bucket=BUCKET,
        path_prefix="tenants/{tenant}",
        **extra,
    )


def test_trigger_with_assume_role_waits_without_secrets_in_its_kwargs(
    moto: MotoServer, make_conn: Callable[..., str]
) -> None:
    conn_id = _trigger_conn(
        moto,
        make_conn,
        auth_type="assume_role",
        role_arn="arn:aws:iam::210987654321:role/partner-reader",
        external_id="tenant-acme:7f3a9c",
    )
    spec = WatchSpec(bucket=BUCKET, base="tenants/acme/in/", pattern="*.json")
    trigger = S3ObjectTrigger(conn_id, {"tenant": "acme"}, spec.to_json(), poke_interval=0.2)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_s3connect.triggers.s3object.S3ObjectTrigger"
    serialized = json.dumps(kwargs)
    assert "do-not-log" not in serialized
    assert "tenant-acme:7f3a9c" not in serialized  # the external ID stays in the connection too
    # The file arrives once the trigger's first poke has been seen: it must wait for it.
    arrival = moto.arrival_after_request(BUCKET, "tenants/acme/in/a.json", b"{}", seen="tenants/acme/in/")
    with moto.recording() as rec, arrival:
        event = first_event(S3ObjectTrigger(**kwargs))
    assert event["status"] == "success"
    assert [m["key"] for m in event["matches"]] == ["tenants/acme/in/a.json"]
    assert len(rec.sts("AssumeRole")) == 1
    assert rec.sts("AssumeRole")[0].form["ExternalId"] == "tenant-acme:7f3a9c"
    polls = _lists(rec)
    assert len(polls) == event["requests"] >= 2  # it waited, one request per poke
    assert all(r.query["prefix"] == ["tenants/acme/in/"] for r in polls)


def test_trigger_credentials_refresh_during_a_long_wait(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    """A wait longer than the STS session: the trigger's pokes carry a fresh session token."""
    conn_id = _trigger_conn(
        moto, make_conn, auth_type="assume_role", role_arn="arn:aws:iam::210987654321:role/partner-reader"
    )
    spec = WatchSpec(bucket=BUCKET, base="tenants/acme/slow/")
    trigger = S3ObjectTrigger(conn_id, {"tenant": "acme"}, spec.to_json(), poke_interval=0.3)
    admin = moto.admin_client("s3")
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=50)

    recording = moto.workdir / "recording.jsonl"
    polls_before_jump = 0

    async def wait() -> dict[str, Any]:
        nonlocal polls_before_jump
        generator = trigger.run()
        pending = asyncio.ensure_future(generator.__anext__())
        for _ in range(300):  # a few pokes in the first one-hour session
            await asyncio.sleep(0.1)
            polls_before_jump = recording.read_text().count("tenants%2Facme%2Fslow%2F")
            if polls_before_jump >= 2:
                break
        with time_machine.travel(later, tick=True):
            await asyncio.sleep(1.0)  # 50 minutes on: inside the refresh margin
            admin.put_object(Bucket=BUCKET, Key="tenants/acme/slow/done.flag", Body=b"")
            event = await asyncio.wait_for(pending, timeout=30)
        await generator.aclose()
        return dict(event.payload)

    with moto.recording() as rec:
        payload = asyncio.run(wait())
    assert payload["status"] == "success"
    # Only the client's clock moved: sessions moto issues after the jump look short to the
    # client too, so it refreshes them again; what matters is that pokes never failed and
    # carried new tokens after the jump.
    assert len(rec.sts("AssumeRole")) >= 2
    tokens = [r.headers["X-Amz-Security-Token"] for r in _lists(rec)]
    assert polls_before_jump >= 2
    assert len(set(tokens[:polls_before_jump])) == 1  # several pokes on the first session
    assert tokens[-1] != tokens[0]


def test_trigger_reports_errors_as_an_event(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = _trigger_conn(moto, make_conn)
    spec = WatchSpec(bucket="no-such-bucket-here", base="tenants/acme/")
    event = first_event(S3ObjectTrigger(conn_id, {"tenant": "acme"}, spec.to_json(), poke_interval=0.1))
    assert event["status"] == "error"
    assert event["type"] == "ScopeError"  # the connection's bucket guard, before any request


SENSOR_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3GetObjectOperator
from airflow_s3connect.sensors import S3ObjectSensor

with DAG("s3c_sensors", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    conn = dict(s3connect_conn_id="sens", poke_interval=1, timeout=60)
    poke = S3ObjectSensor(task_id="poke", prefix="landing/", pattern="*.csv", min_objects=2, stable_for=1,
                          mode="poke", **conn)
    resched = S3ObjectSensor(task_id="reschedule", prefix="landing/", pattern="*.csv", stable_for=1,
                             mode="reschedule", include_metadata=True, **conn)
    deferred = S3ObjectSensor(task_id="deferred", key="late/arrival.json", deferrable=True, **conn)
    gone = S3ObjectSensor(task_id="absent", prefix="tmp/", absent=True, **conn)
    soft = S3ObjectSensor(task_id="soft_timeout", key="never/there.csv", soft_fail=True,
                          s3connect_conn_id="sens", poke_interval=1, timeout=2)
    fetch = S3GetObjectOperator.partial(task_id="fetch", s3connect_conn_id="sens", local_dir="OUT").expand(
        key=poke.output)
    deferred >> [poke, resched, gone, soft]  # first, so its key is not there yet when it starts
"""


def test_sensor_modes_in_a_dag_run(moto: MotoServer, airflow_db: Path, tmp_path: Path) -> None:
    admin = moto.admin_client("s3")
    for name in ("a.csv", "b.csv"):
        admin.put_object(Bucket=BUCKET, Key=f"landing/{name}", Body=name.encode())
    admin.put_object(Bucket=BUCKET, Key="landing/readme.txt", Body=b"no")
    path = write_dag("s3c_sensors", SENSOR_DAG.replace("OUT", str(tmp_path)))
    conn = {"conn_type": "s3connect", "login": "AKIAEXAMPLE", "password": "secret",
            "extra": {"endpoint_url": moto.url, "region_name": REGION, "bucket": BUCKET}}  # fmt: skip
    os.environ["AIRFLOW_CONN_SENS"] = json.dumps(conn)
    # The deferred sensor's key appears only after the worker's poke missed it (seen in the
    # server's recording): from then on, only the trigger can find it.
    try:
        with moto.recording() as rec, moto.arrival_after_request(BUCKET, "late/arrival.json", b"{}"):
            result = run_dag(path, "s3c_sensors", datetime.datetime(2025, 2, 1, tzinfo=datetime.timezone.utc))
    finally:
        del os.environ["AIRFLOW_CONN_SENS"]
    deferred_polls = [r for r in _lists(rec) if r.query.get("prefix") == ["late/arrival.json"]]
    assert len(deferred_polls) >= 2  # the worker's poke, then the trigger's
    states = {task: state for (task, _), state in result.task_states.items()}
    assert states == {
        "poke": "success",
        "reschedule": "success",
        "deferred": "success",
        "absent": "success",
        "soft_timeout": "skipped",
        "fetch": "success",
    }
    assert result.value("poke") == ["landing/a.csv", "landing/b.csv"]
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id="s3c_sensors", run_id=result.run_id, task_id="reschedule")
            .one()
        )
        reschedules = session.query(TaskReschedule).filter_by(ti_id=ti.id).count()
    assert reschedules >= 1  # stable_for's memory crossed a reschedule through the task state store
    metadata = result.value("reschedule")
    assert [m["key"] for m in metadata] == ["landing/a.csv", "landing/b.csv"]
    assert metadata[0]["uri"] == f"s3://{BUCKET}/landing/a.csv"
    assert metadata[0]["size"] == 5
    assert result.value("deferred") == ["late/arrival.json"]
    assert result.value("absent") == []
    assert (tmp_path / "landing" / "a.csv").read_bytes() == b"a.csv"  # Get expanded over the sensor's matches
    assert (tmp_path / "landing" / "b.csv").read_bytes() == b"b.csv"


LOOP_PROBE = r"""
import asyncio, datetime, json, sys, time
import time_machine
import airflow.jobs.triggerer_job_runner  # the triggerer process, loaded before any trigger runs
from airflow._shared.module_loading import import_string  # the triggerer's own

classpath, kwargs, warm = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])


async def first_event(trigger, travel_after):
    generator = trigger.run()
    pending = asyncio.ensure_future(generator.__anext__())
    if travel_after is not None:
        await asyncio.sleep(travel_after)  # the first pokes: connection lookup, AssumeRole, listings
        with time_machine.travel(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=50),
                                 tick=True):
            event = await asyncio.wait_for(pending, 30)  # inside the refresh margin: AssumeRole again
    else:
        event = await asyncio.wait_for(pending, 30)
    await generator.aclose()
    return event.payload


async def main():
    cls = import_string(classpath)  # as the triggerer does, on its loop
    # An earlier trigger of this process: the one-off cost of parsing botocore's models.
    await first_event(cls(**warm), None)
    gaps, done = [], False

    async def ticker():
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    event = await first_event(cls(**kwargs), 1.5)
    done = True
    await ticking
    print(json.dumps({"max_gap_ms": max(gaps) * 1000, "ticks": len(gaps), "event": event}))

asyncio.run(main())
"""


def loop_probe(classpath: str, kwargs: dict[str, Any], warm: dict[str, Any]) -> dict[str, Any]:
    """Run :data:`LOOP_PROBE` (a warm-up trigger of ``warm``, then the measured one) in a
    fresh process; its report: the longest gap of the loop, the ticks, the first event."""
    done = subprocess.run(
        [sys.executable, "-c", LOOP_PROBE, classpath, json.dumps(kwargs), json.dumps(warm)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_trigger_never_blocks_the_event_loop(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    """From its creation through its first poke and a credential refresh, a trigger never holds
    the triggerer's loop more than 50 ms (one triggerer runs thousands of these). The first
    trigger of a process parses botocore's models once (about 140 ms, GIL held); later ones
    share them."""
    conn_id = _trigger_conn(
        moto, make_conn, auth_type="assume_role", role_arn="arn:aws:iam::210987654321:role/partner-reader"
    )
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="tenants/acme/warm.flag", Body=b"")
    spec = WatchSpec(bucket=BUCKET, base="tenants/acme/loop/")
    classpath, kwargs = S3ObjectTrigger(conn_id, {"tenant": "acme"}, spec.to_json(), poke_interval=0.2).serialize()
    warm = dict(kwargs, watch=dict(kwargs["watch"], base="tenants/acme/", key=None))
    arrival = moto.arrival_after_request(BUCKET, "tenants/acme/loop/done.flag", b"", delay=3, seen="tenants/acme/loop/")
    with moto.recording() as rec, arrival:
        report = loop_probe(classpath, kwargs, warm)
    assert report["event"]["status"] == "success"
    assert len(rec.sts("AssumeRole")) >= 3  # the warm-up's, this trigger's first credentials, a refresh
    assert report["ticks"] > 500
    assert report["max_gap_ms"] < 50, report
