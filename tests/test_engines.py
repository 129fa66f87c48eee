"""The guarantee suites on the botocore engine too.

The whole suite runs with the connection's default engine (``auto``: the native engine for
the requests it can make exactly, botocore for the rest). Here the suites that state
guarantees (faults, the store behaviour suite, crash safety, scope at the wire, least
privilege) run again in fresh pytests with every test connection set to
``engine=botocore``, so that both engines keep each of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The suites, in two halves of about equal time that run side by side, each in its own
#: pytest (its own servers and AIRFLOW_HOME): most of their time is waiting on a store, a
#: fault's hold or a timeout, so two halves take little more than the longer one.
HALVES = (("tests/test_faults.py",),
          ("tests/test_stores.py", "tests/test_crash_safety.py", "tests/test_scope_wire.py",
           "tests/test_least_privilege.py"))  # fmt: skip


@pytest.mark.timeout(1500)  # five suites in fresh pytests: minutes, bounded by the deadline below first
def test_the_guarantee_suites_pass_on_the_botocore_engine(tmp_path: Path) -> None:
    env = {**os.environ, "S3CONNECT_TEST_ENGINE": "botocore"}
    deadline = time.monotonic() + 1400
    runs: list[tuple[subprocess.Popen[str], Path, tuple[str, ...]]] = []
    try:
        for i, suites in enumerate(HALVES):
            output = tmp_path / f"run{i}.txt"
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "--basetemp", str(tmp_path / f"run{i}"), *suites]  # fmt: skip
            with output.open("w") as sink:
                runs.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                              text=True, start_new_session=True), output, suites))  # fmt: skip
        for process, _, _ in runs:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail("past the deadline:\n" + "\n".join(f"{s}: {o.read_text()[-3000:]}" for _, o, s in runs))
    finally:
        for process, _, _ in runs:
            _end(process)
    for process, output, suites in runs:
        text = output.read_text()
        summary = text.strip().splitlines()[-1] if text.strip() else ""
        assert process.returncode == 0, (suites, text[-6000:])
        assert " passed" in summary
        assert "failed" not in summary


def _end(process: subprocess.Popen[str]) -> None:
    """A pytest still running is interrupted, so that its teardown stops the servers it
    started; what is left of its process group a little later is killed."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
