"""Every macro the README lists rendered inside a real DAG run (dag.test, SQLite)."""

from __future__ import annotations

import datetime
import importlib.util
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.macros import DATE_MACROS, NAMESPACE, VALUE_MACROS

LOGICAL = datetime.datetime(2025, 4, 13, tzinfo=datetime.timezone.utc)
ALL = [m for m in (*DATE_MACROS, *VALUE_MACROS) if m not in ("extension", "filename", "relative_path")]

DAG_SOURCE = """
import pendulum
from airflow.sdk import DAG
from tests.support.macro_probe import MacroProbe

with DAG("macro_table", schedule="@daily", start_date=pendulum.datetime(2025, 4, 1, tz="UTC"),
         params={"tenant": "param-tenant", "tap": "salesforce"}, catchup=False) as dag:
    MacroProbe(task_id="sales_summary_daily", keys=ALL_KEYS, s3connect_conn_id="macro_conn",
               pattern="in/{tenant}/{YYYYMMDD}/*.csv")
    MacroProbe(task_id="with_args", keys=["{tenant}", "{root_tenant_id}", "{stream_name}", "{{ ds }}/{date:%Y%m}",
               "{tap}"], s3connect_conn_id="macro_conn", tenant="arg-tenant",
               stream_name="orders", tap="hubspot")

with DAG("macro_conn_fallback", schedule=None, start_date=pendulum.datetime(2025, 4, 1, tz="UTC")) as dag2:
    MacroProbe(task_id="probe", keys=["{tenant}", "{root_tenant_id}", "{env_id}"], s3connect_conn_id="macro_conn")
"""


