"""Presigned URLs and POSTs of a scoped connection: a URL is checked as the request it signs.

A presigned URL is a request someone else sends later, so nothing of ours sees it on the
wire: the method it is signed for and everything its URL names are checked when it is
made. Each refusal leaves the store as it was and sends nothing.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from airflow_s3connect.errors import ScopeError
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer
from tests.support.stores import endpoint_client

PREFIX = "tenants/acme/"


def _scoped(moto: MotoServer, bucket: str = BUCKET) -> Any:
    return endpoint_client(
        moto.url, key="AKIASCOPED", secret="scoped-secret", region=REGION, bucket=bucket,
        path_prefix="tenants/acme", max_attempts=1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("method", "params", "http_method"),
    [
        ("head_bucket", {}, "DELETE"),
        ("list_objects_v2", {"Prefix": PREFIX}, "DELETE"),
        ("get_bucket_location", {}, "PUT"),
        ("get_object", {"Key": PREFIX + "x"}, "DELETE"),
        ("get_object", {"Key": PREFIX + "x"}, "PUT"),
        ("head_object", {"Key": PREFIX + "x"}, "GET"),
    ],
)
def test_a_presigned_url_for_another_method_is_refused(
    moto: MotoServer, method: str, params: dict[str, Any], http_method: str
) -> None:
    admin = moto.admin_client("s3")
    bucket = "s3c-presign-empty"
    admin.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    client = _scoped(moto, bucket)
    with moto.recording() as rec, pytest.raises(ScopeError, match=f"must use its own method .* not {http_method}"):
        client.generate_presigned_url(method, Params={"Bucket": bucket, **params}, HttpMethod=http_method)
    assert rec.requests == []
    admin.head_bucket(Bucket=bucket)  # still there: the URL that deleted it is never made


def test_a_presigned_url_in_scope_works_and_one_outside_is_refused(moto: MotoServer) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key=PREFIX + "report.csv", Body=b"acme's")
    client = _scoped(moto)
    url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": PREFIX + "report.csv"})
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"acme's"
    same = client.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": PREFIX + "up.csv"}, HttpMethod="put"
    )
    assert "tenants/acme/up.csv" in same
    for params in ({"Bucket": BUCKET, "Key": "tenants/globex/x"}, {"Bucket": "other-bucket", "Key": PREFIX + "x"}):
        with pytest.raises(ScopeError, match=r"outside the connection's scope|names bucket"):
            client.generate_presigned_url("get_object", Params=params)


@pytest.mark.parametrize(
    "key",
    [
        "tenants/acme/${filename}/../../globex/x",
        "tenants/acme/${filename}/x",
        "tenants/acme/in-${filename}",
        "tenants/acme/${filename}${filename}",
        "tenants/globex/${filename}",
        "${filename}",
    ],
)
def test_a_presigned_post_keeps_the_uploaders_file_name_to_the_last_segment(moto: MotoServer, key: str) -> None:
    client = _scoped(moto)
    with moto.recording() as rec, pytest.raises(ScopeError, match=r"\$\{filename\}|outside the connection's scope"):
        client.generate_presigned_post(BUCKET, key)
    assert rec.requests == []


def test_a_presigned_post_in_scope_uploads(moto: MotoServer) -> None:
    client = _scoped(moto)
    post = client.generate_presigned_post(BUCKET, PREFIX + "in/${filename}")
    assert post["fields"]["key"] == PREFIX + "in/${filename}"
    fixed = client.generate_presigned_post(BUCKET, PREFIX + "in/fixed.csv")
    assert fixed["fields"]["key"] == PREFIX + "in/fixed.csv"
    with pytest.raises(ScopeError, match="names bucket 'other-bucket'"):
        client.generate_presigned_post("other-bucket", PREFIX + "in/${filename}")


# -- a URL is checked as finally signed, whatever handlers did before -------------------------------


def _copy_source_header(request: Any, **_: Any) -> None:
    request.headers["x-amz-copy-source"] = f"{BUCKET}/tenants/globex/secret.txt"


def _method_delete(request: Any, **_: Any) -> None:
    request.method = "DELETE"


def _rewrite_url(request: Any, **_: Any) -> None:
    request.url = request.url.replace("tenants/acme/a.csv", "tenants/globex/secret.txt")


@pytest.mark.parametrize(
    ("event", "handler", "method", "params", "words"),
    [
        ("before-sign.s3.PutObject", _copy_source_header, "put_object", {"Key": PREFIX + "stolen"}, "CopySource"),
        ("before-sign.s3.ListObjectsV2", _method_delete, "list_objects_v2", {"Prefix": PREFIX}, "configuration"),
        ("before-sign.s3.GetObject", _rewrite_url, "get_object", {"Key": PREFIX + "a.csv"}, "tenants/globex"),
    ],
    ids=["signed-copy-source", "signed-method", "rewritten-url"],
)
def test_a_presigned_url_is_checked_as_signed(
    moto: MotoServer, event: str, handler: Any, method: str, params: dict[str, Any], words: str
) -> None:
    client = _scoped(moto)
    client.meta.events.register(event, handler)
    for presign in (
        client.generate_presigned_url,
        lambda *a, **k: type(client).generate_presigned_url(client, *a, **k),
    ):
        with pytest.raises(ScopeError, match=words):
            presign(method, Params={"Bucket": BUCKET, **params})


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("copy_object", {"Key": PREFIX + "b", "CopySource": f"{BUCKET}/{PREFIX}a"}),
        (
            "upload_part_copy",
            {"Key": PREFIX + "b", "CopySource": f"{BUCKET}/{PREFIX}a", "UploadId": "u", "PartNumber": 1},
        ),
        ("delete_objects", {"Delete": {"Objects": [{"Key": PREFIX + "a"}]}}),
        ("restore_object", {"Key": PREFIX + "a"}),
    ],
)
def test_operations_whose_url_cannot_show_what_they_name_are_not_presigned(
    moto: MotoServer, method: str, params: dict[str, Any]
) -> None:
    """Their source is a header the URL does not show, or their keys a body the URL's
    holder chooses (a presigned request's payload is not signed)."""
    client = _scoped(moto)
    with pytest.raises(ScopeError, match="URL is refused"):
        client.generate_presigned_url(method, Params={"Bucket": BUCKET, **params})


def test_a_head_of_a_get_url_is_allowed(moto: MotoServer) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key=PREFIX + "h.csv", Body=b"abc")
    client = _scoped(moto)
    url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": PREFIX + "h.csv"},
                                        HttpMethod="HEAD")  # fmt: skip
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Length"] == "3"


def test_a_post_presigned_inside_a_handler_is_checked_again(moto: MotoServer) -> None:
    client = _scoped(moto)
    nested: list[Any] = []

    def sneak(**_: Any) -> None:
        try:
            nested.append(type(client).generate_presigned_post(client, Bucket=BUCKET, Key="tenants/globex/evil.txt"))
        except ScopeError as exc:
            nested.append(exc)

    client.meta.events.register("before-sign.s3", sneak)
    client.generate_presigned_post(BUCKET, PREFIX + "in/${filename}")
    assert nested
    assert all(isinstance(item, ScopeError) for item in nested)
