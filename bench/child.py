"""One measured run in its own process: ``python -m bench.child SCENARIO SIDE URL WORKDIR SIZE``.

The server's keys and region come from ``BENCH_KEY``, ``BENCH_SECRET`` and ``BENCH_REGION``.
Prints one JSON line: seconds (the operation only, not start-up), requests (every HTTP
request botocore sent, counted at its HTTP session), cpu (user + system seconds of this
process during the operation, all threads: what the client itself costs, whatever the
server), objects, baseline and peak RSS (VmRSS before, VmHWM after). Every side gets the
same counting, the same server and the same data.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.httpsession

BUCKET = "bench"
KEY = os.environ.get("BENCH_KEY", "bench")
SECRET = os.environ.get("BENCH_SECRET", "bench")
REGION = os.environ.get("BENCH_REGION", "eu-west-1")
_requests = 0
_lock = threading.Lock()
_send = botocore.httpsession.URLLib3Session.send


def _count(**_: Any) -> None:
    global _requests
    with _lock:
        _requests += 1


def _counting_send(self: Any, request: Any) -> Any:
    _count()
    return _send(self, request)


botocore.httpsession.URLLib3Session.send = _counting_send  # type: ignore[method-assign]


def _rss(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------- ours
def _ours_client(url: str, **fields: Any) -> Any:
    from airflow_s3connect.client import build_s3_client, build_session
    from airflow_s3connect.connection import parse_settings
    from airflow_s3connect.native import engine_of

    fields = {"endpoint_url": url, "region_name": REGION, "addressing_style": "path", **fields}
    settings = parse_settings("bench", KEY, SECRET, fields)
    client = build_s3_client(settings, build_session(settings))
    if (engine := engine_of(client)) is not None:  # the native engine's requests, counted as botocore's
        engine.events.register("before-send.s3", _count)
    return client


def _plain_client(url: str, pool: int = 8) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=url, region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
        config=Config(max_pool_connections=pool, s3={"addressing_style": "path"}),
    )  # fmt: skip


def _keys(url: str, prefix: str) -> list[str]:
    """The keys under ``prefix``, listed before the clock starts (scenarios that name keys)."""
    pages = _plain_client(url).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def ours(scenario: str, url: str, work: Path, size: int, variant: str = "") -> Callable[[], Any]:
    """``variant="sdk"``: the connection's checksum_mode ``sdk`` (botocore's CRC32 only), to
    show what the default ``header`` mode's MD5 of every body costs; ``variant="botocore"``:
    the connection's engine ``botocore`` (every request through botocore, as before the
    native engine)."""
    from airflow_s3connect.copies import Copier, CopyTask
    from airflow_s3connect.deletes import BatchDelete
    from airflow_s3connect.downloads import Downloader, DownloadTask
    from airflow_s3connect.events import ObjectStream
    from airflow_s3connect.listing import Lister, ListQuery
    from airflow_s3connect.local import LocalTree
    from airflow_s3connect.objects import ObjectInfo, TransferConfig
    from airflow_s3connect.uploads import Uploader
    from airflow_s3connect.watch import Watcher, WatchSpec
    from airflow_s3connect.writes import WriteOptions

    fields = {"engine": variant} if variant == "botocore" else {"checksum_mode": variant} if variant else {}
    client = _ours_client(url, **fields)
    config = TransferConfig()
    out = work / f"ours-{os.getpid()}"

    def get_prefix(prefix: str) -> Any:
        tree = LocalTree(out)
        tasks = (
            DownloadTask(o.key, tree.path_for(o.key, prefix), o.size, o.etag, o.last_modified)
            for o in Lister(client, BUCKET, ListQuery(base=prefix))
            if isinstance(o, ObjectInfo)
        )
        return sum(1 for _ in Downloader(client, BUCKET, config).download(tasks))

    def put_dir(source: Path, prefix: str) -> Any:
        with Uploader(client, BUCKET, config, WriteOptions()) as up:
            for path in sorted(source.iterdir()):
                up.put_file(path, prefix + path.name)
            return sum(1 for _ in up.results())

    def copy_prefix(prefix: str, target: str) -> int:
        tasks = [
            CopyTask(o, target + o.key[len(prefix) :])
            for o in Lister(client, BUCKET, ListQuery(base=prefix))
            if isinstance(o, ObjectInfo)
        ]
        copier = Copier(client, BUCKET, client, BUCKET, config, WriteOptions(), server_side=True)
        return sum(1 for _ in copier.run(tasks))

    if scenario == "delete_10k":
        keys = _keys(url, "delete/")
        return lambda: sum(1 for _ in BatchDelete(client, BUCKET).run(keys))
    if scenario == "watch_cost":
        stream = ObjectStream(client, BUCKET, "watch/", start="now")
        stream.poll()  # the first poll of a start: everything listed is taken as seen
        return lambda: len(stream.poll()) + 1  # one poll; nothing new is 0 objects, counted as one poll

    runs: dict[str, Callable[[], Any]] = {
        "get_many": lambda: get_prefix("many/"),
        "copy_many": lambda: copy_prefix("many/", f"copy-ours-{os.getpid()}/"),
        "put_many": lambda: put_dir(work / "put-many", f"put-ours-{os.getpid()}/"),
        "get_large": lambda: len(
            list(Downloader(client, BUCKET, config).download([DownloadTask("large/object.bin", out / "object.bin")]))
        ),
        "put_large": lambda: put_dir(work / "put-large", f"large-ours-{os.getpid()}/"),
        "list_100k": lambda: sum(1 for _ in Lister(client, BUCKET, ListQuery(base="list/"))),
        "sensor_cost": lambda: len(
            Watcher(WatchSpec(bucket=BUCKET, base="sense/", pattern="hit-*.csv", min_size=100)).poke(client, 0) or []
        ),
    }
    return runs[scenario]


# --------------------------------------------------------------------------- the incumbent
def incumbent(scenario: str, url: str, work: Path, size: int, variant: str) -> Callable[[], Any]:
    os.environ["AIRFLOW_CONN_AWS_BENCH"] = json.dumps(
        {
            "conn_type": "aws",
            "login": KEY,
            "password": SECRET,
            "extra": {
                "endpoint_url": url,
                "region_name": REGION,
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            },
        }
    )
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="aws_bench")
    out = work / f"incumbent-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)

    def download_each(prefix: str) -> int:
        keys = hook.list_keys(BUCKET, prefix=prefix)
        for key in keys:
            hook.download_file(key, BUCKET, str(out), preserve_file_name=True, use_autogenerated_subdir=False)
        return len(keys)

    def load_each(source: Path, prefix: str) -> int:
        files = sorted(source.iterdir())
        for path in files:
            hook.load_file(str(path), prefix + path.name, BUCKET)
        return len(files)

    def sensor_poke() -> Any:
        from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor

        sensor = S3KeySensor(
            task_id="sense",
            bucket_name=BUCKET,
            bucket_key="sense/hit-*.csv",
            wildcard_match=True,
            aws_conn_id="aws_bench",
            metadata_keys=["Size"],
            check_fn=lambda files: all(f.get("Size", 0) >= 100 for f in files),
        )
        return sensor.poke(context={})

    def copy_each(prefix: str, target: str) -> int:
        keys = hook.list_keys(BUCKET, prefix=prefix)
        for key in keys:
            hook.copy_object(key, target + key[len(prefix) :], source_bucket_name=BUCKET, dest_bucket_name=BUCKET)
        return len(keys)

    if scenario == "delete_10k":
        keys = _keys(url, "delete/")
        return lambda: hook.delete_objects(BUCKET, keys) or len(keys)

    runs: dict[str, Callable[[], Any]] = {
        "get_many": lambda: (
            hook.sync_to_local_dir(BUCKET, out, s3_prefix="many/") if variant == "sync" else download_each("many/")
        ),
        "copy_many": lambda: copy_each("many/", f"copy-incumbent-{os.getpid()}/"),
        "put_many": lambda: load_each(work / "put-many", f"put-incumbent-{os.getpid()}/"),
        "get_large": lambda: hook.download_file(
            "large/object.bin", BUCKET, str(out), preserve_file_name=True, use_autogenerated_subdir=False
        ),
        "put_large": lambda: load_each(work / "put-large", f"large-incumbent-{os.getpid()}/"),
        "list_100k": lambda: len(hook.list_keys(BUCKET, prefix="list/")),
        "sensor_cost": sensor_poke,
    }
    return runs[scenario]


# --------------------------------------------------------------------------- the ceilings
def ceiling(scenario: str, url: str, size: int, variant: str) -> Callable[[], Any]:
    """What a plain boto3 client does at best on 8 threads, the keys known in advance (no
    listing) and no files: the floor of any client built on botocore, ours included.

    get_many: signed GETs of every object under many/, bodies discarded (``variant="files"``:
    each written to a file, plainly: no temporary file, rename or timestamps); get_large: parallel
    8 MiB ranged GETs of the object, discarded; put_many: PutObject of 16 KiB from memory;
    put_large: one multipart upload of 8 MiB parts from memory. ``variant="files"`` of get_large
    writes each range at its offset of one file. ``variant="raw"`` (get_many
    and get_large on moto only, which does not check signatures) is unsigned urllib3.
    """
    if variant == "raw":
        return _raw_ceiling(scenario, url, size)
    s3 = _plain_client(url)
    if variant == "files":  # each body written to its file: the floor of a client that writes files
        out = Path(os.environ["BENCH_WORK"]) / f"ceiling-{os.getpid()}"
        out.mkdir(parents=True, exist_ok=True)
        if scenario == "get_large":
            return lambda: _ranges_to_file(s3, out / "object.bin", size)
        if scenario == "put_many":  # each file read and sent with one PutObject
            files = sorted((Path(os.environ["BENCH_WORK"]) / "put-many").iterdir())
            prefix = f"put-ceiling-{os.getpid()}/"
            return lambda: sum(
                ThreadPoolExecutor(8).map(
                    lambda path: s3.put_object(Bucket=BUCKET, Key=prefix + path.name, Body=path.read_bytes()) and 1,
                    files,
                )
            )

        def get_to_file(index: int) -> int:
            body = s3.get_object(Bucket=BUCKET, Key=f"many/{index:06d}.dat")["Body"].read()
            (out / f"{index:06d}.dat").write_bytes(body)
            return 1

        return lambda: sum(ThreadPoolExecutor(8).map(get_to_file, range(size)))
    chunk = 8 * 1024 * 1024

    def parallel(function: Callable[[int], int], items: Any) -> int:
        with ThreadPoolExecutor(8) as executor:
            return sum(executor.map(function, items))

    if scenario == "get_many":
        return lambda: parallel(
            lambda i: len(s3.get_object(Bucket=BUCKET, Key=f"many/{i:06d}.dat")["Body"].read()), range(size)
        )
    if scenario == "put_many":
        body = os.urandom(16 * 1024)
        prefix = f"put-ceiling-{os.getpid()}/"
        return lambda: parallel(
            lambda i: s3.put_object(Bucket=BUCKET, Key=f"{prefix}{i:06d}.dat", Body=body) and 1, range(size)
        )
    if scenario == "get_large":

        def fetch(start: int) -> int:
            end = min(start + chunk, size) - 1
            body = s3.get_object(Bucket=BUCKET, Key="large/object.bin", Range=f"bytes={start}-{end}")["Body"]
            return sum(len(block) for block in body.iter_chunks(1 << 20))

        return lambda: parallel(fetch, range(0, size, chunk))
    assert scenario == "put_large"
    block = os.urandom(chunk)

    def upload() -> int:
        key = f"large-ceiling-{os.getpid()}/object.bin"
        upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]

        def part(number: int) -> int:
            s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=block)
            return number

        numbers = range(1, size // chunk + 1)
        with ThreadPoolExecutor(8) as executor:
            done = list(executor.map(part, numbers))
        listed = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
        parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listed]
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        return len(done)

    return upload


def _ranges_to_file(s3: Any, path: Path, size: int) -> int:
    """Parallel 8 MiB ranged GETs, each written at its offset of one file."""
    chunk = 8 * 1024 * 1024
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.ftruncate(fd, size)

    def fetch(start: int) -> int:
        end = min(start + chunk, size) - 1
        body = s3.get_object(Bucket=BUCKET, Key="large/object.bin", Range=f"bytes={start}-{end}")["Body"]
        position = start
        for block in body.iter_chunks(256 * 1024):
            os.pwrite(fd, block, position)
            position += len(block)
        return position - start

    try:
        with ThreadPoolExecutor(8) as executor:
            return sum(executor.map(fetch, range(0, size, chunk)))
    finally:
        os.close(fd)


def _raw_ceiling(scenario: str, url: str, size: int) -> Callable[[], Any]:
    import urllib3

    pool = urllib3.PoolManager(maxsize=8)
    chunk = 8 * 1024 * 1024

    if scenario == "get_many":

        def get(index: int) -> int:
            return len(pool.request("GET", f"{url}/{BUCKET}/many/{index:06d}.dat").data)

        def run_many() -> int:
            with ThreadPoolExecutor(8) as executor:
                return sum(executor.map(get, range(size)))

        return run_many

    def fetch(start: int) -> int:
        end = min(start + chunk, size) - 1
        response = pool.request(
            "GET", f"{url}/{BUCKET}/large/object.bin", headers={"Range": f"bytes={start}-{end}"}, preload_content=False
        )
        total = sum(len(block) for block in response.stream(1 << 20))
        response.release_conn()
        return total

    def run() -> int:
        with ThreadPoolExecutor(8) as executor:
            return sum(executor.map(fetch, range(0, size, chunk)))

    return run


# --------------------------------------------------------------------------- s3transfer's downloads
def s3transfer_downloads(url: str, work: Path) -> Callable[[], Any]:
    """get_many through s3transfer's TransferManager, given each object's size and ETag from
    the listing (so it sends no HEAD): what the Downloader would be if it were s3transfer's."""
    from s3transfer.manager import TransferConfig, TransferManager
    from s3transfer.subscribers import BaseSubscriber

    client = _ours_client(url)
    out = work / f"s3transfer-{os.getpid()}"

    class Known(BaseSubscriber):  # type: ignore[misc]
        def __init__(self, size: int, etag: str) -> None:
            self.size, self.etag = size, etag

        def on_queued(self, future: Any, **kwargs: Any) -> None:
            future.meta.provide_transfer_size(self.size)
            future.meta.provide_object_etag(self.etag)

    def run() -> int:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="many/")
        listed = [item for page in pages for item in page.get("Contents", [])]
        config = TransferConfig(max_request_concurrency=8, multipart_threshold=8 * 1024 * 1024)
        with TransferManager(client, config) as manager:
            futures = []
            for item in listed:
                target = out / item["Key"][len("many/") :]
                target.parent.mkdir(parents=True, exist_ok=True)
                futures.append(
                    manager.download(BUCKET, item["Key"], str(target), subscribers=[Known(item["Size"], item["ETag"])])
                )
            for future in futures:
                future.result()
        return len(listed)

    return run


