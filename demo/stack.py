"""``make stack``: Airflow on the CeleryExecutor on this machine, without Docker.

PostgreSQL and Redis from Debian's packages, the embedded S3 (seeded, as in ``make demo``),
then Airflow's components as separate processes: ``api-server``, ``scheduler``,
``dag-processor``, ``triggerer`` and two ``celery worker`` with distinct hostnames. All
state lives under one folder (``.stack/`` at the repository root); the UI is on
http://localhost:8080 (every user an admin: a local stack, no login). Ctrl-C stops it all.

The tests start the same :class:`Stack` on free ports (``tests/test_stack.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from demo.run import ROOT, connections, embedded_s3, inbox_queue_url, seed

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PACKAGES = ("postgresql", "redis-server")
WORKERS = ("worker1", "worker2")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, check: object, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s" + (f": see {log}" if log else ""))
        time.sleep(0.5)


def stop_groups(processes: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM each process group (the last started first), then SIGKILL what outlives ``grace``."""
    for process in reversed(processes):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class Stack:
    """One CeleryExecutor deployment under ``home``; every port its own."""

    home: Path
    api_port: int = 8080
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pg_port: int = field(default_factory=_free_port)
    redis_port: int = field(default_factory=_free_port)
    s3_url: str = ""

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        database = f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow"
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home / "airflow"),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API_AUTH__JWT_SECRET": "s3connect-stack-local-only-jwt-secret",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                # psycopg2: a plain "postgresql://" result backend needs psycopg 3.
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
                "AWS_EC2_METADATA_DISABLED": "true",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                **connections(self.s3_url),
                "S3CONNECT_INBOX_QUEUE_URL": inbox_queue_url(self.s3_url),
            }
        )
        env.update(self.extra_env)
        return env

    def _start(self, name: str, command: list[str]) -> None:
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        # Each component keeps its DAG bundles in its own folder, as on machines of its own.
        env = {**self.env, "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(self.home / "bundles" / name)}
        self.processes[name] = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _airflow(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "airflow"), *args]

    def start_database(self) -> None:
        data = self.home / "postgres"
        socket_dir = self.home / "run"
        for folder in (data, socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(folder, "postgres", "postgres")
        if not (data / "PG_VERSION").exists():
            subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "airflow"]),
                           check=True, capture_output=True)  # fmt: skip
        options = f"-p {self.pg_port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._start("postgres", _as_postgres([str(PG_BIN / "postgres"), "-D", str(data), *options.split()]))
        _wait("PostgreSQL", lambda: subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port)], capture_output=True
        ).returncode == 0, 60)  # fmt: skip
        created = subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow", "-d", "postgres",
             "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'airflow'"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        if created.stdout.strip() != "1":
            subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow",
                            "airflow"], check=True, capture_output=True)  # fmt: skip

    def start_broker(self) -> None:
        (self.home / "redis").mkdir(exist_ok=True)
        self._start("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--dir", str(self.home / "redis"), "--save", "", "--appendonly", "no"])  # fmt: skip
        _wait("Redis", lambda: subprocess.run(["redis-cli", "-p", str(self.redis_port), "ping"],
                                              capture_output=True, text=True).stdout.strip() == "PONG", 30)  # fmt: skip

    def start_airflow(self) -> None:
        migrated = subprocess.run(self._airflow("db", "migrate"), env=self.env, capture_output=True, text=True)
        if migrated.returncode:
            raise RuntimeError(f"airflow db migrate failed: {migrated.stderr[-3000:]}")
        self._start("api-server", self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.api_port)))
        for component in ("scheduler", "dag-processor", "triggerer"):
            self._start(component, self._airflow(component))
        for worker in WORKERS:
            self.start_worker(worker)
        _wait("the API server", lambda: urllib.request.urlopen(self.api_url + "/api/v2/version", timeout=5).status
              == 200, 180, self.home / "logs" / "api-server.log")  # fmt: skip

    def start_worker(self, name: str) -> None:
        # The default queue, and one of its own: a task with queue=<worker> runs there.
        self._start(name, self._airflow("celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "4",
                                        "--queues", f"default,{name}"))  # fmt: skip

    def restart(self, name: str) -> None:
        """Stop an Airflow component as a redeploy does (SIGTERM, SIGKILL after 30 s), start it again."""
        stop_groups([self.processes.pop(name)], grace=30)
        self._start(name, self._airflow(name))

    def kill(self, name: str) -> None:
        """SIGKILL a component and its children (a worker's task processes), as a lost machine."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def stop(self) -> None:
        stop_groups(list(self.processes.values()), grace=30)
        self.processes.clear()

    @contextmanager
    def running(self) -> Iterator[Stack]:
        for sub in ("logs", "airflow"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        with embedded_s3(self.home / "s3") as url:
            self.s3_url = url
            seed(url)
            try:
                self.start_database()
                self.start_broker()
                self.start_airflow()
                yield self
            finally:
                self.stop()


def api(url: str, path: str, body: object | None = None, method: str | None = None) -> object:
    """The REST API as the (all-admins) simple auth manager's user."""
    with urllib.request.urlopen(url + "/auth/token", timeout=30) as response:
        token = json.load(response)["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path, data=data, headers=headers, method=method or ("POST" if data else "GET")
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main() -> int:
    missing = [binary for binary in ("redis-server", str(PG_BIN / "postgres")) if not shutil.which(binary)]
    if missing:
        print(f"make stack needs Debian's {' and '.join(PACKAGES)}: apt-get install {' '.join(PACKAGES)}")
        return 1
    stack = Stack(ROOT / ".stack")
    with stack.running():
        print(f"Airflow (CeleryExecutor, workers {', '.join(WORKERS)}) on http://localhost:{stack.api_port}")
        print(f"Embedded S3 on {stack.s3_url}; PostgreSQL on {stack.pg_port}; Redis on {stack.redis_port}")
        print(f"State and logs in {stack.home}. Ctrl-C stops everything.")
        try:
            while all(p.poll() is None for p in stack.processes.values()):
                time.sleep(1)
            stopped = [name for name, p in stack.processes.items() if p.poll() is not None]
            print(f"Stopped: {', '.join(stopped)}; see {stack.home / 'logs'}")
            return 1
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
