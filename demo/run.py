"""``make demo``: start an embedded S3 (moto's server on loopback), create a bucket, seed it,
run every example DAG with ``airflow dags test`` (one Airflow process for all of them) in a
throw-away AIRFLOW_HOME, and print what landed where.

The pieces are functions so the end-to-end tests run exactly what the demo runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from airflow_s3connect.iam import notification_setup

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "s3connect-demo"
PARTNER_BUCKET = "partner-dropbox"
#: A versioned bucket for DAG files (an S3ConnectDagBundle rebuilds older versions by version id).
DAGS_BUCKET = "s3connect-dags"
REGION = "eu-west-1"
#: Each example DAG and the logical date it is run for ("now": its data interval ends now).
DAGS = (
    "example_export",
    "example_import",
    "example_cross_account",
    "example_catalog",
    "example_event_driven",
    "example_event_driven_sqs",
    "example_taskflow",
)
#: The SQS queue the demo bucket notifies of ``inbox/`` (moto's account; the server's own URL).
INBOX_QUEUE = "s3connect-inbox"


@contextmanager
def embedded_s3(workdir: Path) -> Iterator[str]:
    """moto's S3/STS/SQS server on a free loopback port, for as long as the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "s3.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(url + "/moto-api/data.json", timeout=5).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"embedded S3 did not start: see {workdir / 's3.log'}") from None
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(10)


def s3_client(url: str) -> object:
    return boto3.client(
        "s3", endpoint_url=url, region_name=REGION, aws_access_key_id="demo", aws_secret_access_key="demo"
    )


def inbox_queue_url(url: str) -> str:
    return f"{url}/123456789012/{INBOX_QUEUE}"


def seed(url: str) -> None:
    """The buckets (one versioned, for DAG files), the files the import and catalog examples
    look for, and the queue the bucket notifies of new objects under ``inbox/`` (as
    ``s3connect notifications`` prints it)."""
    s3 = s3_client(url)
    for bucket in (BUCKET, PARTNER_BUCKET, DAGS_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})  # type: ignore[attr-defined]
    s3.put_bucket_versioning(Bucket=DAGS_BUCKET, VersioningConfiguration={"Status": "Enabled"})  # type: ignore[attr-defined]
    sqs = boto3.client("sqs", endpoint_url=url, region_name=REGION, aws_access_key_id="demo",
                       aws_secret_access_key="demo")  # fmt: skip
    arn = f"arn:aws:sqs:{REGION}:123456789012:{INBOX_QUEUE}"
    sqs.create_queue(QueueName=INBOX_QUEUE)
    setup = notification_setup(BUCKET, "inbox/", inbox_queue_url(url))
    sqs.set_queue_attributes(QueueUrl=inbox_queue_url(url), Attributes={"Policy": json.dumps(setup["queue_policy"])})
    (target,) = setup["bucket_notification_configuration"]["QueueConfigurations"]
    s3.put_bucket_notification_configuration(  # type: ignore[attr-defined]
        Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [{**target, "QueueArn": arn}]}
    )
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"incoming/orders-{i}.csv", Body=f"id,amount\n{i},{i * 10}\n".encode())  # type: ignore[attr-defined]
    s3.put_object(Bucket=PARTNER_BUCKET, Key="outbox/partner-report.csv", Body=b"id,total\n1,42\n")  # type: ignore[attr-defined]
    for day in ("20250114", "20250115", "20250201"):
        for zz in ("a", "b"):
            key = f"datasource/{day}/file_{day[:6]}_{zz}.csv"
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"col1;col2\n1;2\n")  # type: ignore[attr-defined]