# --------------------------------------------------------------------------- the native tools
PEERS = ("s5cmd", "rclone", "obstore")


def peer(scenario: str, side: str, url: str, work: Path) -> Callable[[], Any]:
    """What users who need speed call instead of a provider: s5cmd or rclone from a
    BashOperator (a process each run: its start is part of its time, as it is in a task), or
    obstore from a ``@task`` (8 threads, each object written to its file, as a user would).
    Each is given the same keys, endpoint and files; the process's CPU and peak RSS are
    the tool's own (``os.times`` and ``getrusage`` of the children)."""
    out = work / f"{side}-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    written = f"{'large' if scenario == 'put_large' else 'put'}-{side}-{os.getpid()}/"
    if side == "obstore":
        return _obstore(scenario, url, work, out, written)
    binary = str(Path(sys.executable).parent / side)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": REGION}
    if side == "s5cmd":
        base = [binary, "--endpoint-url", url]
        source = {
            "get_many": f"s3://{BUCKET}/many/*",
            "get_large": f"s3://{BUCKET}/large/object.bin",
            "put_many": str(work / "put-many") + "/*",
            "put_large": str(work / "put-large" / "object.bin"),
        }
        target = str(out) + "/" if scenario.startswith("get") else f"s3://{BUCKET}/{written}"
        command = [*base, "cp", source[scenario], target]
    else:
        env.update(
            RCLONE_S3_PROVIDER="Other",
            RCLONE_S3_ENDPOINT=url,
            RCLONE_S3_ACCESS_KEY_ID=KEY,
            RCLONE_S3_SECRET_ACCESS_KEY=SECRET,
            RCLONE_S3_REGION=REGION,
            RCLONE_CONFIG="/dev/null",
            RCLONE_S3_NO_CHECK_BUCKET="true",  # the bucket exists: no CreateBucket first
        )
        source = {
            "get_many": f":s3:{BUCKET}/many",
            "get_large": f":s3:{BUCKET}/large",
            "put_many": str(work / "put-many"),
            "put_large": str(work / "put-large"),
        }
        target = str(out) if scenario.startswith("get") else f":s3:{BUCKET}/{written}"
        command = [binary, "copy", "--transfers", "8", "--no-check-dest", source[scenario], target]

    def run() -> int:
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return 1

    return run


