"""Connection settings: every way a connection is stored, every validation error."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_s3connect.connection import (
    FIELDS,
    AddressingStyle,
    AuthType,
    ConnectionSettings,
    parse_settings,
    settings_from_connection,
)
from airflow_s3connect.errors import ConnectionSettingsError

ROLE = "arn:aws:iam::210987654321:role/data/airflow-reader"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLETOKEN"


def parse(extra: dict[str, Any] | None = None, login: str | None = None, password: str | None = None, **kw: Any):
    return parse_settings("conn", login, password, extra or {}, **kw)


def test_defaults_are_the_form_defaults() -> None:
    settings = parse()
    assert settings.auth_type is AuthType.ACCESS_KEY
    assert settings.addressing_style is AddressingStyle.AUTO
    assert settings.session_duration == 3600
    assert settings.max_concurrency == 8
    assert settings.verify_ssl is True
    assert settings.aws_access_key_id is None
    defaults = {f.name: f.schema.get("default") for f in FIELDS if "default" in f.schema}
    assert defaults == {
        "auth_type": "access_key",
        "session_duration": 3600,
        "addressing_style": "auto",
        "verify_ssl": True,
        "max_concurrency": 8,
        "max_attempts": 5,
        "connect_timeout": 10,
        "read_timeout": 60,
        "checksum_mode": "auto",
        "engine": "auto",
    }
    assert settings.upload_checksums == "sdk"  # no endpoint: AWS
    assert (settings.max_attempts, settings.connect_timeout, settings.read_timeout) == (5, 10, 60)


def test_every_spec_field_parses_from_json_extras() -> None:
    extra = {
        "auth_type": "assume_role",
        "aws_session_token": TOKEN,
        "role_arn": ROLE,
        "external_id": "tenant-42:abc",
        "role_session_name": "nightly-load",
        "session_duration": 7200,
        "region_name": "eu-west-1",
        "endpoint_url": "https://s3.eu-west-1.amazonaws.com",
        "sts_endpoint_url": "https://sts.eu-west-1.amazonaws.com",
        "addressing_style": "virtual",
        "verify_ssl": True,
        "ca_bundle": "/etc/ssl/certs/ca.pem",
        "proxy_url": "http://proxy.internal:3128",
        "bucket": "acme-data",
        "expected_bucket_owner": "111122223333",
        "server_side_encryption": "aws:kms",
        "kms_key_id": "alias/billing",
        "bucket_key_enabled": "true",
        "kms_encryption_context": '{"project": "billing"}',
        "acl": "bucket-owner-full-control",
        "storage_class": "STANDARD_IA",
        "tags": "team=data",
        "requester_pays": True,
        "path_prefix": "/exports/{tenant}/",
        "tenant": "acme-corp",
        "root_tenant_id": "acme",
        "env_id": "prod.hg.acme.com",
        "max_concurrency": 16,
        "max_attempts": 8,
        "connect_timeout": 3,
        "read_timeout": 120,
        "checksum_mode": "header",
        "engine": "botocore",
    }
    s = parse(extra, login="ASIAEXAMPLE", password=SECRET)
    assert s.engine == "botocore"
    assert s.upload_checksums == "header"
    assert s.auth_type is AuthType.ASSUME_ROLE
    assert s.aws_session_token == TOKEN
    assert (s.role_arn, s.external_id, s.session_name, s.session_duration) == (
        ROLE,
        "tenant-42:abc",
        "nightly-load",
        7200,
    )
    assert s.addressing_style is AddressingStyle.VIRTUAL
    assert s.path_prefix == "exports/{tenant}"
    assert (s.bucket, s.tenant, s.root_tenant_id, s.env_id, s.max_concurrency) == (
        "acme-data",
        "acme-corp",
        "acme",
        "prod.hg.acme.com",
        16,
    )
    assert (s.max_attempts, s.connect_timeout, s.read_timeout) == (8, 3, 120)
    assert s.expected_bucket_owner == "111122223333"
    defaults = s.write_defaults
    assert (defaults.server_side_encryption, defaults.kms_key_id, defaults.bucket_key_enabled) == (
        "aws:kms", "alias/billing", True,
    )  # fmt: skip
    assert defaults.kms_encryption_context == {"project": "billing"}
    assert (defaults.acl, defaults.storage_class, defaults.tags, defaults.requester_pays) == (
        "bucket-owner-full-control", "STANDARD_IA", {"team": "data"}, True,
    )  # fmt: skip
    # SSE-C excludes server-side encryption: its field is parsed on its own.
    assert {f.name for f in FIELDS} == set(extra) | {"sse_customer_key"}
    sse_c = parse({"sse_customer_key": "k" * 32}).write_defaults
    assert sse_c.sse_customer_key == "k" * 32
    with pytest.raises(ConnectionSettingsError, match=r"field 'sse_customer_key'.*exclude each other"):
        parse({"sse_customer_key": "k" * 32, "server_side_encryption": "AES256"})


def test_ui_prefixed_extras_are_read() -> None:
    s = parse({"extra__s3connect__auth_type": "assume_role", "extra__s3connect__role_arn": ROLE})
    assert s.auth_type is AuthType.ASSUME_ROLE
    assert s.role_arn == ROLE


def test_blank_form_fields_count_as_unset() -> None:
    s = parse({"role_arn": "", "bucket": "", "session_duration": ""})
    assert (s.role_arn, s.bucket, s.session_duration) == (None, None, 3600)


def test_uri_values_are_strings_and_are_coerced() -> None:
    uri = (
        "s3connect://AKIAEXAMPLE:wJalr%2FSECRET@/?auth_type=assume_role"
        f"&role_arn={ROLE.replace('/', '%2F')}&session_duration=900&verify_ssl=false"
        "&max_concurrency=4&endpoint_url=http%3A%2F%2F127.0.0.1%3A9000&addressing_style=path"
    )
    s = settings_from_connection(Connection.from_uri(uri, conn_id="from_uri"))
    assert s.conn_id == "from_uri"
    assert s.aws_access_key_id == "AKIAEXAMPLE"
    assert s.aws_secret_access_key == "wJalr/SECRET"
    assert (s.session_duration, s.verify_ssl, s.max_concurrency) == (900, False, 4)
    assert s.endpoint_url == "http://127.0.0.1:9000"


def test_json_connection_as_in_env_var() -> None:
    body = {"conn_type": "s3connect", "login": "AKIA1", "password": SECRET, "extra": {"bucket": "b-1x"}}
    s = settings_from_connection(Connection.from_json(json.dumps(body), conn_id="env_conn"))
    assert (s.aws_access_key_id, s.bucket) == ("AKIA1", "b-1x")


def test_settings_are_frozen_and_hide_secrets() -> None:
    s = parse({"aws_session_token": TOKEN}, login="AKIA1", password=SECRET)
    text = repr(s) + str(s)
    assert SECRET not in text
    assert TOKEN not in text
    assert "AKIA1" in text
    with pytest.raises(FrozenInstanceError):
        s.bucket = "other"  # type: ignore[misc]
    assert isinstance(s, ConnectionSettings)


def test_session_name_defaults_from_conn_id() -> None:
    s = parse_settings("tenant:acme/prod", None, None, {"auth_type": "assume_role", "role_arn": ROLE})
    assert s.session_name == "airflow-s3connect-tenant-acme-prod"
    long = parse_settings("x" * 100, None, None, {})
    assert len(long.session_name) == 64


ASSUME = {"auth_type": "assume_role", "role_arn": ROLE}

# (extra, login, password, field named in the error, words of the fix)
INVALID: list[tuple[dict[str, Any], str | None, str | None, str, str]] = [
    ({"auth_type": "iam"}, None, None, "auth_type", "choose one of access_key, assume_role"),
    ({"auth_type": "assume_role"}, None, None, "role_arn", "fill IAM Role ARN"),
    ({**ASSUME, "role_arn": "arn:aws:iam::123:role/x"}, None, None, "role_arn", "12-digit account id"),
    ({**ASSUME, "role_arn": "arn:aws:iam::123456789012:user/bob"}, None, None, "role_arn", ":role/<role name>"),
    ({**ASSUME, "external_id": "x"}, None, None, "external_id", "2 to 1,224 characters"),
    ({**ASSUME, "external_id": "a" * 1225}, None, None, "external_id", "2 to 1,224 characters"),
    ({**ASSUME, "external_id": "has space"}, None, None, "external_id", "+=,.@:/-"),
    ({**ASSUME, "role_session_name": "a b"}, None, None, "role_session_name", "2 to 64 characters"),
    ({**ASSUME, "session_duration": 899}, None, None, "session_duration", "from 900 to 43200"),
    ({**ASSUME, "session_duration": 43201}, None, None, "session_duration", "from 900 to 43200"),
    ({**ASSUME, "session_duration": "an hour"}, None, None, "session_duration", "give an integer"),
    ({"max_concurrency": 0}, None, None, "max_concurrency", "from 1 to 64"),
    ({"max_concurrency": 65}, None, None, "max_concurrency", "from 1 to 64"),
    ({"endpoint_url": "minio:9000"}, None, None, "endpoint_url", "https://host:port"),
    ({"sts_endpoint_url": "ftp://sts"}, None, None, "sts_endpoint_url", "https://host:port"),
    ({"proxy_url": "proxy"}, None, None, "proxy_url", "https://host:port"),
    ({"addressing_style": "dns"}, None, None, "addressing_style", "auto, path, virtual"),
    ({"verify_ssl": "maybe"}, None, None, "verify_ssl", "true or false"),
    ({"verify_ssl": False, "ca_bundle": "/ca.pem"}, None, None, "ca_bundle", "Verify TLS"),
    ({"region_name": "EU West"}, None, None, "region_name", "eu-west-1"),
    ({"bucket": "My_Bucket"}, None, None, "bucket", "3-63 lowercase"),
    ({"path_prefix": "a/../b"}, None, None, "path_prefix", "exports/invoices"),
    ({"path_prefix": "a//b"}, None, None, "path_prefix", "exports/invoices"),
    ({"tenant": "acme/evil"}, None, None, "tenant", "one key segment"),
    ({}, "AKIA1", None, "password", "fill AWS Secret Access Key"),
    ({}, None, SECRET, "login", "fill AWS Access Key ID"),
    ({"aws_session_token": TOKEN}, None, None, "aws_session_token", "key ID and secret"),
    ({"role_arn": ROLE}, None, None, "role_arn", "set Authentication to assume_role"),
    ({"external_id": "abc"}, None, None, "external_id", "set Authentication to assume_role"),
    ({"regoin_name": "eu-west-1"}, None, None, "regoin_name", "did you mean 'region_name'"),
]


@pytest.mark.parametrize(("extra", "login", "password", "field", "fix"), INVALID)
def test_invalid_settings_name_field_and_fix(
    extra: dict[str, Any], login: str | None, password: str | None, field: str, fix: str
) -> None:
    with pytest.raises(ConnectionSettingsError) as info:
        parse(extra, login=login, password=password)
    message = str(info.value)
    assert info.value.field == field
    assert f"field {field!r}" in message
    assert "conn" in message
    assert fix in message
    assert SECRET not in message


@pytest.mark.parametrize(("name", "value", "instead"), [("host", "minio", "endpoint_url"), ("schema", "b", "bucket")])
def test_hidden_standard_fields_are_refused(name: str, value: str, instead: str) -> None:
    with pytest.raises(ConnectionSettingsError, match=instead):
        parse(**{name: value})


def test_error_lists_valid_fields_for_unknown_name() -> None:
    with pytest.raises(ConnectionSettingsError) as info:
        parse({"colour": "blue"})
    assert "valid fields:" in str(info.value)
    assert "role_arn" in str(info.value)
