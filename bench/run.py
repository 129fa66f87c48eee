"""Run the benchmark and write BENCHMARKS.md: ``python -m bench.run [--quick] [--servers rgw moto]``.

Every scenario runs on Ceph's RADOS Gateway (C++, keep-alive: a server that is rarely the
bottleneck) and on moto (one Python process; what many users test with). On each server,
the sides of a scenario run alternately (A B C A B C ...), each run a fresh process; the
report gives medians, the ratio of each pair against ours, requests, the client's own CPU
per object, the server's CPU, and peak RSS; then each target, met or not, from the figures.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
#: The native tools users call instead (see bench.child.peer): s5cmd, rclone, obstore.
PEERS = ("s5cmd", "rclone", "obstore")
BUCKET = "bench"
MiB = 1024 * 1024


@dataclass
class Sizes:
    many: int
    large: int
    listed: int
    sensed: int
    sensor_hits: int
    deleted: int
    pairs: int
    #: also time the incumbent's list_keys + download_file per key; it is the slower of its
    #: two ways (4.5x ours in every run so far), so quick mode keeps only sync_to_local_dir
    per_key_incumbent: bool = True


FULL = Sizes(many=2000, large=1024 * MiB, listed=100_000, sensed=50_000, sensor_hits=1000, deleted=10_000, pairs=3)
QUICK = Sizes(
    many=300, large=128 * MiB, listed=10_000, sensed=10_000, sensor_hits=1000, deleted=2_000, pairs=3,
    per_key_incumbent=False,
)  # fmt: skip
WATCHED = 500


@dataclass
class Scenario:
    name: str
    target: str
    sides: tuple[str, ...] = ("ours", "incumbent")
    #: objects one run handles: the client's CPU per object is its CPU / this (0: not per object)
    objects: int = 0
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# --------------------------------------------------------------------------- servers
@dataclass
class Server:
    """A running S3 server: where it is, its keys, and how much CPU it has used."""

    name: str
    url: str
    key: str
    secret: str
    region: str
    pids: Callable[[], list[int]]
    stop: Callable[[], None]
    #: fills a prefix with ``count`` objects of ``size`` bytes, faster than the clients would
    fill: Callable[[str, int, int, str], None]

    def admin(self, pool: int = 32) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.url, region_name=self.region, aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            config=Config(max_pool_connections=pool, s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required"),
        )  # fmt: skip

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())


def start_moto(work: Path) -> Server:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(work / "moto.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen([sys.executable, "-m", "bench.server", str(port)], cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/moto-api/data.json", timeout=5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise RuntimeError("moto server did not start")

    def fill(prefix: str, count: int, size: int, suffix: str) -> None:
        query = f"bucket={BUCKET}&prefix={prefix}&count={count}&size={size}&suffix={suffix}"
        urllib.request.urlopen(f"{url}/_bench/populate?{query}", timeout=3600).close()

    def stop() -> None:
        process.terminate()
        process.wait(30)

    return Server("moto", url, "bench", "bench", "eu-west-1", lambda: [process.pid], stop, fill)


def start_rgw(work: Path, sizes: Sizes) -> Server:
    from tests.support.rgw_server import RgwServer

    # RAM for the data: the large object, each side's uploads of it until collected, the rest.
    rgw = RgwServer.start(work / "rgw", memstore_bytes=max(4 << 30, 6 * sizes.large))
    server = Server(
        "rgw", rgw.http_url, rgw.access_key, rgw.secret_key, "us-east-1",
        lambda: [process.pid for process in rgw.processes], rgw.stop, lambda *a: None,
    )  # fmt: skip

    def fill(prefix: str, count: int, size: int, suffix: str) -> None:
        s3, body = server.admin(), b"x" * size
        with ThreadPoolExecutor(32) as executor:
            list(executor.map(lambda i: s3.put_object(Bucket=BUCKET, Key=f"{prefix}{i:06d}{suffix}", Body=body),
                              range(count)))  # fmt: skip

    server.fill = fill
    return server


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- data
def prepare(server: Server, work: Path, sizes: Sizes, names: set[str]) -> None:
    """The data the scenarios ``names`` read; the listing's keys stay in the bucket throughout,
    so every scenario runs against a bucket of the full run's size."""
    s3 = server.admin()
    if server.region == "us-east-1":
        s3.create_bucket(Bucket=BUCKET)
    else:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": server.region})
    server.fill("many/", sizes.many, 16 * 1024, ".dat")
    if "list_100k" in names:
        server.fill("list/", sizes.listed, 0, ".dat")
    if "sensor_cost" in names:
        server.fill("sense/miss-", sizes.sensed - sizes.sensor_hits, 10, ".csv")
        server.fill("sense/hit-", sizes.sensor_hits, 200, ".csv")
    if "watch_cost" in names:
        server.fill("watch/", WATCHED, 10, ".csv")
    if names & {"get_large", "put_large"}:
        large = work / "put-large" / "object.bin"
        large.parent.mkdir(parents=True, exist_ok=True)
        with large.open("wb") as handle:
            block = os.urandom(MiB)
            for _ in range(sizes.large // MiB):
                handle.write(block)
        s3.upload_file(str(large), BUCKET, "large/object.bin")
    if "put_many" in names:
        many = work / "put-many"
        many.mkdir(exist_ok=True)
        for i in range(sizes.many):
            (many / f"{i:06d}.dat").write_bytes(os.urandom(16 * 1024))


def remove_written(server: Server) -> None:
    """Delete what a run wrote (uploads, copies): the next run starts from the same bucket,
    and RGW's memory holds only the data the scenarios read."""
    s3 = server.admin()
    for prefix in ("put-", "large-", "copy-"):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        keys = [{"Key": item["Key"]} for page in pages for item in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys[start : start + 1000], "Quiet": True})


