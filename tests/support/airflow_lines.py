"""Clean environments of one Airflow line with the built wheel, as users install it.

Airflow's published constraint files cannot be reached from these machines, only the
package registries: what a plain resolution breaks is pinned here, as measured, and the
README's compatibility table says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
UV = str(Path(sys.executable).parent / "uv")

#: Airflow line → what must be pinned beside it, measured: a plain resolution of 3.2.2 takes
#: fastapi, cadwyn and svcs versions with which no task runs ("svcs_registry", pydantic
#: discriminator errors), and of 3.0.6 fastapi 0.165 and cadwyn 9 (every task fails with a
#: validation error from the execution API) and PyJWT 2.15 (the UI's login fails: "Issuer
#: (iss) must be a string"): the pins are the versions with which they run.
#: The 3.2 line also holds our dependencies at their lowest declared versions (the floor
#: environment). 3.0.6 gets the FAB provider: that line's UI builds a provider's form
#: fields only where WTForms and Flask-AppBuilder are importable, as in its usual deployments.
LINES: dict[str, list[str]] = {
    "3.0.6": ["apache-airflow-providers-fab", "fastapi==0.116.1", "cadwyn==5.4.6", "pyjwt==2.10.1"],
    "3.1.8": [],
    "3.2.2": [
        "svcs==25.1.0", "cadwyn==7.0.0", "fastapi==0.136.3",
        "boto3==1.36.0", "botocore==1.36.0", "s3transfer==0.11.0", "apache-airflow-providers-common-compat==1.22.0",
        "pendulum==3.1.0", "pyarrow==15.0.0",
    ],
    "3.3.2": [],
}  # fmt: skip
#: The oldest line, whose UI builds the form the pre-3.2 way.
OLDEST = min(LINES, key=lambda line: tuple(int(part) for part in line.split(".")))


def build(out: Path) -> Path:
    """The sdist and the wheel into ``out``, built as a release builds them; the wheel."""
    subprocess.run([UV, "build", "-o", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("airflow_s3connect-*.whl")
    return wheel


def install(line: str, wheel: Path, venv: Path) -> Path:
    """A virtual environment with Airflow ``line``, the wheel and the line's pins; its bin."""
    subprocess.run([UV, "venv", "-q", "-p", sys.executable, str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [UV, "pip", "install", "-q", "--python", python, f"apache-airflow=={line}", f"{wheel}[parquet]", *LINES[line]],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv / "bin"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a process of that line: none of this session's Airflow settings."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }
