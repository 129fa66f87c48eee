"""Progress of every transfer: lines in the task log at a bounded rate, and the same figures
as Airflow metrics (read back over StatsD's UDP wire, and with their tags from Stats).

The line itself is tested with an injected clock; the rate and the counts during a real
transfer are tested through the fault proxy's ``slow`` fault, which holds every answer back.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger

from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.objects import MiB
from airflow_s3connect.progress import Figures, Meter, line
from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.moto_server import MotoServer

GiB = 1024 * MiB
KEY, SECRET = "AKIAEXAMPLE", "secret"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the line --------------------------------------------------------------------------------
def test_a_line_says_objects_bytes_rate_eta_requests_and_retries() -> None:
    figures = Figures(objects=12_400, objects_total=200_000, bytes=int(3.1 * GiB), bytes_total=int(48.2 * GiB),
                      requests=12_530, retries=2, elapsed=100)  # fmt: skip
    assert line("Get", figures, 212 * MiB) == (
        "Get: 12,400 / 200,000 objects, 3.1 / 48.2 GiB, 212.0 MiB/s, ETA 3m38s, 12,530 requests, 2 retries"
    )
    # A listing still read as it goes: no total, so no ETA either.
    growing = Figures(objects=5, bytes=5 * MiB, requests=6, retries=1, elapsed=3)
    assert line("Get", growing, MiB) == "Get: 5 objects, 5.0 MiB, 1.0 MiB/s, 6 requests, 1 retry"
    # Deletes move no bytes: objects only, ETA by objects.
    deletes = Figures(objects=2_000, objects_total=10_000, requests=2, elapsed=10)
    assert line("Delete", deletes, 0) == "Delete: 2,000 / 10,000 objects, ETA 40s, 2 requests, 0 retries"
    done = Figures(objects=3, objects_total=3, bytes=3 * GiB, bytes_total=3 * GiB, requests=700, elapsed=3725)
    assert line("Put", done, 3 * GiB / 3725, final=True) == (
        "Put done: 3 / 3 objects, 3.0 / 3.0 GiB, 844.5 KiB/s, in 1h02m, 700 requests, 0 retries"
    )


def test_the_meter_reports_the_rate_since_its_last_line_and_a_summary_only_after_one() -> None:
    clock, logged = Clock(), _Lines()
    meter = Meter("Put", interval=0, clock=clock, logger=logged.logger)
    meter.attached()
    for _ in range(3):
        meter.queued(100)
    meter.planned()
    meter.moved(150)
    meter.finished()
    clock.now += 10
    assert meter.report() == "Put: 1 / 3 objects, 150 / 300 B, 15 B/s, ETA 10s, 0 requests, 0 retries"
    meter.moved(140)
    meter.moved(-40)  # s3transfer rewinds a retried part
    meter.finished(2)
    clock.now += 2
    assert meter.report() == "Put: 3 / 3 objects, 250 / 300 B, 50 B/s, ETA 1s, 0 requests, 0 retries"
    meter.moved(50)
    figures = meter.close()
    assert (figures.objects, figures.bytes, figures.elapsed) == (3, 300, 12)
    assert logged.lines[-1] == "Put done: 3 / 3 objects, 300 / 300 B, 25 B/s, in 12s, 0 requests, 0 retries"
    assert meter.report() == ""  # nothing after the summary
    assert len(logged.lines) == 3

    logged = _Lines()
    quick = Meter("Get", interval=0, clock=clock, logger=logged.logger)
    quick.attached().queued(5)
    quick.close()
    assert logged.lines == []  # ended before its first line: nothing logged


def test_a_meter_inside_another_adds_to_it(client: Any) -> None:
    """A hook call inside an operator's transfer (its manifest) counts in the operator's meter."""
    outer = Meter("Get", interval=0).attached(client)
    inner = Meter("Put", interval=0).attached(client)
    assert inner.nested
    client.put_object(Bucket=BUCKET, Key="a", Body=b"x")
    inner.close()
    client.get_object(Bucket=BUCKET, Key="a")
    assert (outer.close().requests, inner.requests) == (2, 0)
    assert not hasattr(client, "s3connect_meter")


# -- a throttled transfer, read in the log and on the StatsD wire ----------------------------------
class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.logger = logging.getLogger(f"tests.progress.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class StatsdWire:
    """A StatsD server: every datagram Airflow's statsd client sends, on loopback UDP."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.packets.extend(data.decode().splitlines())

    def counter(self, name: str) -> int:
        return sum(int(p.split(":")[1].split("|")[0]) for p in self.packets if p.startswith(f"{name}:") and "|c" in p)

    def timings(self, name: str) -> list[float]:
        return [float(p.split(":")[1].split("|")[0]) for p in self.packets if p.startswith(f"{name}:") and "|ms" in p]

    def timing(self, name: str, timeout: float = 5.0) -> float:
        """The one timing of ``name``, waited for (UDP is read by a thread); sent last."""
        deadline = time.monotonic() + timeout
        while not self.timings(name) and time.monotonic() < deadline:
            time.sleep(0.02)
        (value,) = self.timings(name) or [None]
        assert value is not None, self.packets
        return value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class Recorder(NoStatsLogger):
    """A Stats backend keeping every count and timing with its tags (StatsD drops tags)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("incr", stat, count, dict(tags or {})))

    def timing(self, stat: str, dt: Any, *, tags: dict[str, str] | None = None) -> None:
        seconds = dt.total_seconds() if hasattr(dt, "total_seconds") else float(dt) / 1000
        self.calls.append(("timing", stat, seconds, dict(tags or {})))

    def total(self, stat: str, **tags: str) -> float:
        return sum(c[2] for c in self.calls if c[0] == "incr" and c[1] == stat and tags.items() <= c[3].items())


@contextlib.contextmanager
def _stats_backend(factory: Any) -> Iterator[None]:
    from airflow.sdk._shared.observability.metrics import stats

    saved = (stats._factory, stats._backend, stats._export_legacy_names)
    stats.initialize(factory=factory, export_legacy_names=False)
    try:
        yield
    finally:
        stats._factory, stats._backend, stats._export_legacy_names = saved


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdWire]:
    from airflow.sdk.observability.metrics.stats_utils import get_stats_factory

    wire = StatsdWire()
    for name, value in {"STATSD_ON": "True", "STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(wire.port),
                        "STATSD_PREFIX": "airflow"}.items():  # fmt: skip
        monkeypatch.setenv(f"AIRFLOW__METRICS__{name}", value)
    with _stats_backend(get_stats_factory()):
        yield wire
    wire.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    with _stats_backend(lambda: recording):
        yield recording


def _seed(moto: MotoServer, prefix: str, count: int, size: int) -> None:
    admin = moto.admin_client("s3")
    for number in range(count):
        admin.put_object(Bucket=BUCKET, Key=f"{prefix}{number:02d}.bin", Body=bytes([number]) * size)


def _progress_lines(caplog: pytest.LogCaptureFixture, operation: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "airflow_s3connect.progress"
            and r.getMessage().startswith(f"{operation}")]  # fmt: skip


@pytest.mark.parametrize("engine", ["auto", "botocore"])
def test_a_throttled_download_logs_progress_at_the_set_rate_with_right_counts(
    engine: str, moto: MotoServer, proxy: FaultProxy, make_conn: Any, statsd: StatsdWire,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:  # fmt: skip
    """8 objects of 64 KiB, two at a time, each answer held 0.5 s, one answered 503 first:
    about 2.5 s of transfer, so lines every 0.4 s show the counts rising to the totals."""
    _seed(moto, "in/", 8, 64 * 1024)
    make_conn("slow", KEY, SECRET, bucket=BUCKET, region_name=REGION, endpoint_url=proxy.url, max_concurrency=2,
              engine=engine)  # fmt: skip
    monkeypatch.setenv("AIRFLOW__S3CONNECT__PROGRESS_INTERVAL", "0.4")
    hook = S3ConnectHook(s3connect_conn_id="slow")
    listed = [f"in/{n:02d}.bin" for n in range(8)]
    proxy.schedule(Fault("503", "GetObject", key_contains="in/03"), Fault("slow", "GetObject", times=None, delay=0.5))
    caplog.set_level(logging.INFO, logger="airflow_s3connect.progress")

    done = hook.download(tmp_path, prefix="in/")

    assert sorted(d["key"] for d in done) == listed
    lines = _progress_lines(caplog, "Get")
    running, final = lines[:-1], lines[-1]
    assert len(running) >= 3, lines
    counts = [int(re.match(r"Get: (\d+) / 8 objects, ", text).group(1)) for text in running]  # type: ignore[union-attr]
    assert counts == sorted(counts), lines
    assert counts[0] < 8, lines
    assert all(" / 512.0 KiB, " in text and "/s, " in text for text in running), lines
    assert any("ETA " in text for text in running), lines
    # A listing, 8 GETs and the one refused with 503, retried (by either engine): every figure
    # exact at the end.
    assert final.startswith("Get done: 8 / 8 objects, 512.0 / 512.0 KiB, "), final
    assert final.endswith(", 10 requests, 1 retry"), final
    assert 1000 < statsd.timing("airflow.s3connect.duration") < 20_000  # ms
    assert statsd.counter("airflow.s3connect.objects") == 8
    assert statsd.counter("airflow.s3connect.bytes") == 8 * 64 * 1024
    assert statsd.counter("airflow.s3connect.requests") == 10
    assert statsd.counter("airflow.s3connect.retries") == 1
    # Counters arrive while it runs, not only at the end: one packet per line and figure.
    assert len([p for p in statsd.packets if p.startswith("airflow.s3connect.bytes:")]) >= 2


def test_a_throttled_put_and_get_in_a_dag_run_log_progress(
    airflow_db: Path, moto: MotoServer, proxy: FaultProxy, make_conn: Any, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The operators' own door (and their ``progress_interval``): a Put of 6 files, then a Get
    of them, each request held 0.5 s, log lines with the counts of what is written and read;
    the Get (``results="list"``: the listing read first) knows its totals from its first line."""
    source = tmp_path / "src"
    source.mkdir()
    for number in range(6):
        (source / f"f{number}.csv").write_bytes(b"x" * 1000)
    make_conn("slow_put", KEY, SECRET, bucket=BUCKET, region_name=REGION, endpoint_url=proxy.url, max_concurrency=2)
    proxy.schedule(Fault("slow", "PutObject", times=None, delay=0.5), Fault("slow", "GetObject", times=None, delay=0.5))
    path = write_dag("progress_put", f"""
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3GetObjectOperator, S3PutObjectOperator

with DAG("progress_put", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    put = S3PutObjectOperator(task_id="put", source="{source}", key="out/", s3connect_conn_id="slow_put",
                              progress_interval=0.4)
    get = S3GetObjectOperator(task_id="get", prefix="out/", local_dir="{tmp_path / 'got'}",
                              s3connect_conn_id="slow_put", progress_interval=0.4)
    put >> get
""")  # fmt: skip
    caplog.set_level(logging.INFO, logger="airflow_s3connect.progress")
    result = run_dag(path, "progress_put")
    assert set(result.task_states.values()) == {"success"}, result.task_states
    lines = _progress_lines(caplog, "Put")
    assert len(lines) >= 3, lines
    assert lines[-1].startswith("Put done: 6 / 6 objects, 5.9 / 5.9 KiB, "), lines
    counts = [int(m.group(1)) for text in lines[:-1] if (m := re.match(r"Put: (\d+)", text))]
    assert counts == sorted(counts), lines
    assert counts[-1] <= 6, lines
    assert result.summary("put")["count"] == 6
    got = _progress_lines(caplog, "Get")
    assert len(got) >= 3, got
    assert all(re.match(r"Get( done)?: \d / 6 objects, ", text) for text in got), got
    assert got[-1].startswith("Get done: 6 / 6 objects, 5.9 / 5.9 KiB, "), got