def run_once(server: Server, scenario: str, side: str, work: Path, size: int) -> dict[str, Any]:
    before = server.cpu()
    env = {**os.environ, "BENCH_KEY": server.key, "BENCH_SECRET": server.secret, "BENCH_REGION": server.region}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.child", scenario, side, server.url, str(work), str(size)],
        cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False, env=env,
    )  # fmt: skip
    if completed.returncode:
        raise RuntimeError(f"{server.name} {scenario}/{side} failed:\n{completed.stderr[-3000:]}")
    result = dict(json.loads(completed.stdout.strip().splitlines()[-1]))
    result["server_cpu"] = server.cpu() - before  # the child's start-up included: idle for the server
    for child in work.glob(f"{side.partition('-')[0]}-*"):  # what this run downloaded
        shutil.rmtree(child, ignore_errors=True)
    return result


def scenarios(sizes: Sizes, server: str) -> list[Scenario]:
    raw = ("ceiling-raw",) if server == "moto" else ()  # moto alone serves unsigned requests
    get_many = ("ours", "incumbent", "incumbent-sync", "s3transfer", "ceiling-botocore", "ceiling-files", *raw)
    if not sizes.per_key_incumbent:
        get_many = tuple(side for side in get_many if side != "incumbent")
    get_many_target = ">= 5x the incumbent's faster way; time <= 1.1x and CPU <= 1.5x the fastest native tool's"
    many_target = ">= 4x; time <= 1.1x and CPU <= 1.5x the fastest native tool's"
    large_target = "as fast as the fastest native tool, peak RSS <= 100 MiB"
    return [
        Scenario("get_many", get_many_target, (*get_many, "ours-botocore", *PEERS), sizes.many),
        Scenario(
            "put_many",
            many_target,
            ("ours", "incumbent", "ceiling-botocore", "ceiling-files", "ours-botocore", *PEERS),
            sizes.many,
        ),
        Scenario("copy_many", "server-side, faster than the incumbent", objects=sizes.many),
        Scenario("delete_10k", f"{-(-sizes.deleted // 1000)} requests", objects=sizes.deleted),
        Scenario(
            "get_large",
            large_target,
            ("ours", "incumbent", "ceiling-botocore", "ceiling-files", *raw, "ours-botocore", *PEERS),
        ),
        Scenario("put_large", large_target, ("ours", "incumbent", "ceiling-botocore", "ours-sdk", *PEERS)),
        Scenario("list_100k", "time <= 1.0x the incumbent's, RSS growth <= half", objects=sizes.listed),
        Scenario("sensor_cost", "1 request per poke"),
        Scenario("watch_cost", "1 request per poll", ("ours",)),
    ]


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


