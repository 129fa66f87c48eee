# ruff: noqa: E501 - one catalogue case per line reads as a table
"""The bad-input catalogue: every case gets an error that says what to fix, and loses nothing.

Part one is table-driven and needs no Airflow run: connection fields, bucket names, keys,
macros, patterns, local paths, and the S3-side failures (unreachable endpoint, wrong
region, NoSuchBucket, NoSuchKey) on the moto server. Part two runs the operators in one
real DAG run, where the failures only show at run time (missing connection, wrong
connection type, zero matches, unwritable local directory, a file in the way, the XCom
cap), and reads each task's exception through its on_failure_callback.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from airflow_s3connect.connection import parse_settings
from airflow_s3connect.downloads import Downloader, DownloadTask
from airflow_s3connect.errors import (
    ConnectionSettingsError,
    EndpointUnreachableError,
    InvalidKeyError,
    LocalPathError,
    MacroError,
    NoSuchBucketError,
    NoSuchKeyError,
    PatternError,
    WrongRegionError,
    translate,
)
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.local import LocalTree
from airflow_s3connect.macros import MacroValues, render
from airflow_s3connect.objects import TransferConfig
from airflow_s3connect.patterns import compile_pattern
from airflow_s3connect.scope import check_bucket_name, check_key
from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.moto_server import MotoServer, free_port
from tests.support.stores import endpoint_client

ROLE = "arn:aws:iam::123456789012:role/reader"
CONFIG = TransferConfig(max_concurrency=2)


def settings(login: str | None = "AKIAEXAMPLE", password: str | None = "secret", **extra: Any) -> Callable[[], Any]:
    return lambda: parse_settings("cat", login, password, extra)


def role(**extra: Any) -> Callable[[], Any]:
    return settings(**{"auth_type": "assume_role", "role_arn": ROLE, **extra})


def macro(template: str, **values: Any) -> Callable[[], Any]:
    return lambda: render(template, MacroValues({}, values={"tenant": "acme", **values}))


#: (case id, what triggers it, error type, text the message must contain)
PURE: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    # bucket names
    ("bucket-uppercase", lambda: check_bucket_name("My_Bucket"), InvalidKeyError, "Invalid bucket name 'My_Bucket': use 3-63 lowercase"),
    ("bucket-too-short", lambda: check_bucket_name("ab"), InvalidKeyError, "Invalid bucket name 'ab'"),
    ("bucket-too-long", lambda: check_bucket_name("b" * 64), InvalidKeyError, "use 3-63 lowercase letters"),
    ("bucket-ip-shaped", lambda: check_bucket_name("192.168.1.10"), InvalidKeyError, "not shaped like an IP address"),
    ("bucket-double-dot", lambda: check_bucket_name("a..b"), InvalidKeyError, "Invalid bucket name 'a..b'"),
    ("bucket-leading-dash", lambda: check_bucket_name("-data"), InvalidKeyError, "starting and ending with a letter or digit"),
    ("bucket-in-connection", settings(bucket="Data_Lake"), ConnectionSettingsError, "field 'bucket': Invalid bucket name 'Data_Lake'"),
    # keys
    ("key-over-1024-bytes", lambda: check_key("k" * 1025), InvalidKeyError, "key is 1025 bytes long; S3 keys are at most 1024 UTF-8 bytes"),
    ("key-multibyte-over-1024", lambda: check_key("é" * 513), InvalidKeyError, "is 1026 bytes long"),
    ("key-empty", lambda: check_key(""), InvalidKeyError, "Empty key: give a non-empty object key"),
    ("key-dotdot-segment", lambda: check_key("exports/../secrets.csv"), InvalidKeyError, "contains a '.' or '..' segment"),
    ("key-control-char", lambda: check_key("a\nb.csv"), InvalidKeyError, "contains control characters: remove that from the key"),
    # keys that would leave local_dir on download
    ("local-traversal", lambda: LocalTree(Path("/tmp/in")).path_for("in/../../etc/passwd", "in/"), LocalPathError, "cannot be saved under '/tmp/in'"),
    ("local-absolute", lambda: LocalTree(Path("/tmp/in")).path_for("in//etc/passwd", "in/"), LocalPathError, "its path '/etc/passwd' has an empty segment (a leading, trailing or doubled '/')"),
    ("local-backslash", lambda: LocalTree(Path("/tmp/in")).path_for("in/a\\..\\b", "in/"), LocalPathError, "Rename the object or narrow prefix/pattern"),
    # macros
    ("macro-unknown", macro("exports/{tennant}/x.csv"), MacroError, "Unknown macro {tennant}. Did you mean {tenant}?"),
    ("macro-attribute", macro("{tenant.__class__}"), MacroError, "Unknown macro {tenant.__class__}"),
    ("macro-index", macro("{tenant[0]}"), MacroError, "Unknown macro {tenant[0]}"),
    ("macro-positional", macro("{0}.csv"), MacroError, "Unknown macro {0}"),
    ("macro-conversion", macro("{tenant!r}"), MacroError, "{tenant!r}: conversions are not supported; write {tenant}"),
    ("macro-format-on-text", macro("{tenant:%Y}"), MacroError, "only date macros take a format spec"),
    ("macro-unclosed", macro("exports/{tenant"), MacroError, "Write a literal brace as {{ or }}"),
    ("macro-value-slash", macro("{tenant}/x", tenant="acme/../other"), MacroError, "is not safe in a key: it contains '/'; it must be one non-empty segment"),
    ("macro-value-dotdot", macro("{tenant}/x", tenant=".."), MacroError, "Value '..' of {tenant} is not safe in a key"),
    ("macro-missing-value", macro("{tenant}/x", tenant=""), MacroError, "No value for {tenant}: pass tenant=..."),
    # patterns
    ("pattern-unclosed-bracket", lambda: compile_pattern("data/[abc.csv"), PatternError, "'[' at position 5 is never closed"),
    ("pattern-unclosed-mask", lambda: compile_pattern("data/{YYYY.csv"), PatternError, "'{' at position 5 is never closed"),
    # connection fields
    ("arn-not-a-role", role(role_arn="arn:aws:s3:::my-bucket"), ConnectionSettingsError, "field 'role_arn': 'arn:aws:s3:::my-bucket' is malformed"),
    ("arn-short-account", role(role_arn="arn:aws:iam::12345:role/x"), ConnectionSettingsError, "field 'role_arn'"),
    ("external-id-too-short", role(external_id="x"), ConnectionSettingsError, "field 'external_id': 'x' is malformed"),
    ("external-id-space", role(external_id="tenant acme"), ConnectionSettingsError, "field 'external_id'"),
    ("duration-too-short", role(session_duration=600), ConnectionSettingsError, "600 is out of range. Fix: use a value from 900 to 43200"),
    ("duration-too-long", role(session_duration=50000), ConnectionSettingsError, "50000 is out of range"),
    ("duration-not-a-number", role(session_duration="1h"), ConnectionSettingsError, "'1h' is not a whole number"),
    ("auth-type-unknown", settings(auth_type="oauth"), ConnectionSettingsError, "'oauth' is not a valid choice. Fix: choose one of access_key, assume_role"),
    ("assume-role-without-arn", settings(auth_type="assume_role"), ConnectionSettingsError, "assume_role needs the ARN of the role to assume"),
    ("arn-with-access-key", settings(role_arn=ROLE), ConnectionSettingsError, "is only used with auth_type assume_role"),
    ("key-id-without-secret", settings(password=None), ConnectionSettingsError, "an AWS Access Key ID is set without its Secret Access Key"),
    ("unknown-field", settings(regoin_name="eu-west-1"), ConnectionSettingsError, "did you mean 'region_name'?"),
    ("endpoint-not-http", settings(endpoint_url="ftp://files.example.com"), ConnectionSettingsError, "is not an http(s) URL"),
    ("region-malformed", settings(region_name="EU West"), ConnectionSettingsError, "field 'region_name'"),
    ("concurrency-zero", settings(max_concurrency=0), ConnectionSettingsError, "use a value from 1 to 64"),
    ("read-timeout-zero", settings(read_timeout=0), ConnectionSettingsError, "field 'read_timeout': 0 is out of range"),
    ("path-prefix-dotdot", settings(path_prefix="tenants/../all"), ConnectionSettingsError, "'tenants/../all' contains a '.' or '..' segment"),
    ("tenant-with-slash", settings(tenant="acme/eu"), ConnectionSettingsError, "field 'tenant'"),
    ("ca-bundle-without-verify", settings(verify_ssl=False, ca_bundle="/etc/ca.pem"), ConnectionSettingsError, "a CA bundle is set while TLS verification is off"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "trigger", "error", "message"), PURE, ids=[c[0] for c in PURE])
def test_bad_input_is_refused_with_what_to_fix(
    case: str, trigger: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        trigger()
    assert message in str(info.value)


def _client(url: str, **extra: Any) -> Any:
    return endpoint_client(url, region=REGION, **extra)


def test_unreachable_endpoint_fails_fast_and_bounded(tmp_path: Path) -> None:
    client = _client(f"http://127.0.0.1:{free_port()}", connect_timeout=1, max_attempts=2)
    started = time.monotonic()
    with pytest.raises(EndpointUnreachableError) as info:
        list(Downloader(client, BUCKET, CONFIG).download([DownloadTask("k.csv", tmp_path / "k.csv")]))
    assert time.monotonic() - started < 10
    assert re.search(
        r"GetObject could not reach http://127\.0\.0\.1:\d+, on every attempt: check endpoint_url", str(info.value)
    )
    assert list(tmp_path.iterdir()) == []


def test_no_such_bucket_and_no_such_key(moto: MotoServer, tmp_path: Path) -> None:
    client = _client(moto.url)
    with pytest.raises(
        NoSuchBucketError, match="Bucket 'not-there' does not exist on this endpoint: check the bucket name"
    ):
        list(Lister(client, "not-there", ListQuery(base="x/")))
    with pytest.raises(NoSuchKeyError, match=f"No object s3://{BUCKET}/missing.csv: check the key"):
        list(Downloader(client, BUCKET, CONFIG).download([DownloadTask("missing.csv", tmp_path / "m.csv")]))
    assert list(tmp_path.iterdir()) == []


def test_wrong_region_names_the_bucket_region() -> None:
    # moto serves every region on one endpoint, so S3's redirect is built as S3 sends it.
    response = {
        "Error": {"Code": "PermanentRedirect", "Message": "...", "Region": "us-west-2"},
        "ResponseMetadata": {"HTTPStatusCode": 301, "HTTPHeaders": {"x-amz-bucket-region": "us-west-2"}},
    }
    error = translate(ClientError(response, "GetObject"), "GetObject", "eu-data")  # type: ignore[arg-type]
    assert isinstance(error, WrongRegionError)
    assert "it is in us-west-2; set the connection's region_name" in str(error)


# --------------------------------------------------------------------------- in a DAG run
RUNTIME_DAG = """
import json, pendulum
from pathlib import Path
from airflow.sdk import DAG
from airflow_s3connect.operators import S3DeleteObjectsOperator, S3GetObjectOperator, S3ListObjectsOperator

