"""Whoever triggers a run does not choose the tenant: the connection's values are the authority.

A connection whose path_prefix is ``tenants/{tenant}`` and whose Tenant is ``acme`` serves
acme alone, whatever a run's conf, a DAG param or an operator argument says. Without a
Tenant in the connection, the scope follows the operator's argument or the DAG's declared
params, never run conf. Keys below the prefix keep the run's values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.moto_server import MotoServer

DAGS = """
import pendulum
from airflow.sdk import DAG, Param
from airflow_s3connect.operators import S3ListObjectsOperator

with DAG("rc_no_params", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as no_params:
    S3ListObjectsOperator(task_id="ls", s3connect_conn_id="CONN")

with DAG("rc_declared", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
         params={"tenant": Param("acme", type="string")}) as declared:
    S3ListObjectsOperator(task_id="ls", s3connect_conn_id="CONN")

with DAG("rc_argument", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as argument:
    S3ListObjectsOperator(task_id="ls", s3connect_conn_id="CONN", tenant="{{ dag_run.conf.get('who', 'acme') }}")
"""


@pytest.fixture
def tenants(moto: MotoServer, airflow_db: Path) -> Iterator[MotoServer]:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="tenants/acme/a.csv", Body=b"acme's")
    admin.put_object(Bucket=BUCKET, Key="tenants/globex/secret.csv", Body=b"globex's")
    return moto


def _conn(moto: MotoServer, conn_id: str, **extra: Any) -> str:
    body = {"conn_type": "s3connect", "login": "AKIA1", "password": "s",
            "extra": {"bucket": BUCKET, "path_prefix": "tenants/{tenant}", "region_name": REGION,
                      "endpoint_url": moto.url, **extra}}  # fmt: skip
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(body)
    return conn_id


def _run(conn_id: str, dag_id: str, conf: dict[str, Any] | None, moto: MotoServer) -> tuple[Any, list[str]]:
    path = write_dag(f"rc_{conn_id}", DAGS.replace("CONN", conn_id))
    with moto.recording() as rec:
        result = run_dag(path, dag_id, run_conf=conf)
    prefixes = [r.query.get("prefix", [""])[0] for r in rec.s3()]
    return result, prefixes


@pytest.mark.parametrize("dag_id", ["rc_no_params", "rc_declared"])
def test_run_conf_cannot_choose_another_tenant_than_the_connections(tenants: MotoServer, dag_id: str) -> None:
    conn_id = _conn(tenants, f"fixed_{dag_id}", tenant="acme")
    result, prefixes = _run(conn_id, dag_id, {"tenant": "globex"}, tenants)
    assert result.state == "failed"
    assert prefixes == []  # refused before any request
    ok, prefixes = _run(conn_id, dag_id, None, tenants)
    assert ok.state == "success"
    assert ok.value("ls") == ["a.csv"]
    assert prefixes == ["tenants/acme/"]


def test_an_operator_argument_cannot_override_the_connections_tenant(tenants: MotoServer) -> None:
    conn_id = _conn(tenants, "fixed_argument", tenant="acme")
    result, prefixes = _run(conn_id, "rc_argument", {"who": "globex"}, tenants)
    assert result.state == "failed"
    assert prefixes == []
    same, _ = _run(conn_id, "rc_argument", {"who": "acme"}, tenants)
    assert same.state == "success"


def test_without_a_connection_tenant_run_conf_is_never_read_for_the_scope(tenants: MotoServer) -> None:
    conn_id = _conn(tenants, "open_tenant")
    result, prefixes = _run(conn_id, "rc_declared", {"tenant": "globex"}, tenants)
    assert result.state == "success"
    assert result.value("ls") == ["a.csv"]  # the declared param's acme, not the run's globex
    assert prefixes == ["tenants/acme/"]
    undeclared, prefixes = _run(conn_id, "rc_no_params", {"tenant": "globex"}, tenants)
    assert undeclared.state == "failed"  # no tenant at all: run conf does not supply one
    assert prefixes == []
    # The DAG author's explicit argument (here from run conf) does shape it: that is the author's choice.
    chosen, prefixes = _run(conn_id, "rc_argument", {"who": "globex"}, tenants)
    assert chosen.state == "success"
    assert prefixes == ["tenants/globex/"]
