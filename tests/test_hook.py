"""S3ConnectHook over real HTTP against moto: both auth modes, refresh, scope, test_connection."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import time_machine

from airflow_s3connect.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConnectionSettingsError,
    CredentialsNotFoundError,
    ScopeError,
    translated,
)
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import IamFactory, MotoServer

ROLE_NAME = "cross-account-writer"
EXTERNAL_ID = "tenant-acme:7f3a9c"


def test_access_key_round_trip(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("ak", "AKIAEXAMPLE", "secret", region_name=REGION, endpoint_url=moto.url)
    client = S3ConnectHook(s3connect_conn_id=conn_id).get_conn()
    client.put_object(Bucket=BUCKET, Key="a/b.txt", Body=b"hello")
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key="a/b.txt")["Body"].read() == b"hello"


def test_one_client_per_hook_shared_across_threads(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    conn_id = make_conn("ak", "AKIAEXAMPLE", "secret", region_name=REGION, endpoint_url=moto.url, max_concurrency=4)
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(lambda _: hook.get_conn(), range(32)))
    assert len({id(c) for c in clients}) == 1
    config = clients[0].meta.config
    assert config.max_pool_connections == 5
    assert config.retries["mode"] == "standard"


def test_session_token_reaches_the_server(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    temporary = moto.admin_client("sts").get_session_token()["Credentials"]
    conn_id = make_conn(
        "temp",
        temporary["AccessKeyId"],
        temporary["SecretAccessKey"],
        aws_session_token=temporary["SessionToken"],
        region_name=REGION,
        endpoint_url=moto.url,
    )
    with moto.recording() as rec:
        S3ConnectHook(s3connect_conn_id=conn_id).get_conn().put_object(Bucket=BUCKET, Key="t", Body=b"1")
    (put,) = rec.s3()
    assert put.headers["X-Amz-Security-Token"] == temporary["SessionToken"]
    assert temporary["AccessKeyId"] in put.headers["Authorization"]


def test_no_login_uses_the_default_chain(
    iam: IamFactory, make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = iam.user("worker", ["s3:PutObject"], [f"arn:aws:s3:::{BUCKET}/*"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker.secret)
    conn_id = make_conn("chain", region_name=REGION, endpoint_url=iam.server.url, bucket=BUCKET)
    iam.enforce()
    S3ConnectHook(s3connect_conn_id=conn_id).get_conn().put_object(Bucket=BUCKET, Key="from-chain", Body=b"x")
    head = iam.admin_client("s3").head_object(Bucket=BUCKET, Key="from-chain")
    assert head["ContentLength"] == 1


def test_assume_role_sends_external_id_session_name_and_duration(
    moto: MotoServer, make_conn: Callable[..., str]
) -> None:
    role_arn = "arn:aws:iam::210987654321:role/partner-writer"
    conn_id = make_conn(
        "xacct",
        "AKIABASE",
        "base-secret",
        auth_type="assume_role",
        role_arn=role_arn,
        external_id=EXTERNAL_ID,
        session_duration=1800,
        region_name=REGION,
        endpoint_url=moto.url,
        sts_endpoint_url=moto.url,
    )
    with moto.recording() as rec:
        client = S3ConnectHook(s3connect_conn_id=conn_id).get_conn()
        client.put_object(Bucket=BUCKET, Key="via-role", Body=b"r")
        client.put_object(Bucket=BUCKET, Key="via-role-2", Body=b"r")
    (assume,) = rec.sts("AssumeRole")
    assert assume.form["RoleArn"] == role_arn
    assert assume.form["ExternalId"] == EXTERNAL_ID
    assert assume.form["RoleSessionName"] == "airflow-s3connect-xacct"
    assert assume.form["DurationSeconds"] == "1800"
    assert "AKIABASE" in assume.headers["Authorization"]
    puts = rec.s3()
    assert len(puts) == 2
    assert all("AKIABASE" not in p.headers["Authorization"] for p in puts)
    assert all("X-Amz-Security-Token" in p.headers for p in puts)


def test_assume_role_least_privilege_on_enforcing_server(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    base = iam.user("base", ["sts:AssumeRole"])
    role_arn = iam.role(
        ROLE_NAME, ["s3:PutObject"], [f"arn:aws:s3:::{BUCKET}/*"], trusted=base.arn, external_id=EXTERNAL_ID
    )
    common = {"region_name": REGION, "endpoint_url": iam.server.url, "sts_endpoint_url": iam.server.url}
    role_conn = {"auth_type": "assume_role", "role_arn": role_arn, "bucket": BUCKET, **common}
    via_role = make_conn("via_role", base.key, base.secret, external_id=EXTERNAL_ID, **role_conn)
    wrong_id = make_conn("wrong_id", base.key, base.secret, external_id="tenant-other:000000", **role_conn)
    direct = make_conn("direct", base.key, base.secret, bucket=BUCKET, **common)
    iam.enforce()

    S3ConnectHook(s3connect_conn_id=via_role).get_conn().put_object(Bucket=BUCKET, Key="in", Body=b"ok")
    assert iam.admin_client("s3").get_object(Bucket=BUCKET, Key="in")["Body"].read() == b"ok"

    ok, message = S3ConnectHook(s3connect_conn_id=wrong_id).test_connection()
    assert not ok
    assert f"Access denied: sts:AssumeRole on {role_arn}" in message

    hook = S3ConnectHook(s3connect_conn_id=direct)
    ref = hook.resolve("in2")
    client = hook.get_conn()
    with pytest.raises(AccessDeniedError) as info, translated("PutObject", ref.bucket, ref.key):
        client.put_object(Bucket=ref.bucket, Key=ref.key, Body=b"no")
    assert info.value.action == "s3:PutObject"
    assert str(info.value).startswith(f"Access denied: s3:PutObject on arn:aws:s3:::{BUCKET}/in2")


def test_assume_role_from_the_default_chain(
    iam: IamFactory, make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = iam.user("worker-node", ["sts:AssumeRole"])
    role_arn = iam.role(ROLE_NAME, ["s3:PutObject"], trusted=worker.arn, external_id=EXTERNAL_ID)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker.secret)
    conn_id = make_conn(
        "chain_role",
        auth_type="assume_role",
        role_arn=role_arn,
        external_id=EXTERNAL_ID,
        region_name=REGION,
        endpoint_url=iam.server.url,
        sts_endpoint_url=iam.server.url,
    )
    iam.enforce()
    S3ConnectHook(s3connect_conn_id=conn_id).get_conn().put_object(Bucket=BUCKET, Key="chain", Body=b"c")
    assert iam.admin_client("s3").get_object(Bucket=BUCKET, Key="chain")["Body"].read() == b"c"


def test_assume_role_without_any_source_credentials(make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("nothing", auth_type="assume_role", role_arn="arn:aws:iam::123456789012:role/r")
    with pytest.raises(CredentialsNotFoundError, match="has no source credentials"):
        S3ConnectHook(s3connect_conn_id=conn_id).get_conn()


def test_secrets_stay_out_of_reprs_errors_and_logs(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    user = iam.user("secretive", [])
    token = "FQoGZXIvYXdzEXAMPLE-session-token-value"
    conn_id = make_conn(
        "secretive",
        user.key,
        user.secret,
        aws_session_token=token,
        bucket=BUCKET,
        region_name=REGION,
        endpoint_url=iam.server.url,
    )
    iam.enforce()
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    ok, message = hook.test_connection()
    assert not ok
    for text in (message, repr(hook.settings), str(hook.settings), repr(hook)):
        assert user.secret not in text
        assert token not in text
    redacted = str(redact(f"secret={user.secret} token={token}"))
    assert user.secret not in redacted
    assert token not in redacted


def test_assume_role_denied_names_the_action_and_role(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    base = iam.user("nobody", ["s3:GetObject"])
    role_arn = iam.role(ROLE_NAME, ["s3:PutObject"], trusted=base.arn)
    conn_id = make_conn(
        "denied",
        base.key,
        base.secret,
        auth_type="assume_role",
        role_arn=role_arn,
        bucket=BUCKET,
        region_name=REGION,
        endpoint_url=iam.server.url,
        sts_endpoint_url=iam.server.url,
    )
    iam.enforce()
    ok, message = S3ConnectHook(s3connect_conn_id=conn_id).test_connection()
    assert not ok
    assert f"sts:AssumeRole on {role_arn}" in message
    assert "trust policy" in message


def test_assumed_credentials_refresh_before_expiry(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn(
        "refresh",
        "AKIABASE",
        "base-secret",
        auth_type="assume_role",
        role_arn="arn:aws:iam::210987654321:role/partner-writer",
        region_name=REGION,
        endpoint_url=moto.url,
        sts_endpoint_url=moto.url,
    )
    client = S3ConnectHook(s3connect_conn_id=conn_id).get_conn()
    with moto.recording() as rec:
        client.put_object(Bucket=BUCKET, Key="before", Body=b"1")
    assert len(rec.sts("AssumeRole")) == 1
    token_before = rec.s3()[0].headers["X-Amz-Security-Token"]

    # 50 minutes later the one-hour session is inside botocore's refresh margin.
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=50)
    with time_machine.travel(later, tick=True), moto.recording() as rec:
        client.put_object(Bucket=BUCKET, Key="after", Body=b"2")
    assert len(rec.sts("AssumeRole")) == 1
    (put,) = rec.s3()
    assert put.headers["X-Amz-Security-Token"] != token_before
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key="after")["Body"].read() == b"2"


def test_short_sessions_do_not_assume_role_per_request(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn(
        "short",
        "AKIABASE",
        "base-secret",
        auth_type="assume_role",
        role_arn="arn:aws:iam::210987654321:role/partner-writer",
        session_duration=900,
        region_name=REGION,
        endpoint_url=moto.url,
        sts_endpoint_url=moto.url,
    )
    client = S3ConnectHook(s3connect_conn_id=conn_id).get_conn()
    with moto.recording() as rec:
        for i in range(5):
            client.put_object(Bucket=BUCKET, Key=f"k{i}", Body=b"1")
    assert len(rec.sts("AssumeRole")) == 1
    assert len(rec.s3()) == 5


def test_wrong_secret_is_a_clear_authentication_error(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    user = iam.user("reader", ["s3:ListBucket"])
    wrong = "definitely-not-the-secret-0123456789"
    conn_id = make_conn("wrong", user.key, wrong, bucket=BUCKET, region_name=REGION, endpoint_url=iam.server.url)
    iam.enforce()
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    ok, message = hook.test_connection()
    assert not ok
    assert "Secret Access Key does not match" in message
    assert wrong not in message
    with pytest.raises(AuthenticationError) as info, translated("ListObjectsV2", BUCKET):
        hook.get_conn().list_objects_v2(Bucket=BUCKET)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_scope_violations_fail_before_any_request(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn(
        "scoped", "AKIA1", "s", bucket=BUCKET, path_prefix="tenants/acme", region_name=REGION, endpoint_url=moto.url
    )
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    assert hook.resolve("2025/x.csv").key == "tenants/acme/2025/x.csv"
    client = hook.get_conn()
    with moto.recording() as rec:
        with pytest.raises(ScopeError, match="outside the connection's scope s3://s3connect-test/tenants/acme/"):
            hook.resolve("x", bucket="another-bucket")
        with pytest.raises(ScopeError, match="outside the connection's scope"):
            hook.resolve("s3://s3connect-test/tenants/other/x")
        # The raw client is guarded too.
        with pytest.raises(ScopeError, match="PutObject: Key 'elsewhere' is outside"):
            client.put_object(Bucket=BUCKET, Key="elsewhere", Body=b"x")
        with pytest.raises(ScopeError, match="PutObject: Bucket names bucket 'another-bucket'"):
            client.put_object(Bucket="another-bucket", Key="tenants/acme/x", Body=b"x")
        with pytest.raises(ScopeError, match="pass a Prefix starting with 'tenants/acme/'"):
            client.list_objects_v2(Bucket=BUCKET)
    assert rec.requests == []
    client.put_object(Bucket=BUCKET, Key="tenants/acme/ok", Body=b"x")


def test_test_connection_with_bucket_lists_one_key_only(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("tc", "AKIA1", "s", bucket=BUCKET, path_prefix="in", region_name=REGION, endpoint_url=moto.url)
    with moto.recording() as rec:
        ok, message = S3ConnectHook(s3connect_conn_id=conn_id).test_connection()
    assert ok, message
    assert message == "Connected: s3:ListBucket works on s3://s3connect-test/in/ (empty so far)."
    (listing,) = rec.requests
    assert listing.path == f"/{BUCKET}"
    assert listing.query["max-keys"] == ["1"]
    assert listing.query["prefix"] == ["in/"]


def test_test_connection_names_missing_list_permission(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    writer = iam.user("writer", ["s3:PutObject", "s3:ListAllMyBuckets"])
    conn_id = make_conn(
        "tc_denied", writer.key, writer.secret, bucket=BUCKET, region_name=REGION, endpoint_url=iam.server.url
    )
    iam.enforce()
    ok, message = S3ConnectHook(s3connect_conn_id=conn_id).test_connection()
    assert not ok
    assert f"Access denied: s3:ListBucket on arn:aws:s3:::{BUCKET}" in message
    assert "Put-only" in message


def test_test_connection_on_aws_without_bucket_uses_get_caller_identity(
    iam: IamFactory, make_conn: Callable[..., str]
) -> None:
    user = iam.user("noperms", [])
    conn_id = make_conn("tc_id", user.key, user.secret, region_name=REGION, sts_endpoint_url=iam.server.url)
    iam.enforce()
    with iam.server.recording() as rec:
        ok, message = S3ConnectHook(s3connect_conn_id=conn_id).test_connection()
    assert ok, message
    assert user.arn in message
    assert [r.sts_action for r in rec.requests] == ["GetCallerIdentity"]


def test_airflow_connections_test_cli(moto: MotoServer, make_conn: Callable[..., str], airflow_home: Path) -> None:
    good = make_conn("cli_conn", "AKIA1", "s", bucket=BUCKET, region_name=REGION, endpoint_url=moto.url)
    missing = make_conn("cli_missing", "AKIA1", "s", bucket="no-such-bucket", region_name=REGION, endpoint_url=moto.url)
    airflow_bin = str(Path(sys.executable).parent / "airflow")

    def cli_test(conn_id: str) -> str:
        result = subprocess.run(
            [airflow_bin, "connections", "test", conn_id],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            timeout=120,
        )
        return result.stdout + result.stderr

    assert "Connection success!" in cli_test(good)
    failed = cli_test(missing)
    assert "Connection failed!" in failed
    assert "Bucket 'no-such-bucket' does not exist on this endpoint" in failed


def test_model_connection_test_as_the_ui_button(moto: MotoServer) -> None:
    """The API server's Test button builds an ORM Connection and calls test_connection on it."""
    from airflow.models.connection import Connection

    conn = Connection(
        conn_id="ui_form",
        conn_type="s3connect",
        login="AKIA1",
        password="s",
        extra={
            "extra__s3connect__bucket": BUCKET,
            "extra__s3connect__region_name": REGION,
            "extra__s3connect__endpoint_url": moto.url,
        },
    )
    os.environ["AIRFLOW_CONN_UI_FORM"] = conn.as_json()
    try:
        ok, message = conn.test_connection()
    finally:
        del os.environ["AIRFLOW_CONN_UI_FORM"]
    assert ok, message
    assert "s3:ListBucket works" in message


