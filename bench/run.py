"""Run the benchmark and write BENCHMARKS.md: ``python -m bench.run [--quick]``.

One moto server in its own process on loopback serves both sides. Each scenario runs ours
and the incumbent alternately (A B A B ...), each run a fresh process; the report gives
medians, the ratio of each pair (incumbent time / ours), requests and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench"
REGION = "eu-west-1"
MiB = 1024 * 1024


@dataclass
class Sizes:
    many: int
    large: int
    listed: int
    sensed: int
    sensor_hits: int
    pairs: int
    #: also time the incumbent's list_keys + download_file per key; it is the slower of its
    #: two ways (4.5x ours in every run so far), so quick mode keeps only sync_to_local_dir
    per_key_incumbent: bool = True


FULL = Sizes(many=2000, large=1024 * MiB, listed=100_000, sensed=50_000, sensor_hits=1000, pairs=3)
QUICK = Sizes(
    many=300, large=128 * MiB, listed=10_000, sensed=10_000, sensor_hits=1000, pairs=3, per_key_incumbent=False
)


@dataclass
class Scenario:
    name: str
    target: str
    sides: tuple[str, ...] = ("ours", "incumbent")
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def start_server(work: Path) -> tuple[str, subprocess.Popen[bytes]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(work / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen([sys.executable, "-m", "bench.server", str(port)], cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/moto-api/data.json", timeout=5).close()
            return url, process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def populate(url: str, prefix: str, count: int, size: int, suffix: str = ".dat", start: int = 0) -> None:
    query = f"bucket={BUCKET}&prefix={prefix}&count={count}&size={size}&suffix={suffix}&start={start}"
    urllib.request.urlopen(f"{url}/_bench/populate?{query}", timeout=3600).close()


def prepare(url: str, work: Path, sizes: Sizes, names: set[str]) -> None:
    """The data the scenarios ``names`` read; the listing's keys stay in the bucket throughout,
    so every scenario runs against a bucket of the full run's size."""
    s3 = boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id="b", aws_secret_access_key="b")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    populate(url, "many/", sizes.many, 16 * 1024)
    populate(url, "list/", sizes.listed, 0)
    populate(url, "sense/miss-", sizes.sensed - sizes.sensor_hits, 10, ".csv")
    populate(url, "sense/hit-", sizes.sensor_hits, 200, ".csv")
    if not names & {"get_large", "put_large", "put_many"}:
        return
    large = work / "put-large" / "object.bin"
    large.parent.mkdir(parents=True)
    with large.open("wb") as handle:
        block = os.urandom(MiB)
        for _ in range(sizes.large // MiB):
            handle.write(block)
    s3.upload_file(str(large), BUCKET, "large/object.bin")
    many = work / "put-many"
    many.mkdir()
    for i in range(sizes.many):
        (many / f"{i:06d}.dat").write_bytes(os.urandom(16 * 1024))


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (the server's: is it the bottleneck?)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(scenario: str, side: str, url: str, work: Path, size: int, server_pid: int) -> dict[str, Any]:
    before = cpu_seconds(server_pid)
    completed = subprocess.run(
        [sys.executable, "-m", "bench.child", scenario, side, url, str(work), str(size)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if completed.returncode:
        raise RuntimeError(f"{scenario}/{side} failed:\n{completed.stderr[-3000:]}")
    result = dict(json.loads(completed.stdout.strip().splitlines()[-1]))
    result["server_cpu"] = cpu_seconds(server_pid) - before  # start-up included: idle for the server
    for child in work.glob(f"{side.partition('-')[0]}-*"):  # what this run downloaded
        shutil.rmtree(child, ignore_errors=True)
    return result


def scenarios(sizes: Sizes) -> list[Scenario]:
    get_many = ("ours", "incumbent", "incumbent-sync", "ceiling", "ceiling-botocore")
    return [
        Scenario("get_many", ">= 4x faster", get_many if sizes.per_key_incumbent else get_many[:1] + get_many[2:]),
        Scenario("put_many", ">= 3x faster"),
        Scenario("get_large", ">= 1.2x faster, peak RSS <= 200 MiB", ("ours", "incumbent", "ceiling")),
        Scenario("put_large", ">= 1.2x faster, peak RSS <= 200 MiB"),
        Scenario("list_100k", "time <= 1.0x, 100 requests (full), RSS growth <= half"),
        Scenario("sensor_cost", "1 request per poke"),
    ]


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def report(all_scenarios: list[Scenario], sizes: Sizes, quick: bool, elapsed: float) -> str:
    lines = [
        "# Benchmarks: airflow-s3connect vs apache-airflow-providers-amazon",
        "",
        f"Mode: {'quick (`make bench-quick`)' if quick else 'full (`make bench`)'}; {sizes.pairs} alternating "
        "pairs per scenario, each run a fresh process; one moto server (own process, loopback) for both. "
        f"Run took {elapsed:.0f} s.",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        f"Sizes: get/put_many {sizes.many} x 16 KiB; large object {sizes.large // MiB} MiB; list {sizes.listed} keys; "
        f"sensor {sizes.sensor_hits} matching of {sizes.sensed} keys.",
        "",
        "Server CPU: CPU seconds the moto server spent during the run; close to the run's time means",
        "the server (one Python process) was the bottleneck, whatever the client did.",
        "",
        "| scenario | side | median s | ratio (incumbent / ours, per pair) | requests | server CPU s "
        "| peak RSS MiB | RSS growth MiB | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in all_scenarios:
        ours = scenario.results["ours"]
        for side, runs in scenario.results.items():
            ratios = ""
            if side != "ours" and not side.startswith("ceiling"):
                pairs = [theirs["seconds"] / mine["seconds"] for mine, theirs in zip(ours, runs, strict=False)]
                ratios = ", ".join(f"{r:.2f}" for r in pairs) + f" (median {statistics.median(pairs):.2f}x)"
            elif side.startswith("ceiling"):
                share = median(runs, "seconds") / median(ours, "seconds")
                fastest = min(
                    (median(r, "seconds"), name)
                    for name, r in scenario.results.items()
                    if name != "ours" and not name.startswith("ceiling")
                )
                ratios = (
                    f"ours reaches {share:.0%} of this ceiling's speed; the ceiling itself is "
                    f"{fastest[0] / median(runs, 'seconds'):.2f}x {fastest[1]}"
                )
            growth = median(runs, "peak_rss") - median(runs, "baseline_rss")
            target = scenario.target if side == "ours" else ""
            lines.append(
                f"| {scenario.name} | {side} | {median(runs, 'seconds'):.3f} | {ratios} "
                f"| {median(runs, 'requests'):.0f} | {median(runs, 'server_cpu'):.1f} "
                f"| {median(runs, 'peak_rss') / MiB:.0f} | {growth / MiB:.0f} "
                f"| {target} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="s3connect-bench-"))
    url, server = start_server(work)
    try:
        all_scenarios = [s for s in scenarios(sizes) if not args.only or s.name in args.only]
        prepare(url, work, sizes, {s.name for s in all_scenarios})
        for scenario in all_scenarios:
            for _ in range(sizes.pairs):
                for side in scenario.sides:
                    size = sizes.many if scenario.name == "get_many" else sizes.large
                    result = run_once(scenario.name, side, url, work, size, server.pid)
                    scenario.results.setdefault(side, []).append(result)
            print(
                f"{scenario.name}: "
                + ", ".join(
                    f"{side} {median(runs, 'seconds'):.3f}s/{median(runs, 'requests'):.0f} req"
                    for side, runs in scenario.results.items()
                ),
                flush=True,
            )
        text = report(all_scenarios, sizes, args.quick, time.monotonic() - started)
        Path(args.output).write_text(text)
        print(text)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
