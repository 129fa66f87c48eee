"""The guarantee suites on the botocore engine too.

The whole suite runs with the connection's default engine (``auto``: the native engine for
the requests it can make exactly, botocore for the rest). Here the suites that state
guarantees (faults, the store behaviour suite, crash safety, scope at the wire, least
privilege) run again in fresh pytests with every test connection set to
``engine=botocore``, so that both engines keep each of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The suites, in two halves of about equal time that run side by side, each in its own
#: pytest (its own servers and AIRFLOW_HOME): most of their time is waiting on a store, a
#: fault's hold or a timeout, so two halves take little more than the longer one.
HALVES = (("tests/test_faults.py",),
          ("tests/test_stores.py", "tests/test_crash_safety.py", "tests/test_scope_wire.py",
           "tests/test_least_privilege.py"))  # fmt: skip


@pytest.mark.timeout(1500)  # five suites in fresh pytests: minutes, bounded by the subprocesses' own timeout
def test_the_guarantee_suites_pass_on_the_botocore_engine(tmp_path: Path) -> None:
    env = {**os.environ, "S3CONNECT_TEST_ENGINE": "botocore"}
    runs = []
    for i, suites in enumerate(HALVES):
        output = tmp_path / f"run{i}.txt"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "--basetemp", str(tmp_path / f"run{i}"), *suites]  # fmt: skip
        with output.open("w") as sink:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
        runs.append((process, output, suites))
    try:
        for process, _, _ in runs:
            process.wait(timeout=1400)
    finally:
        for process, _, _ in runs:
            process.kill()  # a no-op once it has ended
    for process, output, suites in runs:
        text = output.read_text()
        summary = text.strip().splitlines()[-1] if text.strip() else ""
        assert process.returncode == 0, (suites, text[-6000:])
        assert " passed" in summary
        assert "failed" not in summary