def _obstore(scenario: str, url: str, work: Path, out: Path, written: str) -> Callable[[], Any]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(BUCKET, endpoint=url, access_key_id=KEY, secret_access_key=SECRET, region=REGION,
                    client_options={"allow_http": True}, virtual_hosted_style_request=False)  # fmt: skip

    def get_to_file(key: str) -> int:
        target = out / key.rpartition("/")[2]
        with open(target, "wb") as handle:
            for chunk in obstore.get(store, key).stream():
                handle.write(chunk)
        return 1

    def put_file(path: Path) -> int:
        obstore.put(store, written + path.name, path)
        return 1

    def parallel(function: Callable[[Any], int], items: Any) -> int:
        with ThreadPoolExecutor(8) as executor:
            return sum(executor.map(function, items))

    runs: dict[str, Callable[[], Any]] = {
        "get_many": lambda: parallel(get_to_file, [m["path"] for b in obstore.list(store, prefix="many/") for m in b]),
        "put_many": lambda: parallel(put_file, sorted((work / "put-many").iterdir())),
        "get_large": lambda: get_to_file("large/object.bin"),
        "put_large": lambda: put_file(work / "put-large" / "object.bin"),
    }
    return runs[scenario]


def main() -> None:
    scenario, side, url, work, size = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
    os.environ["BENCH_WORK"] = str(work)
    if side.startswith("ours"):
        run = ours(scenario, url, work, size, variant=side.partition("-")[2])
    elif side in PEERS:
        run = peer(scenario, side, url, work)
    elif side == "s3transfer":
        run = s3transfer_downloads(url, work)
    elif side.startswith("ceiling"):
        run = ceiling(scenario, url, size, variant=side.partition("-")[2])
    else:
        run = incumbent(scenario, url, work, size, variant=side.partition("-")[2])
    global _requests
    _requests = 0
    baseline = _rss("VmRSS")
    cpu_before = os.times()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    peak = _rss("VmHWM")
    if side in ("s5cmd", "rclone"):  # the tool's process: its own CPU and peak RSS
        cpu = (cpu_after.children_user - cpu_before.children_user) + (
            cpu_after.children_system - cpu_before.children_system
        )
        baseline, peak = 0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "requests": _requests,
                "cpu": cpu,
                "objects": result if isinstance(result, int) and not isinstance(result, bool) else None,
                "baseline_rss": baseline,
                "peak_rss": peak,
            }
        )
    )


if __name__ == "__main__":
    main()
