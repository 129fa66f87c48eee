"""``make airflow``: Airflow standalone on localhost with the provider, the example DAGs, the
embedded S3 (seeded) and the demo connections, for clicking through the UI.

Stops (with the embedded S3) on Ctrl-C. State lives in ``.airflow/`` at the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from demo.run import ROOT, airflow_env, embedded_s3, seed


def main() -> int:
    home = ROOT / ".airflow"
    with embedded_s3(home / "s3") as url:
        seed(url)
        env = airflow_env(home, url)
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "true"  # local only: no login
        env["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
        bin_dir = Path(sys.executable).parent  # standalone starts its components as `airflow ...`
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        print(f"Embedded S3 on {url} (bucket s3connect-demo). Airflow UI: http://localhost:8080")
        try:
            return subprocess.call([str(bin_dir / "airflow"), "standalone"], env=env)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