def remember(context):
    Path("OUT/errors").mkdir(parents=True, exist_ok=True)
    Path("OUT/errors", context["ti"].task_id).write_text(str(context["exception"]))

with DAG("s3c_bad_input", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
         default_args={"on_failure_callback": remember}) as dag:
    S3ListObjectsOperator(task_id="missing_connection", s3connect_conn_id="nobody_made_this", prefix="x/")
    S3ListObjectsOperator(task_id="wrong_connection_type", s3connect_conn_id="bi_aws", prefix="x/")
    S3ListObjectsOperator(task_id="no_such_bucket", s3connect_conn_id="bi_open", bucket="no-such-bucket",
                          prefix="x/")
    S3GetObjectOperator(task_id="zero_matches_fail", s3connect_conn_id="bi", prefix="in/", pattern="*.parquet",
                        local_dir="OUT/zero-fail", fail_on_empty=True)
    S3GetObjectOperator(task_id="zero_matches_ok", s3connect_conn_id="bi", prefix="in/", pattern="*.parquet",
                        local_dir="OUT/zero-ok")
    S3GetObjectOperator(task_id="unwritable_local_dir", s3connect_conn_id="bi", prefix="in/",
                        local_dir="OUT/a-file/sub")
    S3GetObjectOperator(task_id="file_in_the_way", s3connect_conn_id="bi", prefix="nested/", local_dir="OUT/in-the-way")
    S3GetObjectOperator(task_id="xcom_cap", s3connect_conn_id="bi", key="in/big.csv", read_into_xcom=True,
                        max_xcom_bytes=1000)
    S3DeleteObjectsOperator(task_id="delete_cap", s3connect_conn_id="bi", prefix="in/", max_objects=1)
