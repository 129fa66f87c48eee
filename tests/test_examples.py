"""The example DAGs: they parse without I/O, and each runs green with ``airflow dags test``
(subprocess, its own AIRFLOW_HOME) against the demo's embedded S3, exactly as ``make demo``."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo import run as demo

EXPECTED_DAGS = set(demo.DAGS)  # what make demo runs is every DAG in dags/


def test_example_dags_parse_without_errors_or_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a DAG file opened a network connection at parse time")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    bag = DagBag(dag_folder=str(demo.ROOT / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED_DAGS
    for dag in bag.dags.values():
        assert dag.doc_md, f"{dag.dag_id} has no documentation"
        assert "s3connect" in dag.tags


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Any, str]]:
    work = tmp_path_factory.mktemp("demo")
    with demo.embedded_s3(work / "s3") as url:
        demo.seed(url)
        env = demo.airflow_env(work / "airflow", url)
        migrated = demo.airflow(env, "db", "migrate")
        assert migrated.returncode == 0, migrated.stderr[-2000:]
        results: dict[str, Any] = dict(demo.dags_test(env, demo.DAGS))  # in the demo's order
        results["watcher"] = demo.watch_once(env, url)
        results["sqs-watcher"] = demo.watch_once(env, url, "inbox/")
        yield results, demo.s3_client(url), demo.tree(url)


@pytest.mark.parametrize(("watcher", "prefix"), [("watcher", "drop/"), ("sqs-watcher", "inbox/")])
def test_the_demo_watchers_announce_the_dropped_file(
    demo_run: tuple[dict[str, Any], Any, str], watcher: str, prefix: str
) -> None:
    event = demo_run[0][watcher]
    assert event["status"] == "success"
    (found,) = event["objects"]
    key = f"{prefix}hello.csv"
    assert (found["key"], found["size"], found["uri"]) == (key, 5, f"s3://{demo.BUCKET}/{key}")


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_example_dag_runs_green(demo_run: tuple[dict[str, Any], Any, str], dag_id: str) -> None:
    results, _, _ = demo_run
    output = results[dag_id]
    assert demo.succeeded(output), output[-3000:]


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_examples_landed_where_they_say(demo_run: tuple[dict[str, Any], Any, str]) -> None:
    _, s3, tree = demo_run
    exports = _keys(s3, demo.BUCKET, "exports/acme/orders/")
    assert [k.rsplit(".", 1)[-1] if not k.endswith(".csv.gz") else "csv.gz" for k in exports] == ["csv.gz", "parquet"]
    assert _keys(s3, demo.BUCKET, "incoming/") == []  # imported, then archived
    processed = _keys(s3, demo.BUCKET, "processed/")
    assert len(processed) == 3
    assert all(k.split("/")[1].isdigit() and len(k.split("/")[1]) == 8 for k in processed)  # {ds_nodash}, mapped
    (delivery,) = _keys(s3, demo.PARTNER_BUCKET, "deliveries/partner-co/")
    assert delivery.endswith(".txt")
    assert "s3://partner-dropbox/" in tree
    assert "orders-0.csv  (14 B)" in tree


def test_taskflow_example_wrote_summarised_and_pulled_from_the_partner(
    demo_run: tuple[dict[str, Any], Any, str],
) -> None:
    _, s3, _ = demo_run
    keys = _keys(s3, demo.BUCKET, "taskflow/")
    assert [k.rsplit("/", 1)[1] for k in keys] == ["orders.jsonl", "partner-report.csv", "summary.json"]
    summary = json.loads(s3.get_object(Bucket=demo.BUCKET, Key=keys[2])["Body"].read())
    assert summary == {"DE": sum(i * 2.5 for i in range(0, 100, 2)), "FR": sum(i * 2.5 for i in range(1, 100, 2))}
    pulled = s3.get_object(Bucket=demo.BUCKET, Key=keys[1])
    assert pulled["Body"].read() == b"id,total\n1,42\n"
    assert pulled["Metadata"]["s3connect-source-etag"]


def test_demo_import_wrote_local_files(demo_run: tuple[dict[str, Any], Any, str]) -> None:
    results, _, _ = demo_run
    output = results["example_import"]
    assert output.count("Downloaded 1 objects") == 3


def test_catalog_groups_files_by_date_mask(demo_run: tuple[dict[str, Any], Any, str]) -> None:
    _, s3, _ = demo_run
    (key,) = _keys(s3, demo.BUCKET, "catalogs/")
    catalog = json.loads(s3.get_object(Bucket=demo.BUCKET, Key=key)["Body"].read())
    datasets = {d["name"]: d for d in catalog["datasets"]}
    assert sorted(datasets) == ["{YYYYMMDD}/file_{YYYYMM}_a.csv", "{YYYYMMDD}/file_{YYYYMM}_b.csv"]
    a = datasets["{YYYYMMDD}/file_{YYYYMM}_a.csv"]
    assert (a["files"], a["delimiter"], [f["name"] for f in a["fields"]]) == (3, ";", ["col1", "col2"])
    assert catalog["directories"] == ["20250114/", "20250115/", "20250201/"]


def test_makefile_demo_target_runs_the_demo() -> None:
    makefile = (Path(demo.ROOT) / "Makefile").read_text()
    assert "demo: $(STAMP)" in makefile
    assert "-m demo.run" in makefile