def _run(dags_dir: Path, dag_attr: str, logical_date: datetime.datetime | None) -> dict[str, dict[str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    spec = importlib.util.spec_from_file_location(f"macro_dags_{dag_attr}", dags_dir / "macro_dags.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = getattr(module, dag_attr)
    run = dag.test(logical_date=logical_date)
    assert run.state == "success"
    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag.dag_id, run_id=run.run_id, key="return_value").all()
        return {row.task_id: row.value for row in rows}


@pytest.fixture(scope="module")
def dag_results(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    dags_dir = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags_dir.mkdir(exist_ok=True)
    source = DAG_SOURCE.replace("ALL_KEYS", repr(["{" + m + "}" for m in ALL] + ["{{ ds }}/{tenant}/{uuid}"]))
    (dags_dir / "macro_dags.py").write_text(source)
    conn = (
        '{"conn_type": "s3connect", "extra": {"bucket": "b-1x", "path_prefix": "orders/{env_id}/{date:%Y%m}/incoming",'
        ' "tenant": "conn-tenant", "env_id": "prod.hg.acme.com"}}'
    )
    os.environ["AIRFLOW_CONN_MACRO_CONN"] = conn
    try:
        results = _run(dags_dir, "dag", LOGICAL)
        results["fallback"] = _run(dags_dir, "dag2", None)["probe"]
    finally:
        del os.environ["AIRFLOW_CONN_MACRO_CONN"]
    return results


def _expected(result: dict[str, Any]) -> dict[str, str]:
    load = datetime.datetime.fromisoformat(result["start_date"]).astimezone(datetime.timezone.utc)
    run_id = result["run_id"]
    dag_id, task_id = "macro_table", "sales_summary_daily"
    return {
        "date_time": load.strftime("%Y_%m_%d_%H_%M_%S"),
        "timestamp": load.strftime("%Y_%m_%d_%H_%M_%S"),
        "iso_date_time": load.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "date": load.strftime("%Y_%m_%d"),
        "iso_date": load.strftime("%Y-%m-%d"),
        "full_date": load.strftime("%Y%m%d"),
        "year": load.strftime("%Y"),
        "month": load.strftime("%m"),
        "day": load.strftime("%d"),
        "hour": load.strftime("%H"),
        "minute": load.strftime("%M"),
        "second": load.strftime("%S"),
        "epoch": str(int(load.timestamp())),
        "cursor_year": "2025",
        "cursor_month": "04",
        "cursor_day": "13",
        "cursor_date_time": "2025_04_13_00_00_00",
        "cursor_iso_date_time": "2025-04-13T00:00:00Z",
        "cursor_singular_date_time": "2025-04-13-00-00-00",
        "ds": "2025-04-13",
        "ds_nodash": "20250413",
        "logical_date": "2025-04-13T00:00:00Z",
        "tenant": "param-tenant",
        "root_tenant_id": "param-tenant",
        "tap": "salesforce",
        "env_id": "prod.hg.acme.com",
        "flow_id": dag_id,
        "dag_id": dag_id,
        "task_id": task_id,
        "map_index": "-1",
        "try_number": str(result["try_number"]),
        "run_id": run_id.replace(":", "-").replace("+", "-"),
        "stream_name": task_id,
        "stream_id": str(uuid.uuid5(NAMESPACE, f"{dag_id}\x1f{task_id}")),
        "connection_id": str(uuid.uuid5(NAMESPACE, dag_id)),
        "connection_run_id": str(uuid.uuid5(NAMESPACE, f"{dag_id}\x1f{run_id}")),
        "stream_run_id": str(uuid.uuid5(NAMESPACE, f"{dag_id}\x1f{run_id}\x1f{task_id}\x1f-1")),
    }


@pytest.mark.parametrize("macro", ALL)
def test_macro_in_dag_run(dag_results: dict[str, dict[str, Any]], macro: str) -> None:
    result = dag_results["sales_summary_daily"]
    rendered = dict(zip(ALL, result["keys"], strict=False))
    if macro == "job_id":
        assert len(rendered["job_id"]) == 8
        assert rendered["job_id"].isalnum()
    elif macro == "uuid":
        assert uuid.UUID(rendered["uuid"]).version == 4
    else:
        assert rendered[macro] == _expected(result)[macro]


def test_jinja_then_macros_and_path_prefix(dag_results: dict[str, dict[str, Any]]) -> None:
    result = dag_results["sales_summary_daily"]
    jinja_key = result["keys"][-1]
    ds, tenant, random_id = jinja_key.split("/")
    assert (ds, tenant) == ("2025-04-13", "param-tenant")
    assert uuid.UUID(random_id)
    load = datetime.datetime.fromisoformat(result["start_date"])
    assert result["path_prefix"] == f"orders/prod.hg.acme.com/{load:%Y%m}/incoming"
    assert result["pattern"] == "in/param-tenant/{YYYYMMDD}/*.csv"


def test_operator_arguments_win_over_params(dag_results: dict[str, dict[str, Any]]) -> None:
    tenant, root, stream, dated, tap = dag_results["with_args"]["keys"]
    assert (tenant, root, stream, tap) == ("arg-tenant", "arg-tenant", "orders", "hubspot")
    load = datetime.datetime.fromisoformat(dag_results["with_args"]["start_date"])
    assert dated == f"2025-04-13/{load:%Y%m}"


def test_connection_fields_are_the_last_fallback(dag_results: dict[str, dict[str, Any]]) -> None:
    assert dag_results["fallback"]["keys"] == ["conn-tenant", "conn-tenant", "prod.hg.acme.com"]


def test_rendered_template_view_shows_final_keys(dag_results: dict[str, dict[str, Any]]) -> None:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(RenderedTaskInstanceFields)
            .filter_by(dag_id="macro_table", task_id="sales_summary_daily")
            .one()
        )
    assert row.rendered_fields["keys"] == dag_results["sales_summary_daily"]["keys"]
    assert row.rendered_fields["pattern"] == "in/param-tenant/{YYYYMMDD}/*.csv"


def test_stable_ids(make_conn: Callable[..., str]) -> None:
    from airflow_s3connect.macros import render_key

    context = {"dag": {"dag_id": "d"}, "ti": {"task_id": "t", "map_index": 2, "start_date": LOGICAL}, "run_id": "r"}
    first = render_key("{connection_run_id}/{stream_run_id}/{job_id}", context)
    assert render_key("{connection_run_id}/{stream_run_id}/{job_id}", context) == first
    other = render_key("{connection_run_id}", {**context, "run_id": "r2"})
    assert other != first.split("/")[0]