# -- every door: the same figures, tagged ---------------------------------------------------------
def test_every_door_reports_its_objects_and_bytes_tagged(
    airflow_db: Path, moto: MotoServer, make_conn: Any, recorder: Recorder, tmp_path: Path
) -> None:
    """Hook calls, ``s3connect://`` bulk operations and the operators: each transfer's
    objects and bytes, tagged with the connection, the operation and who made it."""
    from airflow_s3connect.hooks.fs import get_fs

    make_conn("doors", KEY, SECRET, bucket=BUCKET, region_name=REGION, endpoint_url=moto.url)
    hook = S3ConnectHook(s3connect_conn_id="doors")
    _seed(moto, "src/", 4, 1000)

    hook.download(tmp_path / "got", prefix="src/")
    hook.upload("one.bin", data=b"y" * 500)
    hook.copy(source_prefix="src/", target_prefix="copied/")
    hook.delete(prefix="copied/")
    fs = get_fs("doors")
    fs.get(f"{BUCKET}/src/", str(tmp_path / "fs") + "/", recursive=True)
    fs.put(str(tmp_path / "fs"), f"{BUCKET}/up/", recursive=True)
    fs.copy(f"{BUCKET}/src/", f"{BUCKET}/fscopy/", recursive=True)
    fs.rm(f"{BUCKET}/fscopy/", recursive=True)
    fs.mv(f"{BUCKET}/up/", f"{BUCKET}/moved/", recursive=True)
    path = write_dag("progress_doors", """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import (
    S3CopyObjectsOperator, S3DeleteObjectsOperator, S3GetObjectOperator, S3ListObjectsOperator, S3PutObjectOperator,
)

with DAG("progress_doors", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    conn = dict(s3connect_conn_id="doors")
    put = S3PutObjectOperator(task_id="put", data="abc", key="ops/a.txt", **conn)
    get = S3GetObjectOperator(task_id="get", prefix="src/", local_dir="OUT", **conn)
    copy = S3CopyObjectsOperator(task_id="copy", source_prefix="src/", target_key="opcopy/{relative_path}", **conn)
    listed = S3ListObjectsOperator(task_id="list", prefix="src/", results="manifest", **conn)
    delete = S3DeleteObjectsOperator(task_id="delete", prefix="opcopy/", **conn)
    put >> get >> copy >> listed >> delete
""".replace("OUT", str(tmp_path / "ops")))  # fmt: skip
    doors = run_dag(path, "progress_doors")
    assert set(doors.task_states.values()) == {"success"}, doors.task_states

    expected = {  # (operator tag, operation): (objects, bytes)
        ("hook.download", "Get"): (4, 4000), ("hook.upload", "Put"): (1, 500), ("hook.copy", "Copy"): (4, 4000),
        ("hook.delete", "Delete"): (4, 0), ("filesystem", "Get"): (4, 4000), ("filesystem", "Put"): (4, 4000),
        ("filesystem", "Copy"): (4, 4000), ("filesystem", "Delete"): (4, 0),  # not the folder's marker key
        ("filesystem", "Move"): (4, 4000),  # what was copied; its deletes are not counted again
        ("S3PutObjectOperator", "Put"): (1, 3),
        ("S3GetObjectOperator", "Get"): (4, 4000), ("S3CopyObjectsOperator", "Copy"): (4, 4000),
        ("S3ListObjectsOperator", "List"): (4, 0),  # not its own manifest
        ("S3DeleteObjectsOperator", "Delete"): (4, 0),
    }  # fmt: skip
    seen = {(by, operation): (recorder.total("s3connect.objects", operator=by, operation=operation),
                              recorder.total("s3connect.bytes", operator=by, operation=operation))
            for by, operation in expected}  # fmt: skip
    assert seen == expected
    tagged = {c[3]["conn_id"] for c in recorder.calls if c[1].startswith("s3connect.")}
    assert tagged == {"doors"}
    durations = [c for c in recorder.calls if c[1] == "s3connect.duration"]
    assert len(durations) >= len(expected)
    assert all(c[0] == "incr" or c[2] >= 0 for c in recorder.calls)


