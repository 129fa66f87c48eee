"""Scope: relative keys join path_prefix; anything outside the scope fails before any request."""

from __future__ import annotations

import pytest

from airflow_s3connect.errors import InvalidKeyError, ScopeError
from airflow_s3connect.scope import ObjectRef, Scope, check_bucket_name, check_key

SCOPED = Scope("acme-data", "exports/invoices/")


def test_relative_key_joins_prefix() -> None:
    assert SCOPED.resolve("2025/a.csv") == ObjectRef("acme-data", "exports/invoices/2025/a.csv")
    assert SCOPED.resolve("/2025/a.csv").key == "exports/invoices/2025/a.csv"
    assert SCOPED.resolve("a.csv").uri == "s3://acme-data/exports/invoices/a.csv"


def test_full_uri_inside_scope_is_accepted() -> None:
    assert SCOPED.resolve("s3://acme-data/exports/invoices/x").key == "exports/invoices/x"


@pytest.mark.parametrize(
    ("key", "bucket", "words"),
    [
        ("a.csv", "other-bucket", "outside the connection's scope s3://acme-data/exports/invoices/"),
        ("s3://other-bucket/exports/invoices/x", None, "outside the connection's scope"),
        ("s3://acme-data/exports/other/x", None, "relative to the connection's path_prefix"),
        ("s3://acme-data/x", "acme-data2", "names bucket 'acme-data'"),
    ],
)
def test_out_of_scope_is_refused(key: str, bucket: str | None, words: str) -> None:
    with pytest.raises(ScopeError, match=words.replace("/", ".").replace("'", ".")):
        SCOPED.resolve(key, bucket)


@pytest.mark.parametrize("key", ["../secrets/x", "a/../../b", "./a", "a/./b", ""])
def test_traversal_and_empty_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        SCOPED.resolve(key)


def test_key_length_is_counted_in_utf8_bytes() -> None:
    check_key("é" * 512)
    with pytest.raises(InvalidKeyError, match="1026 bytes"):
        check_key("é" * 513)
    with pytest.raises(InvalidKeyError, match="control characters"):
        check_key("a\nb")


@pytest.mark.parametrize("name", ["ab", "A-bucket", "bucket_", "-bucket", "192.168.1.1", "a..b", "x" * 64])
def test_bad_bucket_names(name: str) -> None:
    with pytest.raises(InvalidKeyError, match="Invalid bucket name"):
        check_bucket_name(name)


def test_unscoped_needs_a_bucket() -> None:
    with pytest.raises(ScopeError, match="pass bucket="):
        Scope().resolve("a.csv")
    assert Scope().resolve("a.csv", "b-1").uri == "s3://b-1/a.csv"


def test_prefix_resolution_narrows_to_scope() -> None:
    assert SCOPED.resolve_prefix("").key == "exports/invoices/"
    assert SCOPED.resolve_prefix("2025").key == "exports/invoices/2025"
    assert SCOPED.resolve_prefix("s3://acme-data/exports/").key == "exports/invoices/"
    with pytest.raises(ScopeError):
        SCOPED.resolve_prefix("s3://acme-data/imports/")


def test_keys_of_one_delete_request_must_share_a_bucket() -> None:
    assert SCOPED.resolve_keys(["a.csv", "b/c.csv"]) == (
        "acme-data",
        ["exports/invoices/a.csv", "exports/invoices/b/c.csv"],
    )
    assert Scope().resolve_keys(["s3://b-1/x", "s3://b-1/y"]) == ("b-1", ["x", "y"])
    assert Scope().resolve_keys([], "b-2") == ("b-2", [])
    with pytest.raises(ScopeError, match="name 2 buckets"):
        Scope().resolve_keys(["s3://b-1/x", "s3://b-2/y"])  # once deleted all from the first bucket
