"""The guarantee suites on the botocore engine too.

The whole suite runs with the connection's default engine (``auto``: the native engine for
the requests it can make exactly, botocore for the rest). Here the suites that state
guarantees (faults, the store behaviour suite, crash safety, scope at the wire, least
privilege) run again in a fresh pytest with every test connection set to
``engine=botocore``, so that both engines keep each of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("tests/test_faults.py", "tests/test_stores.py", "tests/test_crash_safety.py", "tests/test_scope_wire.py",
          "tests/test_least_privilege.py")  # fmt: skip


@pytest.mark.timeout(1500)  # five suites in a fresh pytest: minutes, bounded by the subprocess's own timeout
def test_the_guarantee_suites_pass_on_the_botocore_engine(tmp_path: Path) -> None:
    env = {**os.environ, "S3CONNECT_TEST_ENGINE": "botocore"}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "run"),
         *SUITES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    summary = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else completed.stderr[-2000:]
    assert completed.returncode == 0, completed.stdout[-6000:]
    assert " passed" in summary
    assert "failed" not in summary
