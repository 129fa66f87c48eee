"""docker-compose.yaml: valid against the Compose specification, and its connection is valid.

No Docker engine runs here, so the stack itself is not started; what can be checked is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from airflow_s3connect.connection import parse_settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yaml").read_text()))


def test_compose_file_matches_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_stack_has_every_component() -> None:
    services = _compose()["services"]
    assert set(services) >= {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
    worker = services["airflow-worker"]
    assert "container_name" not in worker  # so `--scale airflow-worker=N` works
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "./dags:/opt/airflow/dags" in worker["volumes"]
    assert worker["build"] == "."  # the provider is installed from this repository
    assert "pip install" in (ROOT / "Dockerfile").read_text()
    assert "mc mb --ignore-existing local/s3connect-demo" in services["minio-init"]["entrypoint"]


def test_compose_connection_is_valid_settings() -> None:
    env = _compose()["services"]["airflow-scheduler"]["environment"]
    conn = json.loads(env["AIRFLOW_CONN_S3CONNECT_DEFAULT"])
    assert conn["conn_type"] == "s3connect"
    settings = parse_settings("s3connect_default", conn["login"], conn["password"], conn["extra"])
    assert settings.endpoint_url == "http://minio:9000"
    assert settings.bucket == "s3connect-demo"
    assert settings.addressing_style.value == "path"
