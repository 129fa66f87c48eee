"""End to end on the real CeleryExecutor stack (``make stack``): PostgreSQL, Redis, the API
server, scheduler, DAG processor, triggerer and two Celery workers as processes.

What only exists there: tasks on two workers, a sensor deferred to the triggerer and
resumed by an upload, and workers SIGKILLed in the middle of a multipart Put (on moto, and
create-only on Ceph RGW, which reserves the key first) and of a ranged Get, after which
Airflow's retry must succeed and leave no unfinished multipart upload, no reservation and
no temporary file behind. ``.ci/run`` installs PostgreSQL and Redis, so CI
always runs this module.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from demo import run as demo
from demo.stack import PG_BIN, Stack, api
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.moto_server import free_port

if not (PG_BIN / "postgres").exists() or shutil.which("redis-server") is None:
    pytest.fail("make stack needs Debian's postgresql and redis-server: .ci/run installs them", pytrace=False)

MiB = 1024 * 1024
HEARTBEAT_TIMEOUT = 10
LOCAL = Path("/tmp/s3connect-stack-test")

STACK_DAGS = """
import datetime, time
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3GetObjectOperator, S3PutObjectOperator
from airflow_s3connect.sensors import S3ObjectSensor

common = dict(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False)
retry = dict(retries=2, retry_delay=datetime.timedelta(seconds=1))

with DAG("s3c_stack_wait", **common):
    found = S3ObjectSensor(task_id="wait", prefix="wait/", pattern="*.flag", deferrable=True, poke_interval=1,
                           timeout=300)
    found >> S3GetObjectOperator(task_id="fetch", prefix="wait/", pattern="*.flag", local_dir="LOCAL/wait")

with DAG("s3c_stack_put", **common):
    S3PutObjectOperator(task_id="put", source="LOCAL/source/", key="once/", overwrite=False,
                        s3connect_conn_id="stack_slow", chunk_size=5 * 2**20, multipart_threshold=5 * 2**20, **retry)

with DAG("s3c_stack_kill", **common):
    S3PutObjectOperator(task_id="put", source="LOCAL/kill/big.bin", key="kill/big.bin",
                        s3connect_conn_id="stack_slow", chunk_size=5 * 2**20, multipart_threshold=5 * 2**20)

with DAG("s3c_stack_reserve", **common):
    S3PutObjectOperator(task_id="put", source="LOCAL/reserve/", key="reserve/", overwrite=False,
                        s3connect_conn_id="stack_rgw", chunk_size=5 * 2**20, multipart_threshold=5 * 2**20, **retry)

with DAG("s3c_stack_get", **common):
    S3GetObjectOperator(task_id="get", key="big/blob.bin", local_dir="LOCAL/get", s3connect_conn_id="stack_slow",
                        chunk_size=5 * 2**20, multipart_threshold=5 * 2**20, **retry)