def connections(url: str) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` for the demo: the default connection, a cross-account one, and one
    for the DAG files' bucket (``s3connect_dags``)."""
    common = {"endpoint_url": url, "sts_endpoint_url": url, "region_name": REGION}
    default = {
        "conn_type": "s3connect",
        "login": "demo",
        "password": "demo",
        "extra": {**common, "bucket": BUCKET, "tenant": "acme"},
    }
    partner = {
        "conn_type": "s3connect",
        "login": "demo",
        "password": "demo",
        "extra": {
            **common,
            "bucket": PARTNER_BUCKET,
            "auth_type": "assume_role",
            "role_arn": "arn:aws:iam::210987654321:role/partner-writer",
            "external_id": "acme-7f3a9c",
        },
    }
    dags = {**default, "extra": {**common, "bucket": DAGS_BUCKET}}
    return {
        "AIRFLOW_CONN_S3CONNECT_DEFAULT": json.dumps(default),
        "AIRFLOW_CONN_S3CONNECT_PARTNER": json.dumps(partner),
        "AIRFLOW_CONN_S3CONNECT_DAGS": json.dumps(dags),
    }


def airflow_env(home: Path, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AWS_EC2_METADATA_DISABLED": "true",
            **connections(url),
            "S3CONNECT_INBOX_QUEUE_URL": inbox_queue_url(url),
        }
    )
    return env


def airflow(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


#: ``airflow dags test`` for each DAG named, one after another in one Airflow process: the
#: command's own code (it parses the folder, runs the DAG, fails on a failed run), while
#: Airflow's start (its imports and the in-process execution API, ~13 s a process here) is
#: paid once instead of once per DAG. Each run's data interval ends when it starts, so it
#: holds the seeded files. A line of its own, ``argv[1]`` and the DAG's id, starts each
#: DAG's output; ``argv[1]`` alone ends the last.
DAGS_TEST = """
import datetime, sys, traceback
from airflow.cli import cli_parser

mark, parser = sys.argv[1], cli_parser.get_parser()
for dag_id in sys.argv[2:]:
    print("\\n" + mark + dag_id, flush=True)
    logical = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    args = parser.parse_args(["dags", "test", dag_id, logical.isoformat()])
    try:
        args.func(args)
    except SystemExit as exit:  # "DagRun failed"
        if exit.code not in (0, None):
            print(f"\\n{exit.code}: state=failed", flush=True)
    except Exception:  # the next DAG still runs
        traceback.print_exc()
        print("\\nstate=failed", flush=True)
print("\\n" + mark, flush=True)
"""


def dags_test(env: dict[str, str], dag_ids: Sequence[str], timeout: float = 600) -> Iterator[tuple[str, str]]:
    """``airflow dags test`` for each of ``dag_ids`` (:data:`DAGS_TEST`): each DAG and its
    output, as soon as it has run. Both streams are one pipe, so a DAG's lines stay in order;
    the mark carries a random part, so no DAG's output can pass for it. A DAG that runs past
    ``timeout`` seconds is killed with the process, and it and every DAG after it are told
    as failed; so is a process that ends on its own in the middle."""
    mark = f"::s3connect-demo {uuid.uuid4().hex} dag "
    timed_out = threading.Event()
    process = subprocess.Popen([sys.executable, "-c", DAGS_TEST, mark, *dag_ids], env={**env, "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip

    def expire() -> None:
        timed_out.set()
        process.kill()

    watchdog = threading.Timer(timeout, expire)
    try:
        watchdog.start()
        running, lines, finished = "", list[str](), 0
        assert process.stdout is not None
        for line in process.stdout:
            if not line.startswith(mark):
                lines.append(line)
                continue
            watchdog.cancel()
            if running:
                finished += 1
                yield running, "".join(lines)
            running, lines = line.removeprefix(mark).strip(), []
            if running:
                watchdog = threading.Timer(timeout, expire)
                watchdog.start()
        process.wait()
        if finished < len(dag_ids):
            why = (
                f"ran past {timeout:.0f} s and was killed" if timed_out.is_set() else f"exit code {process.returncode}"
            )
            yield dag_ids[finished], "".join(lines) + f"\n{why}: state=failed"
            for dag_id in dag_ids[finished + 1 :]:
                yield dag_id, f"not run: the process ended while running {dag_ids[finished]}: state=failed"
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout:
            process.stdout.close()


def succeeded(output: str) -> bool:
    """Whether a DAG's output (:func:`dags_test`) tells of a successful run and no failed one."""
    return "state=success" in output and "state=failed" not in output


WATCH_ONCE = """
import asyncio, json, sys
from airflow_s3connect.triggers import S3ObjectEventTrigger

async def first_event():
    events = S3ObjectEventTrigger(**json.loads(sys.argv[1])).run()
    try:
        return (await asyncio.wait_for(anext(events), 60)).payload
    finally:
        await events.aclose()

print(json.dumps(asyncio.run(first_event())))
"""


def watch_once(env: dict[str, str], url: str, prefix: str = "drop/") -> dict[str, Any]:
    """What example_event_driven's watchers announce when a file lands in ``prefix``
    (``inbox/``: the one reading the bucket's notifications): the trigger, run as the
    triggerer runs it (in its own process), until its first event."""
    options: dict[str, Any] = {"prefix": prefix, "pattern": "*.csv", "start": "all", "poll_interval": 1}
    if prefix == "inbox/":
        options["queue_url"] = inbox_queue_url(url)
    s3_client(url).put_object(Bucket=BUCKET, Key=f"{prefix}hello.csv", Body=b"id\n1\n")  # type: ignore[attr-defined]
    done = subprocess.run([sys.executable, "-c", WATCH_ONCE, json.dumps(options)], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"the {prefix} watcher failed: {done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def tree(url: str) -> str:
    """Every object of the demo buckets, as a tree with sizes."""
    s3 = s3_client(url)
    lines = []
    for bucket in (BUCKET, PARTNER_BUCKET):
        lines.append(f"s3://{bucket}/")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
        previous: list[str] = []
        for page in pages:
            for item in page.get("Contents", []):
                parts = item["Key"].split("/")
                common = 0
                while common < min(len(previous), len(parts) - 1) and previous[common] == parts[common]:
                    common += 1
                for depth in range(common, len(parts) - 1):
                    lines.append("  " * (depth + 1) + parts[depth] + "/")
                lines.append("  " * len(parts) + f"{parts[-1]}  ({item['Size']} B)")
                previous = parts[:-1]
    return "\n".join(lines)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="s3connect-demo-"))
    with embedded_s3(work / "s3") as url:
        print(f"Embedded S3 on {url}; AIRFLOW_HOME {work / 'airflow'}")
        seed(url)
        env = airflow_env(work / "airflow", url)
        migrated = airflow(env, "db", "migrate")
        if migrated.returncode:
            print(migrated.stdout[-3000:], migrated.stderr[-3000:])
            return 1
        failed = []
        print("Running each example DAG with airflow dags test (one Airflow process for all):")
        for dag_id, output in dags_test(env, DAGS):
            state = "ok" if succeeded(output) else "FAILED"
            print(f"  airflow dags test {dag_id}: {state}")
            if state != "ok":
                failed.append(dag_id)
                print(output[-4000:])
        for prefix in ("drop/", "inbox/"):
            event = watch_once(env, url, prefix)
            print(f"\nThe {prefix} watcher, after a file landed: {json.dumps(event)}")
        print("\nWhat landed where:\n" + tree(url))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
