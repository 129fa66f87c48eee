"""16 runs in parallel processes (as on 16 Celery workers or pods) write the same keys with
overwrite off: for each key exactly one wins, no write is lost or duplicated, and every
loser is told why. Small objects (PutObject) and a multipart object (the condition rides on
CompleteMultipartUpload) alike; the losers' multipart uploads are aborted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer

RUNS = 16
KEYS = ["race/a.csv", "race/b.csv", "race/c.csv", "race/big.bin"]
BIG = 6 * 1024 * 1024

WRITER = """
import io, json, sys
from airflow_s3connect.client import build_s3_client, build_session
from airflow_s3connect.connection import parse_settings
from airflow_s3connect.errors import S3ConnectError
from airflow_s3connect.objects import MiB, TransferConfig
from airflow_s3connect.uploads import Uploader
from airflow_s3connect.writes import WriteOptions

url, run, keys, big = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
settings = parse_settings(f"run{run}", "AKIAEXAMPLE", "secret", {"endpoint_url": url, "region_name": "REGION"})
client = build_s3_client(settings, build_session(settings))
config = TransferConfig(max_concurrency=2, chunk_size=5 * MiB, multipart_threshold=5 * MiB)
print("ready", flush=True)
sys.stdin.readline()  # every run starts writing at once
outcome = {}
for key in keys:
    body = f"run {run} wrote {key}\\n".encode()
    if key.endswith(".bin"):
        body = body + bytes([run]) * (big - len(body))
    try:
        with Uploader(client, "BUCKET", config, WriteOptions(overwrite=False)) as up:
            up.put_stream(io.BytesIO(body), key)
            list(up.results())
        outcome[key] = "won"
    except S3ConnectError as exc:
        outcome[key] = f"{type(exc).__name__}: {exc}"
print(json.dumps(outcome), flush=True)
""".replace("REGION", REGION).replace("BUCKET", BUCKET)


def test_parallel_runs_with_overwrite_off_have_one_winner_per_key(moto: MotoServer, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, moto.url, str(run), json.dumps(KEYS), str(BIG)],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in range(RUNS)
    ]
    for process in runs:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
    for process in runs:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outcomes = []
    for process in runs:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))

    admin = moto.admin_client("s3")
    for key in KEYS:
        winners = [run for run, outcome in enumerate(outcomes) if outcome[key] == "won"]
        assert len(winners) == 1, f"{key}: winners {winners}"
        losers = [outcome[key] for outcome in outcomes if outcome[key] != "won"]
        assert len(losers) == RUNS - 1
        for message in losers:
            assert message.startswith(f"KeyExistsError: s3://{BUCKET}/{key} already exists and overwrite is off"), (
                message
            )
        stored = admin.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert stored.startswith(f"run {winners[0]} wrote {key}\n".encode())  # the winner's bytes, whole
        assert len(stored) == (BIG if key.endswith(".bin") else len(f"run {winners[0]} wrote {key}\n"))
    listed = admin.list_objects_v2(Bucket=BUCKET, Prefix="race/")
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(KEYS)  # nothing else, nothing twice
    assert admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
