"""Account pinning: a connection's expected_bucket_owner goes with every request that takes it,
so S3 itself refuses a bucket another account owns (a typo, a deleted and re-created name).

moto accepts the headers without checking them: the tests assert what reaches the wire,
on every request our doors send (hook, operator engine, copies, deletes, the Test button).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from airflow_s3connect.connection import parse_settings
from airflow_s3connect.errors import ConnectionSettingsError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer

OWNER = "111122223333"


def test_the_field_is_validated_with_its_fix() -> None:
    with pytest.raises(ConnectionSettingsError, match=r"expected_bucket_owner.*12-digit AWS account id"):
        parse_settings("c", None, None, {"expected_bucket_owner": "1234"})
    assert parse_settings("c", None, None, {"expected_bucket_owner": OWNER}).expected_bucket_owner == OWNER


def test_every_request_carries_the_owner(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("pinned", "AKIA1", "s", bucket=BUCKET, path_prefix="in", region_name=REGION,
                        endpoint_url=moto.url, expected_bucket_owner=OWNER)  # fmt: skip
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    with moto.recording() as rec:
        hook.upload("a.csv", data=b"a")
        hook.read("a.csv")
        list(hook.iter_objects(""))
        hook.copy(source_key="a.csv", target_prefix="copies/")
        hook.delete(["a.csv", "copies/a.csv"])
        ok, message = hook.test_connection()
    assert ok
    assert f"pinned to account {OWNER}" in message
    requests = rec.s3()
    assert len(requests) >= 6
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers.get("x-amz-expected-bucket-owner") == OWNER, (request.method, request.url)
        if "x-amz-copy-source" in headers:
            assert headers.get("x-amz-source-expected-bucket-owner") == OWNER


def test_a_caller_may_pin_another_owner_for_one_call(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("pinned2", "AKIA1", "s", bucket=BUCKET, region_name=REGION, endpoint_url=moto.url,
                        expected_bucket_owner=OWNER)  # fmt: skip
    client = S3ConnectHook(s3connect_conn_id=conn_id).get_conn()
    with moto.recording() as rec:
        client.put_object(Bucket=BUCKET, Key="x", Body=b"x", ExpectedBucketOwner="444455556666")
    assert {k.lower(): v for k, v in rec.s3()[0].headers.items()}["x-amz-expected-bucket-owner"] == "444455556666"