def test_transport_settings_reach_the_client(make_conn: Callable[..., str], tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    conn_id = make_conn(
        "transport",
        "AKIA1",
        "s",
        endpoint_url="https://minio.internal:9000",
        addressing_style="path",
        ca_bundle=str(bundle),
        proxy_url="http://proxy.internal:3128",
        max_concurrency=12,
        region_name="us-east-1",
    )
    client = S3ConnectHook(s3connect_conn_id=conn_id).get_conn()
    config = client.meta.config
    assert config.s3 == {"addressing_style": "path"}
    assert config.proxies == {"http": "http://proxy.internal:3128", "https": "http://proxy.internal:3128"}
    assert config.max_pool_connections == 13
    assert client.meta.endpoint_url == "https://minio.internal:9000"
    assert client._endpoint.http_session._verify == str(bundle)

    no_tls = make_conn("no_tls", "AKIA1", "s", verify_ssl="false", region_name="us-east-1")
    assert S3ConnectHook(s3connect_conn_id=no_tls).get_conn()._endpoint.http_session._verify is False

    missing = make_conn("missing_ca", "AKIA1", "s", ca_bundle=str(tmp_path / "nope.pem"))
    with pytest.raises(ConnectionSettingsError, match=r"field 'ca_bundle'.*not a file on this worker"):
        S3ConnectHook(s3connect_conn_id=missing).get_conn()
