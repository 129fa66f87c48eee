"""A 256 MiB object up and down through the engine, in a child process whose peak RSS is read.

The child measures its resident set after imports and client set-up, then its high-water
mark (VmHWM) after the upload and after the download; memory must stay bounded by the
parts in flight (concurrency x chunk), far below the object's size.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer

SIZE = 256 * 1024 * 1024
#: Bound on RSS growth: 8 parts of 8 MiB in flight for the upload, plus interpreter slack.
MAX_GROWTH = 96 * 1024 * 1024

CHILD = r"""
import json, sys
from pathlib import Path

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

from airflow_s3connect.client import build_s3_client, build_session
from airflow_s3connect.connection import parse_settings
from airflow_s3connect.downloads import Downloader, DownloadTask
from airflow_s3connect.uploads import Uploader
from airflow_s3connect.writes import WriteOptions
from airflow_s3connect.objects import TransferConfig

url, bucket, region, source, target = sys.argv[1:6]
settings = parse_settings("mem", "AKIAEXAMPLE", "secret", {"endpoint_url": url, "region_name": region})
client = build_s3_client(settings, build_session(settings))
client.list_objects_v2(Bucket=bucket, MaxKeys=1)  # warm the client: its models and connection pool
config = TransferConfig(max_concurrency=8)
baseline = rss("VmRSS")
with Uploader(client, bucket, config, WriteOptions()) as up:
    up.put_file(Path(source), "mem/big.bin")
    uploaded = list(up.results())[0]
after_put = rss("VmHWM")
done = list(Downloader(client, bucket, config).download([DownloadTask("mem/big.bin", Path(target))]))
after_get = rss("VmHWM")
print(json.dumps({"baseline": baseline, "after_put": after_put, "after_get": after_get,
                  "etag": uploaded.etag, "size": done[0].size}))
"""


def test_256_mib_put_and_get_in_bounded_memory(moto: MotoServer, tmp_path: Path) -> None:
    source, target = tmp_path / "big.bin", tmp_path / "out" / "big.bin"
    digest = hashlib.sha256()
    with source.open("wb") as handle:
        block = bytes(range(256)) * 4096  # 1 MiB, varied per block below
        for i in range(SIZE // len(block)):
            chunk = i.to_bytes(4, "big") + block[4:]
            digest.update(chunk)
            handle.write(chunk)
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, moto.url, BUCKET, REGION, str(source), str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    print(report)
    assert report["size"] == SIZE
    assert report["etag"].endswith('-32"')  # 32 parts of 8 MiB
    put_growth = report["after_put"] - report["baseline"]
    get_growth = report["after_get"] - report["baseline"]
    assert put_growth < MAX_GROWTH, f"upload grew RSS by {put_growth / 2**20:.0f} MiB"
    assert get_growth < MAX_GROWTH, f"download grew RSS by {get_growth / 2**20:.0f} MiB"
    check = hashlib.sha256()
    with target.open("rb") as handle:
        while block := handle.read(1 << 20):
            check.update(block)
    assert check.hexdigest() == digest.hexdigest()


RECORDS_CHILD = r"""
import datetime, json, sys, tempfile
from pathlib import Path
from airflow_s3connect.formats import encode_records, get_format, write_parquet

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

ROWS = int(sys.argv[2])
def records():
    day = datetime.date(2025, 1, 14)
    for i in range(ROWS):
        yield {"id": i, "name": f"customer {i}", "amount": i * 0.25, "day": day, "active": i % 2 == 0}

fmt = sys.argv[1]
import pyarrow.compute, pyarrow.ipc, pyarrow.parquet  # imported before the baseline: not what grows with rows
baseline = rss("VmRSS")
if fmt == "parquet":
    with tempfile.TemporaryDirectory() as scratch:
        written = write_parquet(records(), Path(scratch) / "out.parquet")
        size = (Path(scratch) / "out.parquet").stat().st_size
else:
    size = sum(len(chunk) for chunk in encode_records(records(), get_format(fmt)))
    written = ROWS
print(json.dumps({"baseline": baseline, "peak": rss("VmHWM"), "rows": written, "bytes": size}))
"""


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"])
def test_a_million_records_in_bounded_memory(fmt: str) -> None:
    """Peak RSS of an export of 1,000,000 records is that of 100,000: memory does not grow
    with the rows (parquet's writer has a fixed cost of its own, about 100 MiB)."""
    reports = {}
    for rows in (100_000, 1_000_000):
        completed = subprocess.run(
            [sys.executable, "-c", RECORDS_CHILD, fmt, str(rows)], capture_output=True, text=True, timeout=600,
            check=True,
        )  # fmt: skip
        reports[rows] = json.loads(completed.stdout.strip().splitlines()[-1])
        assert reports[rows]["rows"] == rows
    growth = {rows: (r["peak"] - r["baseline"]) / 2**20 for rows, r in reports.items()}
    print(fmt, growth, reports[1_000_000]["bytes"] / 2**20)
    assert growth[1_000_000] < 128, f"{fmt}: RSS grew by {growth[1_000_000]:.0f} MiB"
    # Ten times the rows held in memory would add hundreds of MiB; allocator noise is a few MiB.
    assert growth[1_000_000] - growth[100_000] < 32, f"{fmt}: memory grows with the rows: {growth}"