# --------------------------------------------------------------------------- report
def is_ceiling(side: str) -> bool:
    return side.startswith("ceiling") or side == "s3transfer"


def table(scenarios_run: list[Scenario]) -> list[str]:
    lines = [
        "| scenario | side | median s | side / ours (per pair) | requests | client CPU s | CPU ms / object "
        "| server CPU s | peak RSS MiB | RSS growth MiB | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios_run:
        ours = scenario.results["ours"]
        for side, runs in scenario.results.items():
            ratios = ""
            if side.startswith("ours-"):  # a variant of ours: how much faster than ours as configured by default
                ratios = f"ours / this variant: **{median(ours, 'seconds') / median(runs, 'seconds'):.2f}x**"
            elif side != "ours" and not is_ceiling(side):
                pairs = [theirs["seconds"] / mine["seconds"] for mine, theirs in zip(ours, runs, strict=False)]
                ratios = ", ".join(f"{r:.2f}" for r in pairs) + f" (median **{statistics.median(pairs):.2f}x**)"
            elif is_ceiling(side):
                share = median(runs, "seconds") / median(ours, "seconds")
                ratios = f"ours at **{share:.0%}** of its speed"
            per_object = (
                f"{median(runs, 'cpu') / scenario.objects * 1000:.3f}" if scenario.objects else ""
            )  # fmt: skip
            growth = median(runs, "peak_rss") - median(runs, "baseline_rss")
            # The native tools' requests are not seen: they do not go through botocore.
            requests = "n/a" if side in PEERS else f"{median(runs, 'requests'):.0f}"
            lines.append(
                f"| {scenario.name} | {side} | {median(runs, 'seconds'):.3f} | {ratios} "
                f"| {requests} | {median(runs, 'cpu'):.2f} | {per_object} "
                f"| {median(runs, 'server_cpu'):.1f} | {median(runs, 'peak_rss') / MiB:.0f} | {growth / MiB:.0f} "
                f"| {scenario.target if side == 'ours' else ''} |"
            )
    return lines


def targets(scenarios_run: list[Scenario], sizes: Sizes) -> list[str]:
    """Each committed target, met or missed, computed from the figures (not hand-written)."""
    by_name = {s.name: s.results for s in scenarios_run}
    lines: list[str] = []

    def check(label: str, met: bool, figure: str) -> None:
        lines.append(f"- {'met' if met else '**missed**'}: {label}: {figure}")

    def seconds(scenario: str, side: str) -> float:
        return median(by_name[scenario][side], "seconds")

    def ratio(scenario: str, side: str) -> float:
        ours, theirs = by_name[scenario]["ours"], by_name[scenario][side]
        return float(statistics.median(t["seconds"] / o["seconds"] for o, t in zip(ours, theirs, strict=False)))

    def rss(scenario: str, side: str = "ours") -> float:
        return median(by_name[scenario][side], "peak_rss") / MiB

    for name in ("get_many", "put_many", "get_large", "put_large"):
        runs = by_name.get(name, {})
        if not all(peer in runs for peer in PEERS):
            continue
        fastest = min(PEERS, key=lambda peer: seconds(name, peer))
        time_ratio = seconds(name, "ours") / seconds(name, fastest)
        cpu_ratio = median(runs["ours"], "cpu") / max(median(runs[fastest], "cpu"), 1e-9)
        if name.endswith("_many"):
            check(f"{name} time <= 1.1x the fastest native tool's ({fastest})", time_ratio <= 1.1,
                  f"{time_ratio:.2f}x")  # fmt: skip
            check(f"{name} client CPU <= 1.5x the fastest native tool's ({fastest})", cpu_ratio <= 1.5,
                  f"{cpu_ratio:.2f}x")  # fmt: skip
        else:
            check(f"{name} at least as fast as the fastest native tool ({fastest})", time_ratio <= 1.0,
                  f"{time_ratio:.2f}x its time")  # fmt: skip
    if "get_many" in by_name:
        faster = min((seconds("get_many", s), s) for s in by_name["get_many"] if s.startswith("incumbent"))[1]
        ceiling = seconds("get_many", faster) / seconds("get_many", "ceiling-botocore")
        check("get_many >= 5x the incumbent's faster way", ratio("get_many", faster) >= 5,
              f"{ratio('get_many', faster):.2f}x {faster} (the botocore ceiling itself: {ceiling:.2f}x)")  # fmt: skip
        share = seconds("get_many", "ceiling-botocore") / seconds("get_many", "ours")
        check("get_many >= 90% of the plain-botocore ceiling's throughput", share >= 0.9, f"{share:.0%}")
        ours_cpu = median(by_name["get_many"]["ours"], "cpu")
        cpu = ours_cpu / median(by_name["get_many"]["ceiling-botocore"], "cpu")
        files = ours_cpu / median(by_name["get_many"]["ceiling-files"], "cpu")
        check("get_many client CPU per object <= 1.1x the plain-botocore floor", cpu <= 1.1,
              f"{cpu:.2f}x (and {files:.2f}x the floor that also writes the files)")  # fmt: skip
    if "put_many" in by_name:
        ceiling = seconds("put_many", "incumbent") / seconds("put_many", "ceiling-botocore")
        check("put_many >= 4x", ratio("put_many", "incumbent") >= 4,
              f"{ratio('put_many', 'incumbent'):.2f}x (the botocore ceiling itself: {ceiling:.2f}x)")  # fmt: skip
    for name in ("get_large", "put_large"):
        if name in by_name:
            share = seconds(name, "ceiling-botocore") / seconds(name, "ours")
            files = ""
            if "ceiling-files" in by_name[name]:
                files = f" ({seconds(name, 'ceiling-files') / seconds(name, 'ours'):.0%} of the one writing the file)"
            check(f"{name} >= 90% of the botocore ceiling", share >= 0.9,
                  f"{share:.0%}{files}")  # fmt: skip
            check(f"{name} peak RSS <= 100 MiB", rss(name) <= 100, f"{rss(name):.0f} MiB")
    if "list_100k" in by_name:
        runs = by_name["list_100k"]
        growth = {side: median(r, "peak_rss") - median(r, "baseline_rss") for side, r in runs.items()}
        check("list_100k time <= 1.0x the incumbent's", ratio("list_100k", "incumbent") >= 1.0,
              f"incumbent / ours {ratio('list_100k', 'incumbent'):.2f}x")  # fmt: skip
        check("list_100k RSS growth <= half the incumbent's", growth["ours"] <= growth["incumbent"] / 2,
              f"{growth['ours'] / MiB:.0f} MiB vs {growth['incumbent'] / MiB:.0f} MiB")  # fmt: skip
    for name, label in (("sensor_cost", "sensor: 1 request per poke"), ("watch_cost", "watcher: 1 request per poll")):
        if name in by_name:
            requests = median(by_name[name]["ours"], "requests")
            check(label, requests == 1, f"{requests:.0f}")
    if "delete_10k" in by_name:
        requests = median(by_name["delete_10k"]["ours"], "requests")
        expected = -(-sizes.deleted // 1000)
        check(f"delete of {sizes.deleted} keys in {expected} requests", requests == expected, f"{requests:.0f}")
    return lines


#: The scenarios charted, and the sides shown (those a run has): users' choices, not the floors.
CHARTED = ("get_many", "put_many", "get_large", "put_large")
CHART_SIDES = ("ours", "ours-botocore", "incumbent", "incumbent-sync", *PEERS)


#: Where the charts go: beside the docs that show them, linked from BENCHMARKS.md's tables.
CHARTS = ROOT / "docs" / "images"


def draw(server: str, scenarios_run: list[Scenario], directory: Path = CHARTS) -> Path | None:
    """One PNG per server: for each charted scenario, each side's median time (top) and
    client CPU (bottom); ours in colour, the others grey, the value on every bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charted = [s for s in scenarios_run if s.name in CHARTED]
    if not charted:
        return None
    figure, axes = plt.subplots(2, len(charted), figsize=(3.6 * len(charted), 6.4), squeeze=False)
    for column, scenario in enumerate(charted):
        sides = [side for side in CHART_SIDES if side in scenario.results]
        colours = ["#2f7d32" if side == "ours" else "#81c784" if side.startswith("ours") else "#9e9e9e"
                   for side in sides]  # fmt: skip
        for row, (measure, label) in enumerate((("seconds", "seconds"), ("cpu", "client CPU seconds"))):
            axis = axes[row][column]
            bars = axis.bar(range(len(sides)), [median(scenario.results[side], measure) for side in sides],
                            color=colours)  # fmt: skip
            axis.bar_label(bars, fmt="%.2f", fontsize=7)
            axis.set_xticks(range(len(sides)), sides, rotation=40, ha="right", fontsize=8)
            axis.set_title(f"{scenario.name}: {label}", fontsize=9)
            axis.tick_params(axis="y", labelsize=8)
    title = "Ceph RADOS Gateway (HTTP)" if server == "rgw" else "moto"
    figure.suptitle(f"{title}: medians of alternating runs, lower is better", fontsize=10)
    figure.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench-{server}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def report(results: dict[str, list[Scenario]], sizes: Sizes, quick: bool, elapsed: float) -> str:
    lines = [
        "# Benchmarks: airflow-s3connect vs apache-airflow-providers-amazon",
        "",
        f"Mode: {'quick (`make bench-quick`)' if quick else 'full (`make bench`)'}; {sizes.pairs} alternating "
        "runs of every side per scenario, each a fresh process, on each server. Run took "
        f"{elapsed:.0f} s.",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        f"Sizes: get/put/copy_many {sizes.many} x 16 KiB; large object {sizes.large // MiB} MiB; list "
        f"{sizes.listed} keys; sensor {sizes.sensor_hits} matching of {sizes.sensed} keys; watcher {WATCHED} keys; "
        f"delete {sizes.deleted} keys.",
        "",
        "Columns: `client CPU s` is user + system time of the measured process during the operation (all its",
        "threads): the client's own cost, whatever the server. `server CPU s` is the server's (RGW: all its",
        "daemons) over the run; close to the run's time means the server was the bottleneck. Ceilings are a",
        "plain boto3 client on 8 threads that knows the keys and writes no files (`ceiling-botocore`), the same",
        "writing each body plainly to its file, or for put_many reading each (`ceiling-files`: what files cost), or",
        "unsigned urllib3 (`ceiling-raw`, moto only); `s3transfer` is get_many through s3transfer's",
        "TransferManager given each size and ETag from the listing.",
    ]
    for server, scenarios_run in results.items():
        lines += ["", f"## {'Ceph RADOS Gateway (radosgw, beast, HTTP)' if server == 'rgw' else 'moto'}", ""]
        lines += table(scenarios_run)
        if (drawn := draw(server, scenarios_run)) is not None:
            lines += ["", f"![{server}: time and client CPU per side]({drawn.relative_to(ROOT)})"]
        lines += ["", f"Targets on {server}:", ""]
        lines += targets(scenarios_run, sizes)
    return "\n".join(lines) + "\n"


def run_server(server: Server, work: Path, sizes: Sizes, only: list[str] | None) -> list[Scenario]:
    chosen = [s for s in scenarios(sizes, server.name) if not only or s.name in only]
    prepare(server, work, sizes, {s.name for s in chosen})
    for scenario in chosen:
        for _ in range(sizes.pairs):
            for side in scenario.sides:
                if scenario.name == "delete_10k":
                    server.fill("delete/", sizes.deleted, 0, ".dat")
                size = sizes.large if scenario.name in ("get_large", "put_large") else sizes.many
                scenario.results.setdefault(side, []).append(run_once(server, scenario.name, side, work, size))
                remove_written(server)
        print(
            f"{server.name} {scenario.name}: "
            + ", ".join(
                f"{side} {median(runs, 'seconds'):.3f} s, {median(runs, 'requests'):.0f} requests, "
                f"{median(runs, 'cpu'):.2f} s CPU"
                for side, runs in scenario.results.items()
            ),
            flush=True,
        )
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    parser.add_argument("--servers", nargs="*", default=["rgw", "moto"], choices=["rgw", "moto"])
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    results: dict[str, list[Scenario]] = {}
    for name in args.servers:
        work = Path(tempfile.mkdtemp(prefix=f"s3connect-bench-{name}-"))
        server = start_rgw(work, sizes) if name == "rgw" else start_moto(work)
        try:
            results[name] = run_server(server, work, sizes, args.only)
        finally:
            server.stop()
            shutil.rmtree(work, ignore_errors=True)
    text = report(results, sizes, args.quick, time.monotonic() - started)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
