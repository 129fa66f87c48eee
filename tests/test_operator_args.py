"""Operator arguments refused at DAG-parse time with a message saying what to fix; sources; error mapping."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from airflow_s3connect.errors import S3ConnectError, WrongRegionError, translate
from airflow_s3connect.operators import S3GetObjectOperator, S3ListObjectsOperator, S3PutObjectOperator
from airflow_s3connect.operators.put_object import expand_source, file_extension

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
    (S3GetObjectOperator, {"local_dir": "/tmp"}, "Give either key=... (one object) or prefix=..."),
    (S3GetObjectOperator, {"key": "a", "prefix": "b/", "local_dir": "/tmp"}, "Give either key=..."),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "incremental": "daily"}, "incremental='daily'"),
    (S3GetObjectOperator, {"key": "a", "local_dir": "/tmp", "incremental": "interval"}, "not to one key"),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "after": "move"}, "after='move'"),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "after": "archive"}, "needs archive_prefix"),
    (S3GetObjectOperator, {"prefix": "b/", "read_into_xcom": True}, "read_into_xcom=True reads one object"),
    (S3GetObjectOperator, {"key": "a"}, "Give local_dir=..."),
    (S3GetObjectOperator, {"prefix": "b/", "local_dir": "/tmp", "on_invalid_key": "ignore"}, "use 'fail' or 'skip'"),
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

    from airflow_s3connect.operators.macro_fields import CONNECTION_FIELDS
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

    from airflow_s3connect.operators.macro_fields import MacroFieldsMixin

    airflow_step = inspect.signature(BaseOperator._do_render_template_fields)
    assert list(airflow_step.parameters) == ["self", "parent", "template_fields", "context", "jinja_env", "seen_oids"]
    ours = inspect.signature(MacroFieldsMixin._do_render_template_fields)
    assert list(ours.parameters) == list(airflow_step.parameters)
    assert S3ListObjectsOperator._do_render_template_fields is MacroFieldsMixin._do_render_template_fields