"""


@pytest.fixture(scope="module")
def proxy_holder() -> Iterator[dict[str, FaultProxy]]:
    holder: dict[str, FaultProxy] = {}
    yield holder
    for proxy in holder.values():
        proxy.stop()


#: The bucket of the stack's connection to Ceph RGW (``stack_rgw``, through a fault proxy).
RGW_BUCKET = "s3c-stack-rgw"


@pytest.fixture(scope="module")
def stack(proxy_holder: dict[str, FaultProxy], rgw: Any) -> Iterator[Stack]:
    # Not under pytest's tmp_path: PostgreSQL runs as its own user, who must reach its folder.
    home = Path(tempfile.mkdtemp(prefix="s3connect-stack-"))
    home.chmod(0o755)
    dags = home / "dags"
    dags.mkdir()
    for example in (demo.ROOT / "dags").glob("example_*.py"):
        # example_import waits 55 min for files; here 15 s, so that "nothing arrived" is testable.
        (dags / example.name).write_text(example.read_text().replace("timeout=3300", "timeout=15"))
    (dags / "s3c_stack.py").write_text(STACK_DAGS.replace("LOCAL", str(LOCAL)))
    shutil.rmtree(LOCAL, ignore_errors=True)
    # The slow connection goes through a fault proxy in front of the stack's S3; its port is
    # known before the stack starts, its upstream once the embedded S3 is up.
    proxy = FaultProxy("http://127.0.0.1:1").start()
    proxy_holder["proxy"] = proxy
    slow = {"conn_type": "s3connect", "login": "demo", "password": "demo",
            "extra": {"endpoint_url": proxy.url, "region_name": demo.REGION, "bucket": demo.BUCKET,
                      "addressing_style": "path", "max_attempts": 2}}  # fmt: skip
    # Ceph RGW honours If-None-Match on PutObject only: create-only multipart uploads reserve
    # their key there, which is what a killed worker must not leave behind.
    rgw.client().create_bucket(Bucket=RGW_BUCKET)
    rgw_proxy = FaultProxy(rgw.http_url).start()
    proxy_holder["rgw"] = rgw_proxy
    to_rgw = {"conn_type": "s3connect", "login": rgw.access_key, "password": rgw.secret_key,
              "extra": {"endpoint_url": rgw_proxy.url, "region_name": "us-east-1", "bucket": RGW_BUCKET,
                        "addressing_style": "path", "max_attempts": 2}}  # fmt: skip
    extra_env = {
        "AIRFLOW_CONN_STACK_RGW": json.dumps(to_rgw),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW_CONN_STACK_SLOW": json.dumps(slow),
        # Task logs in the embedded S3 through s3connect_default, and nowhere else once uploaded:
        # what the UI shows then comes from S3.
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3connect://{demo.BUCKET}/airflow-logs",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "s3connect_default",
        "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS": "airflow_s3connect.log_settings.LOGGING_CONFIG",
        "AIRFLOW__LOGGING__DELETE_LOCAL_LOGS": "True",
        # The DAGs folder, and DAG files from S3 through s3connect_dags (a versioned bucket).
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": "dags-folder",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {},
                },
                {
                    "name": "s3c-bundle",
                    "classpath": "airflow_s3connect.bundles.S3ConnectDagBundle",
                    "kwargs": {"s3connect_conn_id": "s3connect_dags", "prefix": "dags/", "refresh_interval": 5},
                },
            ]
        ),
    }
    with Stack(home, api_port=free_port(), extra_env=extra_env).running() as running:
        proxy.upstream = running.s3_url
        yield running
    shutil.rmtree(home, ignore_errors=True)


def _s3(stack: Stack) -> Any:
    return boto3.client("s3", endpoint_url=stack.s3_url, region_name=demo.REGION, aws_access_key_id="demo",
                        aws_secret_access_key="demo")  # fmt: skip


def _trigger(stack: Stack, dag_id: str) -> str:
    """Unpause ``dag_id`` and return its run: the one the scheduler creates at once for a
    scheduled DAG (two runs would race for the same files), else a manual one."""
    api(stack.api_url, f"/api/v2/dags/{dag_id}", {"is_paused": False}, method="PATCH")
    dag = api(stack.api_url, f"/api/v2/dags/{dag_id}")
    if dag.get("timetable_summary") not in (None, "None"):  # type: ignore[union-attr]

        def scheduled() -> str | None:
            runs = api(stack.api_url, f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]  # type: ignore[index]
            return str(runs[0]["dag_run_id"]) if runs else None

        return str(_until(f"the scheduler to create a run of {dag_id}", scheduled, 60))
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    run = api(stack.api_url, f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": now})
    return str(run["dag_run_id"])  # type: ignore[index]


def _trigger_now(stack: Stack, dag_id: str) -> str:
    """A manual run, now (the DAG unpaused already)."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    return str(api(stack.api_url, f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": now})["dag_run_id"])  # type: ignore[index]


