"""Run a DAG file for real with ``dag.test()`` (SQLite, temporary AIRFLOW_HOME) and read what it left."""

from __future__ import annotations

import datetime
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_s3connect.manifests import SUMMARY_XCOM_KEY


@dataclass
class RunResult:
    run_id: str
    state: str
    task_states: dict[tuple[str, int], str]
    xcom: dict[tuple[str, int], Any]
    summaries: dict[tuple[str, int], Any]

    def value(self, task_id: str, map_index: int = -1) -> Any:
        return self.xcom[(task_id, map_index)]

    def summary(self, task_id: str, map_index: int = -1) -> Any:
        """The operator's ``s3connect_summary`` XCom: count, bytes, truncated, requests."""
        return self.summaries[(task_id, map_index)]


def write_dag(name: str, source: str) -> Path:
    """Put a DAG file into the session's DAGs folder (dag.test needs the DAG in a bundle)."""
    dags_dir = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags_dir.mkdir(exist_ok=True)
    path = dags_dir / f"{name}.py"
    path.write_text(source)
    return path


def run_dag(
    path: Path, dag_id: str, logical_date: datetime.datetime | None = None, run_conf: dict[str, Any] | None = None
) -> RunResult:
    """Import the DAG file, run ``dag_id`` once, return the run's states and return values."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    spec = importlib.util.spec_from_file_location(f"{path.stem}_{dag_id}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = next(v for v in vars(module).values() if getattr(v, "dag_id", None) == dag_id and hasattr(v, "test"))
    run = dag.test(logical_date=logical_date, run_conf=run_conf)
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run.run_id).all()
        rows = session.query(XComModel).filter_by(dag_id=dag_id, run_id=run.run_id).all()
        return RunResult(
            run.run_id,
            str(run.state),
            {(ti.task_id, ti.map_index): str(ti.state) for ti in tis},
            {(row.task_id, row.map_index): row.value for row in rows if row.key == "return_value"},
            {(row.task_id, row.map_index): row.value for row in rows if row.key == SUMMARY_XCOM_KEY},
        )