def test_unchanged_objects_leave_the_totals(client: Any, tmp_path: Path) -> None:
    """A re-run that skips what it has: 9 of 10 unchanged, so the one changed object's bytes
    are the whole total, and the line reaches it."""
    from airflow_s3connect.downloads import Downloader, DownloadTask
    from airflow_s3connect.objects import TransferConfig
    from airflow_s3connect.scope import Scope
    from airflow_s3connect.selection import Selection

    for number in range(10):
        client.put_object(Bucket=BUCKET, Key=f"s/{number}.bin", Body=bytes([number]) * 1000)

    def sync() -> Figures:
        listed = Selection.of(Scope(BUCKET, ""), prefix="s/").objects(client, lookup=False)
        tasks = [DownloadTask.of(item, tmp_path / item.key) for item in listed]
        with Meter("Get", interval=0).attached(client) as meter:
            list(Downloader(client, BUCKET, TransferConfig(), skip_unchanged=True).download(tasks))
        return meter.figures()

    first = sync()
    assert (first.objects, first.bytes, first.bytes_total) == (10, 10_000, 10_000)
    client.put_object(Bucket=BUCKET, Key="s/3.bin", Body=b"changed" * 100)
    again = sync()
    assert (again.objects, again.objects_total, again.bytes, again.bytes_total) == (10, 10, 700, 700)


