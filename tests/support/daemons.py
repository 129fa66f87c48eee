"""What the tests' store launchers share: daemons that die with the test process, an admin
client for a store on loopback, and a ``main`` that keeps one up by hand."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config


def require(what: str, binaries: tuple[str, ...], packages: tuple[str, ...]) -> None:
    """Say which Debian packages to install when a store's programs are missing."""
    if not all(shutil.which(binary) for binary in binaries):
        raise RuntimeError(f"{what} is not installed: apt-get install {' '.join(packages)} (.ci/run does it)")


def die_with_parent() -> None:
    """A daemon gets SIGKILL when the test process dies, however it dies (PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``command`` in its own process group (stopped as one), output to ``log``."""
    out = open(log, "wb")  # noqa: SIM115 - lives with the daemon
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)  # fmt: skip


def wait_for_s3(client: Any, processes: list[subprocess.Popen[bytes]], deadline: float, what: str, logs: Path) -> None:
    """Until ``client`` lists its buckets; fail at ``deadline`` or when a daemon exits."""
    while True:
        try:
            client.list_buckets()
            return
        except Exception:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"{what} did not answer: see {logs}") from None
            time.sleep(0.3)


def admin_client(url: str, key: str, secret: str, verify: str | None = None, **config: Any) -> Any:
    """A plain boto3 client (not ours) for setting up and inspecting a store on loopback."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=verify,
        # RGW 16 refuses botocore's aws-chunked trailers over HTTPS (MissingContentLength).
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 5, "mode": "standard"},  # a busy store on 2 cores answers 503
            request_checksum_calculation="when_required",
            **config,
        ),
    )


def serve_by_hand(start: Callable[[Path], Any], default_dir: str, describe: Callable[[Any], dict[str, Any]]) -> None:
    """``python -m tests.support.<store>_server DIR``: start, print how to reach it, wait
    for Ctrl-C or SIGTERM, stop."""
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else default_dir)
    started = time.monotonic()
    server = start(workdir)
    print(json.dumps({**describe(server), "seconds": round(time.monotonic() - started, 1)}))
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
