"""Operator arguments refused at DAG-parse time with a message saying what to fix; sources; error mapping."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from airflow_s3connect.errors import ArgumentError, MacroError, S3ConnectError, WrongRegionError, translate
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.macros import MacroValues
from airflow_s3connect.operators import (
    S3CopyObjectsOperator,
    S3DeleteObjectsOperator,
    S3GetObjectOperator,
    S3ListObjectsOperator,
    S3PutObjectOperator,
)
from airflow_s3connect.operators.put_object import expand_source, file_extension
from airflow_s3connect.sensors import S3ObjectSensor

BAD_ARGUMENTS: list[tuple[type, dict[str, Any], str]] = [
    (S3PutObjectOperator, {"key": "k"}, "Give exactly one of source=, data= or records= (got none)"),
    (S3PutObjectOperator, {"key": "k", "data": "x", "source": "/tmp"}, "(got source, data)"),
    (S3PutObjectOperator, {"key": "k", "records": []}, "records=... needs format=..."),
    (S3PutObjectOperator, {"key": "k", "records": [], "format": "xlsx"}, "Unknown format 'xlsx': choose one of csv"),
    (S3PutObjectOperator, {"data": "x"}, "data= and records= need key=..."),
    (S3PutObjectOperator, {"key": "k", "data": "x", "checksum_algorithm": "md5"}, "checksum_algorithm='md5'"),
    # The CRT is not installed here (nor by default): refused when the DAG is parsed, not in the upload.
    (S3PutObjectOperator, {"key": "k", "data": "x", "checksum_algorithm": "crc32c"}, "needs the AWS CRT"),
    (S3PutObjectOperator, {"key": "k", "data": "x", "server_side_encryption": "kms"}, "use one of AES256, aws:kms"),
    (S3PutObjectOperator, {"key": "k", "data": "x", "kms_key_id": "k1"}, "kms_key_id needs server_side_encryption"),
    (S3GetObjectOperator, {"local_dir": "/tmp"}, "Give exactly one of key=... (one object), prefix=... / pattern="),
    (S3GetObjectOperator, {"key": "a", "prefix": "b/", "local_dir": "/tmp"}, "or manifest=... (an upstream"),
    (S3GetObjectOperator, {"key": "a", "manifest": "s3://b/m.jsonl", "local_dir": "/tmp"}, "Give exactly one of"),
    (S3ListObjectsOperator, {"results": "all"}, "results='all': use 'list', 'manifest' or 'batches'"),
    (S3ListObjectsOperator, {"results": "batches", "batch_size": 0}, "batch_size=0: give at least 1"),
    (S3ListObjectsOperator, {"manifest_key": "m.jsonl"}, "manifest_path / manifest_key place a manifest: set results="),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "incremental": "daily"}, "incremental='daily'"),
    (S3GetObjectOperator, {"key": "a", "local_dir": "/tmp", "incremental": "interval"}, "not to one key"),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "after": "move"}, "after='move'"),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "after": "archive"}, "needs archive_prefix"),
    (S3GetObjectOperator, {"prefix": "b/", "read_into_xcom": True}, "read_into_xcom=True reads one object"),
    (S3GetObjectOperator, {"key": "a"}, "Give local_dir=..."),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "on_invalid_key": "ignore"}, "use 'fail' or 'skip'"),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "version_id": "v1"}, "give it with key=..."),
    (S3GetObjectOperator, {"key": "a", "local_dir": "/tmp", "version_id": "v1", "after": "delete"}, "use after='keep'"),
    (S3GetObjectOperator, {"key": "a", "local_dir": "/tmp", "restore": {"days": 0}}, "at least 1"),
    (S3GetObjectOperator, {"key": "a", "local_dir": "/tmp", "restore": {"days": 1, "tier": "Fast"}}, "use one of Bulk"),
    (S3GetObjectOperator, {"key": "a", "local_dir": "/tmp", "restore": {"tier": "Bulk"}}, "give restore={'days': N"),
    (S3CopyObjectsOperator, {"source_prefix": "a/", "version_id": "v1"}, "give it with source_key=..."),
    (S3CopyObjectsOperator, {"source_key": "a", "restore": {"days": "2"}}, "whole number of days"),
    (S3DeleteObjectsOperator, {"prefix": "a/", "version_id": "v1"}, "give it with key=..."),
]


@pytest.mark.parametrize(("operator", "kwargs", "message"), BAD_ARGUMENTS)
def test_bad_arguments_fail_at_parse_time(operator: type, kwargs: dict[str, Any], message: str) -> None:
    # One root for everything the provider raises, and ValueError as it always was.
    with pytest.raises(S3ConnectError, match=re.escape(message)) as info:
        operator(task_id="t", **kwargs)
    assert isinstance(info.value, ValueError)


def test_list_defaults() -> None:
    task = S3ListObjectsOperator(task_id="t")
    assert (task.max_objects, task.max_xcom_objects) == (100_000, 10_000)


def test_sources_file_directory_and_glob(tmp_path: Path) -> None:
    for name in ("a.csv", "sub/b.csv", "sub/deep/c.json.gz", "sub/deep/d.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    as_dir = [rel for _, rel in expand_source(str(tmp_path))]
    assert as_dir == ["a.csv", "sub/b.csv", "sub/deep/c.json.gz", "sub/deep/d.csv"]
    as_glob = [rel for _, rel in expand_source(f"{tmp_path}/sub/**/*.csv")]
    assert as_glob == ["b.csv", "deep/d.csv"]  # relative to the glob's literal directory
    # The same root whichever wildcard comes first.
    for pattern in ("sub/*.csv", "sub/?.csv", "sub/[ab].csv", "sub/[b]*.csv"):
        assert [rel for _, rel in expand_source(f"{tmp_path}/{pattern}")] == ["b.csv"], pattern
    assert [rel for _, rel in expand_source(f"{tmp_path}/su?/deep/*.csv")] == ["sub/deep/d.csv"]
    assert [rel for _, rel in expand_source(str(tmp_path / "a.csv"))] == ["a.csv"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list(expand_source(f"{tmp_path}/*.parquet"))
    with pytest.raises(FileNotFoundError, match="neither a file, a directory nor a glob"):
        list(expand_source(str(tmp_path / "missing.csv")))


@pytest.mark.parametrize(
    ("name", "extension"),
    [("a.csv", "csv"), ("a.csv.gz", "csv.gz"), ("report.v2.csv", "csv"), ("x.tar.gz", "tar.gz"), ("README", "")],
)
def test_file_extension(name: str, extension: str) -> None:
    assert file_extension(name) == extension


def test_wrong_region_names_the_right_one() -> None:
    # moto serves every region from one endpoint, so the redirect S3 sends is built here.
    response = {
        "Error": {"Code": "PermanentRedirect", "Message": "...", "Region": "us-west-2"},
        "ResponseMetadata": {"HTTPStatusCode": 301, "HTTPHeaders": {}},
    }
    error = translate(ClientError(response, "ListObjectsV2"), "ListObjectsV2", "eu-bucket")  # type: ignore[arg-type]
    assert isinstance(error, WrongRegionError)
    assert (
        str(error) == "Bucket 'eu-bucket' is in another region: it is in us-west-2; set the connection's region_name."
    )


def test_connection_parameters_are_templated_and_follow_default_args() -> None:
    """Operators and the sensor share s3connect_conn_id, bucket, tenant, tap and
    stream_name (all templated), also when a DAG's default_args set them, and partial()
    accepts them (Airflow checks it against the operator classes' own parameters)."""
    import pendulum
    from airflow.sdk import DAG

    from airflow_s3connect.mixins import CONNECTION_FIELDS
    from airflow_s3connect.sensors import S3ObjectSensor

    defaults = {"s3connect_conn_id": "from_defaults", "tenant": "acme", "bucket": "b"}
    with DAG("d", schedule=None, start_date=pendulum.datetime(2025, 1, 1), default_args=defaults):
        listed = S3ListObjectsOperator(task_id="l", prefix="p/")
        sensed = S3ObjectSensor(task_id="s", prefix="p/", tenant="own")
        put = S3PutObjectOperator(task_id="p", data="x", key="k", s3connect_conn_id="mine", stream_name="orders")
    assert (listed.s3connect_conn_id, listed.tenant, listed.bucket) == ("from_defaults", "acme", "b")
    assert (sensed.s3connect_conn_id, sensed.tenant) == ("from_defaults", "own")
    assert (put.s3connect_conn_id, put.stream_name) == ("mine", "orders")
    for task in (listed, sensed, put):
        assert set(CONNECTION_FIELDS) <= set(task.template_fields)
    S3ListObjectsOperator.partial(task_id="m", s3connect_conn_id="c", tenant="t").expand(prefix=["a/", "b/"])


def test_airflows_rendering_step_that_macros_hook_into_is_still_there() -> None:
    """Key macros render inside Airflow's template rendering, through the one private
    method a mapped task's expansion also calls. If Airflow renames it or changes its
    arguments, this fails here instead of macros silently staying unrendered."""
    import inspect

    from airflow.sdk import BaseOperator

    from airflow_s3connect.mixins import MacroFieldsMixin

    airflow_step = inspect.signature(BaseOperator._do_render_template_fields)
    assert list(airflow_step.parameters) == ["self", "parent", "template_fields", "context", "jinja_env", "seen_oids"]
    ours = inspect.signature(MacroFieldsMixin._do_render_template_fields)
    assert list(ours.parameters) == list(airflow_step.parameters)
    assert S3ListObjectsOperator._do_render_template_fields is MacroFieldsMixin._do_render_template_fields


def test_interval_window_is_widened_by_lookback() -> None:
    start = datetime.datetime(2025, 4, 14, tzinfo=datetime.timezone.utc)
    end = start + datetime.timedelta(days=1)
    context = {"data_interval_start": start, "data_interval_end": end}
    for lookback in (300, datetime.timedelta(minutes=5)):
        get = S3GetObjectOperator(
            task_id="g", prefix="in/", local_dir="/tmp", incremental="interval", lookback=lookback
        )
        assert get._window(context) == {"modified_since": start - datetime.timedelta(minutes=5), "modified_until": end}
    plain = S3GetObjectOperator(task_id="g", prefix="in/", local_dir="/tmp", incremental="interval")
    assert plain._window(context)["modified_since"] == start
    with pytest.raises(ArgumentError, match="incremental='interval' needs a run with a data interval"):
        plain._window({"data_interval_start": start, "data_interval_end": start})


def test_sensor_new_since_last_success_is_the_previous_successful_start() -> None:
    previous = datetime.datetime(2025, 4, 13, 6, tzinfo=datetime.timezone.utc)
    sensor = S3ObjectSensor(task_id="s", prefix="in/", new_since="last_success")
    assert sensor._since({"prev_start_date_success": previous}) == previous
    assert sensor._since({"prev_start_date_success": None}) is None  # no success yet: everything counts
    interval = S3ObjectSensor(task_id="s", prefix="in/", new_since="data_interval_start")
    assert interval._since({"data_interval_start": previous, "logical_date": None}) == previous
    fixed = S3ObjectSensor(task_id="s", prefix="in/", new_since="2025-04-13T06:00:00Z")
    assert fixed._since({}) == previous


def test_an_unrendered_path_prefix_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "s3connect", "extra": {"bucket": "b-1", "path_prefix": "in/{tenant}", "tenant": "acme"}}
    monkeypatch.setenv("AIRFLOW_CONN_UNRENDERED", json.dumps(conn))
    hook = S3ConnectHook(s3connect_conn_id="unrendered")
    with pytest.raises(MacroError, match=r"has macros in path_prefix 'in/\{tenant\}'.*hook.render_path_prefix"):
        hook.resolve("a.csv")
    hook.render_path_prefix(MacroValues({}, {}, hook.macro_fallbacks()))
    assert hook.resolve("a.csv").key == "in/acme/a.csv"