def test_two_calls_of_one_hook_from_two_threads_lose_nothing(
    moto: MotoServer, make_conn: Any, recorder: Recorder, tmp_path: Path
) -> None:
    """Both calls share the hook's client, so the second adds to the first's meter, which
    ends when the last of them has: every object and request counted, one duration sent."""
    from concurrent.futures import ThreadPoolExecutor

    make_conn("shared", KEY, SECRET, bucket=BUCKET, region_name=REGION, endpoint_url=moto.url)
    _seed(moto, "a/", 12, 1000)
    _seed(moto, "b/", 12, 1000)
    hook = S3ConnectHook(s3connect_conn_id="shared")
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda p: len(hook.download(tmp_path / p, prefix=p)), ["a/", "b/"]))
    assert done == [12, 12]
    assert recorder.total("s3connect.objects", operator="hook.download") == 24
    assert recorder.total("s3connect.bytes", operator="hook.download") == 24_000
    assert recorder.total("s3connect.requests", operator="hook.download") == 24 + 2  # and the two listings
    assert not hasattr(hook.get_conn(), "s3connect_meter")


def test_a_deferral_or_a_skip_is_not_logged_as_a_failed_transfer(
    moto: MotoServer, make_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_s3connect._compat import AirflowSkipException, TaskDeferred
    from airflow_s3connect.operators.base import S3ConnectOperator

    make_conn("defers", KEY, SECRET, bucket=BUCKET, region_name=REGION, endpoint_url=moto.url)
    closed: list[bool] = []
    close = Meter.close

    def recorded(self: Meter, *, failed: bool = False) -> Figures:
        closed.append(failed)
        return close(self, failed=failed)

    monkeypatch.setattr(Meter, "close", recorded)

    class Stops(S3ConnectOperator):
        def __init__(self, *, error: BaseException, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.error = error

        def execute(self, context: Any) -> Any:
            self.open_sink(context)
            raise self.error

    for error, failed in ((TaskDeferred(trigger=None, method_name="resume"), False),  # type: ignore[arg-type]
                          (AirflowSkipException("nothing new"), False), (RuntimeError("broken"), True)):  # fmt: skip
        closed.clear()
        with pytest.raises(type(error)):
            Stops(error=error, task_id="stops", s3connect_conn_id="defers").execute({})
        assert closed == [failed]