"""

RUNTIME: dict[str, str] = {
    "missing_connection": "Connection 'nobody_made_this' is not defined: create it with type 's3connect'",
    "wrong_connection_type": "field 'conn_type': the connection is of type 'aws', not 's3connect'",
    "no_such_bucket": "Bucket 'no-such-bucket' does not exist on this endpoint",
    "zero_matches_fail": "Nothing under s3://s3connect-test/in/ matches '*.parquet' (fail_on_empty=True): check prefix",
    "unwritable_local_dir": "Make local_dir writable and remove files that sit where directories must go",
    "file_in_the_way": "remove files that sit where directories must go",
    "xcom_cap": "over the XCom limit of 1000",
    "delete_cap": "has more than max_objects=1 objects to delete: nothing was deleted",
}


def test_runtime_bad_input_in_a_dag_run(
    moto: MotoServer, make_conn: Callable[..., str], airflow_db: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="in/a.csv", Body=b"a,b\n1,2\n")
    admin.put_object(Bucket=BUCKET, Key="in/big.csv", Body=b"x" * 5000)
    admin.put_object(Bucket=BUCKET, Key="nested/dir/file.csv", Body=b"nested")
    make_conn("bi", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION, bucket=BUCKET)
    make_conn("bi_open", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION)
    monkeypatch.setenv("AIRFLOW_CONN_BI_AWS", json.dumps({"conn_type": "aws", "login": "a", "password": "b"}))
    (tmp_path / "a-file").write_text("I am a file, not a directory")
    (tmp_path / "in-the-way").mkdir()
    (tmp_path / "in-the-way" / "dir").write_text("a file where the directory dir/ must go")
    path = write_dag("s3c_bad_input", RUNTIME_DAG.replace("OUT", str(tmp_path)))
    result = run_dag(path, "s3c_bad_input", datetime.datetime(2025, 1, 2, tzinfo=datetime.timezone.utc))

    states = {task: state for (task, _), state in result.task_states.items()}
    assert states == {**dict.fromkeys(RUNTIME, "failed"), "zero_matches_ok": "success"}
    errors = {p.name: p.read_text() for p in (tmp_path / "errors").iterdir()}
    for task, message in RUNTIME.items():
        assert message in errors[task], f"{task}: {errors[task]!r}"
    assert result.value("zero_matches_ok") == []
    # Nothing half-done: no temporary files, nothing created where a file was in the way.
    assert [p for p in tmp_path.rglob("*") if ".part" in p.name] == []
    assert (tmp_path / "in-the-way" / "dir").read_text() == "a file where the directory dir/ must go"
    assert (tmp_path / "a-file").read_text() == "I am a file, not a directory"
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="in/")["KeyCount"] == 2  # the capped delete deleted nothing