def _tis(stack: Stack, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return list(api(stack.api_url, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"])  # type: ignore[index]


def _until(what: str, check: Callable[[], Any], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _finished(stack: Stack, dag_id: str, run_id: str, timeout: float = 240) -> str:
    def state() -> str | None:
        run = api(stack.api_url, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return str(run["state"]) if run["state"] in ("success", "failed") else None  # type: ignore[index]

    return str(_until(f"{dag_id} {run_id}", state, timeout))


def _wait_for_dag(stack: Stack, dag_id: str) -> None:
    def parsed() -> bool:
        try:
            api(stack.api_url, f"/api/v2/dags/{dag_id}")
            return True
        except OSError:
            return False

    _until(f"the DAG processor to parse {dag_id}", parsed, 120)


def test_every_example_runs_on_the_celery_workers(stack: Stack) -> None:
    s3 = _s3(stack)
    runs = {}
    for dag_id in ("example_export", "example_import", "example_catalog", "example_cross_account", "example_taskflow"):
        _wait_for_dag(stack, dag_id)
        runs[dag_id] = _trigger(stack, dag_id)
    states = {dag_id: _finished(stack, dag_id, run_id) for dag_id, run_id in runs.items()}
    assert states == dict.fromkeys(runs, "success")
    assert all(ti["hostname"] for dag_id, run_id in runs.items() for ti in _tis(stack, dag_id, run_id))
    assert _keys(s3, "incoming/") == []
    assert len(_keys(s3, "processed/")) == 3
    assert [k.rsplit(".", 1)[-1] for k in _keys(s3, "exports/acme/orders/")] == ["gz", "parquet"]
    assert [k.rsplit("/", 1)[1] for k in _keys(s3, "taskflow/")] == [
        "orders.jsonl",
        "partner-report.csv",
        "summary.json",
    ]


def test_task_logs_live_in_s3_and_the_api_server_shows_them(stack: Stack) -> None:
    """Remote task logs through the s3connect connection: workers upload, the API reads back."""
    _wait_for_dag(stack, "example_catalog")
    run_id = _trigger_now(stack, "example_catalog")
    assert _finished(stack, "example_catalog", run_id) == "success"
    s3 = _s3(stack)
    prefix = f"airflow-logs/dag_id=example_catalog/run_id={run_id}/task_id=catalog/"
    (key,) = _until("the worker to upload the task log", lambda: _keys(s3, prefix), 60)
    stored = s3.get_object(Bucket=demo.BUCKET, Key=key)["Body"].read().decode()
    assert "Catalogued s3://s3connect-demo/datasource/" in stored
    url = f"/api/v2/dags/example_catalog/dagRuns/{run_id}/taskInstances/catalog/logs/1"
    shown = json.dumps(api(stack.api_url, url))
    assert f"s3connect://{demo.BUCKET}/{key}" in shown  # the source the UI names
    assert "Catalogued s3://s3connect-demo/datasource/" in shown


def _keys(s3: Any, prefix: str, bucket: str = demo.BUCKET) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_an_hour_without_files_is_a_skipped_import_not_a_failure(stack: Stack) -> None:
    """example_import once incoming/ is empty (the first test imported and archived it all)."""
    assert _keys(_s3(stack), "incoming/") == []
    run_id = _trigger_now(stack, "example_import")
    assert _finished(stack, "example_import", run_id, timeout=180) == "success"
    states = {ti["task_id"]: ti["state"] for ti in _tis(stack, "example_import", run_id)}
    assert states["wait_for_files"] == "skipped"
    assert states["fetch"] == "skipped"


def test_marking_a_running_put_failed_aborts_its_multipart_upload(
    stack: Stack, proxy_holder: dict[str, FaultProxy]
) -> None:
    """ "Mark failed" in the UI: the supervisor stops the task, on_kill cancels the transfer."""
    (LOCAL / "kill").mkdir(parents=True, exist_ok=True)
    # 16 parts, 4 at a time, 5 s each: 20 s, far longer than the supervisor takes to notice.
    (LOCAL / "kill" / "big.bin").write_bytes(bytes(range(256)) * (80 * 4096))
    proxy = proxy_holder["proxy"]
    proxy.schedule(Fault("slow", "UploadPart", times=None, delay=5.0))
    s3 = _s3(stack)
    _wait_for_dag(stack, "s3c_stack_kill")
    run_id = _trigger(stack, "s3c_stack_kill")

    def uploading() -> list[Any]:
        return list(s3.list_multipart_uploads(Bucket=demo.BUCKET, Prefix="kill/").get("Uploads", []))

    _until("the multipart upload to start", uploading)
    api(stack.api_url, f"/api/v2/dags/s3c_stack_kill/dagRuns/{run_id}/taskInstances/put", {"new_state": "failed"},
        method="PATCH")  # fmt: skip
    _until("the multipart upload to be aborted", lambda: not uploading(), 90)
    proxy.schedule()
    assert _keys(s3, "kill/") == []


def test_a_deferred_sensor_resumes_in_the_triggerer_after_an_upload(stack: Stack) -> None:
    _wait_for_dag(stack, "s3c_stack_wait")
    run_id = _trigger(stack, "s3c_stack_wait")

    def sensor_is(state: str) -> bool:
        tis = _tis(stack, "s3c_stack_wait", run_id)
        return any(ti["task_id"] == "wait" and ti["state"] == state for ti in tis)

    _until("the sensor to defer", lambda: sensor_is("deferred"), 120)
    uploaded = time.monotonic()
    _s3(stack).put_object(Bucket=demo.BUCKET, Key="wait/go.flag", Body=b"go")

    _until("the sensor to resume", lambda: sensor_is("success"), 120)
    print(f"upload -> sensor success: {time.monotonic() - uploaded:.1f} s")
    assert _finished(stack, "s3c_stack_wait", run_id) == "success"
    assert (LOCAL / "wait" / "go.flag").read_bytes() == b"go"


def _kill_worker_running(stack: Stack, dag_id: str, run_id: str, task_id: str) -> str:
    """SIGKILL the Celery worker (with its task processes) that runs ``task_id`` now. Both
    workers share this machine's hostname: the task's pid, followed up its parents, tells
    them apart."""
    workers = {p.pid: name for name, p in stack.processes.items() if name.startswith("worker")}

    def worker() -> str | None:
        for ti in _tis(stack, dag_id, run_id):
            if ti["task_id"] == task_id and ti["state"] == "running" and ti.get("pid"):
                pid = int(ti["pid"])
                while pid > 1 and pid not in workers:
                    try:
                        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    except (OSError, IndexError, ValueError):
                        return None
                return workers.get(pid)
        return None

    name = str(_until(f"{task_id} to run on a worker", worker, 120))
    stack.kill(name)
    return name


def test_a_worker_killed_mid_multipart_put_is_retried_cleanly(
    stack: Stack, proxy_holder: dict[str, FaultProxy]
) -> None:
    """The first object is complete when the worker dies: with overwrite=False, the retry
    recognises it as its own; the second was mid-multipart: the retry aborts that upload."""
    source = LOCAL / "source"
    source.mkdir(parents=True, exist_ok=True)
    (source / "a-small.txt").write_bytes(b"small")
    big = bytes(range(256)) * (40 * 4096)  # 40 MiB: 8 parts
    (source / "b-big.bin").write_bytes(big)
    proxy = proxy_holder["proxy"]
    proxy.schedule(Fault("slow", "UploadPart", times=None, delay=3.0))
    s3 = _s3(stack)
    _wait_for_dag(stack, "s3c_stack_put")
    run_id = _trigger(stack, "s3c_stack_put")

    def midway() -> bool:
        uploads = s3.list_multipart_uploads(Bucket=demo.BUCKET, Prefix="once/").get("Uploads", [])
        return [u["Key"] for u in uploads] == ["once/b-big.bin"] and _keys(s3, "once/") == ["once/a-small.txt"]

    _until("a-small.txt complete and b-big.bin's multipart upload under way", midway)
    worker = _kill_worker_running(stack, "s3c_stack_put", run_id, "put")
    proxy.schedule()
    stack.start_worker(worker)
    assert _finished(stack, "s3c_stack_put", run_id, timeout=300) == "success"
    (ti,) = _tis(stack, "s3c_stack_put", run_id)
    assert ti["try_number"] >= 2
    assert s3.get_object(Bucket=demo.BUCKET, Key="once/b-big.bin")["Body"].read() == big
    assert s3.list_multipart_uploads(Bucket=demo.BUCKET, Prefix="once/").get("Uploads", []) == []


def test_a_worker_killed_mid_create_only_upload_on_rgw_leaves_no_reservation(
    stack: Stack, proxy_holder: dict[str, FaultProxy], rgw: Any
) -> None:
    """On RGW a create-only multipart upload first reserves its key with an empty object. The
    worker is SIGKILLed mid-upload, and the file is gone before the retry, which so never
    writes that key again: the reservation the killed try recorded in the task state is
    released by the retry, and its multipart upload aborted."""
    source = LOCAL / "reserve"
    source.mkdir(parents=True, exist_ok=True)
    big = bytes(range(256)) * (40 * 4096)  # 40 MiB: 8 parts
    (source / "big.bin").write_bytes(big)
    proxy = proxy_holder["rgw"]
    # Every part's answer held back long enough that the worker dies before the upload completes.
    proxy.schedule(Fault("slow", "UploadPart", times=None, delay=30.0))
    s3 = rgw.client()
    _wait_for_dag(stack, "s3c_stack_reserve")
    run_id = _trigger(stack, "s3c_stack_reserve")

    def reserved_and_under_way() -> bool:
        uploads = s3.list_multipart_uploads(Bucket=RGW_BUCKET, Prefix="reserve/").get("Uploads", [])
        if [u["Key"] for u in uploads] != ["reserve/big.bin"]:
            return False
        head = s3.head_object(Bucket=RGW_BUCKET, Key="reserve/big.bin")
        return "s3connect-reservation" in head["Metadata"]

    _until("big.bin reserved and its multipart upload under way", reserved_and_under_way)
    worker = _kill_worker_running(stack, "s3c_stack_reserve", run_id, "put")
    (source / "big.bin").unlink()  # moved away before the retry
    (source / "small.txt").write_bytes(b"small")
    proxy.schedule()
    stack.start_worker(worker)
    assert _finished(stack, "s3c_stack_reserve", run_id, timeout=300) == "success"
    (ti,) = _tis(stack, "s3c_stack_reserve", run_id)
    assert ti["try_number"] >= 2
    listed = s3.list_objects_v2(Bucket=RGW_BUCKET, Prefix="reserve/").get("Contents", [])
    assert [o["Key"] for o in listed] == ["reserve/small.txt"]  # no empty reservation left as data
    assert s3.list_multipart_uploads(Bucket=RGW_BUCKET, Prefix="reserve/").get("Uploads", []) == []


def test_a_worker_killed_mid_ranged_get_is_retried_without_leftovers(
    stack: Stack, proxy_holder: dict[str, FaultProxy]
) -> None:
    big = bytes(range(256)) * (40 * 4096)
    s3 = _s3(stack)
    s3.put_object(Bucket=demo.BUCKET, Key="big/blob.bin", Body=big)
    proxy = proxy_holder["proxy"]
    proxy.schedule(Fault("slow", "GetObject", times=None, delay=3.0, ranged=True))
    _wait_for_dag(stack, "s3c_stack_get")
    run_id = _trigger(stack, "s3c_stack_get")
    _until("the download to start", lambda: list((LOCAL / "get").rglob(".*.part")) if (LOCAL / "get").exists() else [])
    worker = _kill_worker_running(stack, "s3c_stack_get", run_id, "get")
    proxy.schedule()
    stack.start_worker(worker)
    assert _finished(stack, "s3c_stack_get", run_id, timeout=300) == "success"
    assert (LOCAL / "get" / "big" / "blob.bin").read_bytes() == big
    assert sorted(p.name for p in (LOCAL / "get").rglob("*")) == ["big", "blob.bin"]


def _event_runs(
    stack: Stack, dag_id: str, audit: str
) -> tuple[Callable[[], list[str]], Callable[[], list[dict[str, Any]]], Callable[[], bool]]:
    """For an event-driven example: the files its runs recorded under ``audit``, its runs,
    and whether they all finished."""
    s3 = _s3(stack)

    def recorded() -> list[str]:
        keys: list[str] = []
        for key in _keys(s3, audit):
            keys += json.loads(s3.get_object(Bucket=demo.BUCKET, Key=key)["Body"].read())
        return sorted(keys)

    def runs() -> list[dict[str, Any]]:
        return list(api(stack.api_url, f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"])  # type: ignore[index]

    def all_finished() -> bool:
        return all(run["state"] in ("success", "failed") for run in runs())

    return recorded, runs, all_finished


def _log_lines(stack: Stack) -> list[str]:
    return (stack.home / "s3" / "s3.log").read_text(errors="replace").splitlines()


def _drop_listings(stack: Stack, prefix: str = "drop") -> int:
    """ListObjectsV2 requests for ``prefix`` the embedded S3 has answered (its request log)."""
    return sum(1 for line in _log_lines(stack) if "list-type=2" in line and f"prefix={prefix}" in line)


#: Figures the watcher tests measure, for BENCHMARKS.md ("Event watchers on the stack").
WATCHER_FIGURES = Path(__file__).resolve().parent.parent / "test-output" / "stack-watchers.json"


def _record_figures(**figures: Any) -> None:
    WATCHER_FIGURES.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(WATCHER_FIGURES.read_text()) if WATCHER_FIGURES.exists() else {}
    WATCHER_FIGURES.write_text(json.dumps({**known, **figures}, indent=2))


def _latency(run: dict[str, Any], put_at: float) -> float:
    """Seconds from a file's PutObject to the queuing of the run its event started."""
    return datetime.datetime.fromisoformat(run["queued_at"]).timestamp() - put_at


@pytest.mark.timeout(900)  # the DAG processor registers the watcher up to ~90 s after the DAG is unpaused
def test_dropped_files_start_runs_that_see_each_file_once_across_a_triggerer_restart(stack: Stack) -> None:
    """example_event_driven: the asset watcher in the triggerer, asset state, the scheduler."""
    dag_id = "example_event_driven"
    s3 = _s3(stack)
    _wait_for_dag(stack, dag_id)
    api(stack.api_url, f"/api/v2/dags/{dag_id}", {"is_paused": False}, method="PATCH")

    recorded, runs, all_finished = _event_runs(stack, dag_id, "audit/event_runs/")

    first = [f"drop/e{i}.csv" for i in range(3)]
    for key in first:
        s3.put_object(Bucket=demo.BUCKET, Key=key, Body=f"id\n{key}\n".encode())
    _until("runs that load the three files", lambda: recorded() == first and all_finished(), 300)
    before = runs()
    assert {run["state"] for run in before} == {"success"}
    assert all(run["run_type"] == "asset_triggered" for run in before)

    stack.restart("triggerer")
    listed = _drop_listings(stack)
    _until("the restarted watcher to poll drop/ twice", lambda: _drop_listings(stack) >= listed + 2, 180)
    time.sleep(5)  # what those polls could have fired reaches the scheduler (2 s heartbeat)
    assert len(runs()) == len(before)  # nothing announced twice

    s3.put_object(Bucket=demo.BUCKET, Key="drop/late.csv", Body=b"id\nlate\n")
    put_at = time.time()
    _until("a run for the new file", lambda: "drop/late.csv" in recorded() and all_finished(), 300)
    after = runs()
    (late,) = [run for run in after if run["dag_run_id"] not in {r["dag_run_id"] for r in before}]
    window = 40
    listed = _drop_listings(stack)
    time.sleep(window)  # a measurement of requests at rest, not a wait for a condition
    at_rest = (_drop_listings(stack) - listed) * 3600 // window
    _record_figures(polling={"poll_interval_s": 10, "latency_s": round(_latency(late, put_at), 1),
                             "requests_per_hour_at_rest": at_rest})  # fmt: skip
    assert recorded() == sorted([*first, "drop/late.csv"])  # each file in exactly one run
    assert len(after) == len(before) + 1
    assert {run["state"] for run in after} == {"success"}
    assert _keys(s3, "drop/") == []  # every file loaded and archived
    assert len(_keys(s3, "loaded/")) == 4


@pytest.mark.timeout(900)
def test_notified_files_start_runs_within_seconds_each_once(stack: Stack) -> None:
    """example_event_driven_sqs: the bucket's notifications through SQS, in the triggerer;
    each file in exactly one run, a duplicate notification starts nothing, and the figures
    (latency from PutObject to the run, requests at rest) beside the polling watcher's."""
    dag_id = "example_event_driven_sqs"
    s3 = _s3(stack)
    sqs = boto3.client("sqs", endpoint_url=stack.s3_url, region_name=demo.REGION, aws_access_key_id="demo",
                       aws_secret_access_key="demo")  # fmt: skip
    queue_url = demo.inbox_queue_url(stack.s3_url)
    _wait_for_dag(stack, dag_id)
    api(stack.api_url, f"/api/v2/dags/{dag_id}", {"is_paused": False}, method="PATCH")
    _until("the queue watcher's first listing of inbox/", lambda: _drop_listings(stack, "inbox") >= 1, 180)

    recorded, runs, all_finished = _event_runs(stack, dag_id, "audit/event_runs_sqs/")

    latencies = []
    files = [f"inbox/n{i}.csv" for i in range(3)]
    for index, key in enumerate(files, 1):  # one at a time: each run's latency is one file's
        s3.put_object(Bucket=demo.BUCKET, Key=key, Body=f"id\n{key}\n".encode())
        put_at = time.time()
        _until(f"the run for {key}", lambda n=index: len(runs()) >= n and all_finished(), 300)  # type: ignore[misc]
        latencies.append(_latency(max(runs(), key=lambda r: r["queued_at"]), put_at))
    assert recorded() == files
    assert {run["state"] for run in runs()} == {"success"}
    assert all(run["run_type"] == "asset_triggered" for run in runs())
    assert _keys(s3, "inbox/") == []  # loaded and archived

    # The same notification again (S3 delivers at least once): confirmed as seen, no run.
    body = json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": demo.BUCKET}, "object": {"key": "inbox/n0.csv", "size": 9, "eTag": "x"}}}]})  # fmt: skip
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    _until("the duplicate to be consumed", lambda: _queue_empty(sqs, queue_url), 120)
    time.sleep(5)  # what it could have fired reaches the scheduler (2 s heartbeat)
    assert len(runs()) == len(files)

    window = 40
    posts = _queue_polls(stack)
    time.sleep(window)  # a measurement of requests at rest, not a wait for a condition
    _record_figures(sqs={"long_poll_s": 20, "reconcile_interval_s": 900,
                         "latency_s": [round(x, 1) for x in latencies],
                         "requests_per_hour_at_rest": (_queue_polls(stack) - posts) * 3600 // window,
                         "reconcile_listings_per_hour": 3600 // 900})  # fmt: skip
    assert max(latencies) < 10, latencies


def _queue_empty(sqs: Any, url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return all(found[name] == "0" for name in names)


def _queue_polls(stack: Stack) -> int:
    """POSTs to / the embedded server answered: SQS's JSON calls (the stack's connections
    assume no role at rest, so no STS call is among them)."""
    return sum(1 for line in _log_lines(stack) if '"POST / HTTP' in line)


#: A DAG served from S3 by the stack's S3ConnectDagBundle: each task returns the code's MARK,
#: one on each worker (their own queues), slowly enough to change the file meanwhile.
BUNDLE_DAG = """
import time
import pendulum
from airflow.sdk import DAG, task

MARK = "{mark}"

with DAG("s3c_bundle_probe", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False):

    @task(queue="worker1")
    def on_worker1() -> str:
        time.sleep(20)
        return MARK

    @task(queue="worker2")
    def on_worker2() -> str:
        time.sleep(20)
        return MARK

    on_worker1()
    on_worker2()
"""
NESTED_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("s3c_bundle_nested", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False):
    EmptyOperator(task_id="noop")
"""


@pytest.mark.timeout(900)
def test_dag_files_from_s3_reach_every_component_and_runs_keep_their_version(stack: Stack) -> None:
    """S3ConnectDagBundle on the stack: a DAG file added, changed at the same size and a nested
    one deleted in S3 reach the DAG processor and both workers (each with its own bundle
    folder, as on machines of their own); a run started before the change ends on its code."""
    s3 = _s3(stack)
    dag_id = "s3c_bundle_probe"

    def put(relative: str, body: str) -> None:
        s3.put_object(Bucket=demo.DAGS_BUCKET, Key=f"dags/{relative}", Body=body.encode())

    def bundle_versions() -> list[str]:
        found = api(stack.api_url, f"/api/v2/dags/{dag_id}/dagVersions")["dag_versions"]  # type: ignore[index]
        return [str(v["bundle_version"]) for v in found]

    def returned(run_id: str, task_id: str) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return api(stack.api_url, path)["value"]  # type: ignore[index]

    put("s3c_bundle_probe.py", BUNDLE_DAG.format(mark="old"))
    put("team/deep/s3c_bundle_nested.py", NESTED_DAG)
    _wait_for_dag(stack, dag_id)
    _wait_for_dag(stack, "s3c_bundle_nested")
    (first,) = _until("the first bundle version", bundle_versions, 60)
    api(stack.api_url, f"/api/v2/dags/{dag_id}", {"is_paused": False}, method="PATCH")
    before = _trigger_now(stack, dag_id)
    _until("both tasks of the first run to start", lambda: all(
        ti["state"] == "running" for ti in _tis(stack, dag_id, before)), 120)  # fmt: skip

    put("s3c_bundle_probe.py", BUNDLE_DAG.format(mark="new"))  # the same size, other bytes
    s3.delete_object(Bucket=demo.DAGS_BUCKET, Key="dags/team/deep/s3c_bundle_nested.py")
    # The DAG's structure is unchanged: Airflow moves its version's bundle pointer in place.
    second = _until("the DAG processor to parse the change",
                    lambda: next((v for v in bundle_versions() if v != first), None), 120)  # fmt: skip
    after = _trigger_now(stack, dag_id)
    assert _finished(stack, dag_id, before) == "success"
    assert _finished(stack, dag_id, after) == "success"
    # The run that began before the change ran the old code on both workers; the next, the new.
    assert [returned(before, t) for t in ("on_worker1", "on_worker2")] == ["old", "old"]
    assert [returned(after, t) for t in ("on_worker1", "on_worker2")] == ["new", "new"]
    for worker in ("worker1", "worker2"):
        versions_dir = stack.home / "bundles" / worker / "s3c-bundle" / "versions"
        assert (versions_dir / first / "team" / "deep" / "s3c_bundle_nested.py").exists()
        assert (versions_dir / second / "s3c_bundle_probe.py").read_text() == BUNDLE_DAG.format(mark="new")
        assert not (versions_dir / second / "team").exists()  # the nested deletion, at depth
    current = stack.home / "bundles" / "dag-processor" / "s3c-bundle" / "current"
    assert current.resolve().name == second
    assert not (current / "team").exists()
    _until("the deleted DAG to be marked stale",
           lambda: api(stack.api_url, "/api/v2/dags/s3c_bundle_nested")["is_stale"], 120)  # type: ignore[index]  # fmt: skip
