"""An access point (its ARN, or its alias) stands where a bucket does, scoped exactly like one.

Requests to an access point ARN go to Amazon S3's access point host; they are checked here
as URLs the client signs (presigned, nothing sent), at the wire rule, and by the parameter
check. An alias is a bucket name and needs nothing of its own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from airflow_s3connect.allowlist import check_call
from airflow_s3connect.connection import parse_settings
from airflow_s3connect.errors import ScopeError
from airflow_s3connect.scope import Scope, check_bucket_name
from tests.support.stores import endpoint_client

ARN = "arn:aws:s3:eu-west-1:123456789012:accesspoint/acme-ap"
ALIAS = "acme-ap-abcdefgh1234567890ijklmno-s3alias"


def _aws_client(bucket: str) -> object:
    from airflow_s3connect.client import build_s3_client, build_session

    settings = parse_settings("ap", "AKIAAP", "ap-secret-value", {"bucket": bucket, "path_prefix": "tenants/acme",
                                                                  "region_name": "eu-west-1"})  # fmt: skip
    return build_s3_client(settings, build_session(settings))


def test_an_access_point_arn_or_alias_is_a_valid_bucket() -> None:
    assert check_bucket_name(ARN) == ARN
    assert check_bucket_name(ALIAS) == ALIAS
    assert parse_settings("c", None, None, {"bucket": ARN}).bucket == ARN
    assert Scope(ARN, "tenants/acme/").resolve("a.csv").key == "tenants/acme/a.csv"


def test_urls_of_an_access_point_are_scoped_like_a_buckets() -> None:
    client = _aws_client(ARN)
    url = client.generate_presigned_url("get_object", Params={"Bucket": ARN, "Key": "tenants/acme/a.csv"})
    parts = urlsplit(url)
    assert parts.hostname == "acme-ap-123456789012.s3-accesspoint.eu-west-1.amazonaws.com"
    assert parts.path == "/tenants/acme/a.csv"
    for params in (
        {"Bucket": ARN, "Key": "tenants/globex/a.csv"},
        {"Bucket": "arn:aws:s3:eu-west-1:123456789012:accesspoint/globex-ap", "Key": "tenants/acme/a.csv"},
        {"Bucket": "acme-data", "Key": "tenants/acme/a.csv"},
    ):
        with pytest.raises(ScopeError):
            client.generate_presigned_url("get_object", Params=params)
    with pytest.raises(ScopeError, match="with no Prefix"):
        client.generate_presigned_url("list_objects_v2", Params={"Bucket": ARN})
    copy = {"Bucket": ARN, "Key": "tenants/acme/b.csv", "CopySource": f"{ARN}/object/tenants/acme/a.csv"}
    check_call(Scope(ARN, "tenants/acme/"), "CopyObject", copy)
    with pytest.raises(ScopeError, match="CopySource"):
        check_call(Scope(ARN, "tenants/acme/"), "CopyObject", {**copy, "CopySource": f"{ARN}/object/tenants/globex/x"})


def test_an_alias_is_scoped_as_the_bucket_name_it_is() -> None:
    client = endpoint_client("http://127.0.0.1:9", bucket=ALIAS, path_prefix="tenants/acme", max_attempts=1)
    client.generate_presigned_url("get_object", Params={"Bucket": ALIAS, "Key": "tenants/acme/a.csv"})
    with pytest.raises(ScopeError):
        client.generate_presigned_url("get_object", Params={"Bucket": ALIAS, "Key": "tenants/globex/a.csv"})
