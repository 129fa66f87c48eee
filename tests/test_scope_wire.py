"""The wire guard: every request a scoped client sends is checked as it goes to the network.

Doors covered here: the request of every operation botocore knows (both addressing
styles), event handlers that rewrite a request after the parameter check, and locations
nested in request bodies (a restore's OutputLocation). Each refusal is asserted before
anything reaches the server (moto's own record of what it received) and with the store
unchanged.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config

from airflow_s3connect import wire
from airflow_s3connect.allowlist import OPERATIONS, Access
from airflow_s3connect.errors import ScopeError
from airflow_s3connect.scope import Scope
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer
from tests.support.stores import endpoint_client

PREFIX = "tenants/acme/"
SCOPE = Scope(BUCKET, PREFIX)
SECRET = "tenants/globex/secret.txt"
ENDPOINT = "http://s3.store.test:9000"


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        self.request = request


def _capture(**_: Any) -> None:
    raise AssertionError


def _example(shape: Any, name: str, where: dict[str, str]) -> Any:
    """A value for every member of ``shape``: the locations from ``where``, the rest filler."""
    kind = shape.type_name
    if name in where and kind == "string":
        return where[name]
    if kind == "structure":
        return {n: _example(m, n, where) for n, m in shape.members.items() if n not in ("ChecksumAlgorithm",)}
    if kind == "list":
        return [_example(shape.member, name, where)]
    if kind == "map":
        return {"k": _example(shape.value, name, where)}
    if getattr(shape, "enum", None):
        return shape.enum[0]
    return {
        "string": "v" * max(1, shape.metadata.get("min", 1)),
        "integer": 1,
        "long": 1,
        "boolean": True,
        "timestamp": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
        "blob": b"x",
    }[kind]


def _request(operation: str, where: dict[str, str], style: str) -> Any:
    """The request an unguarded client would send for ``operation`` (every member filled)."""
    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 1}),
    )

    def capture(request: Any, **_: Any) -> None:
        raise _Captured(request)

    client.meta.events.register("before-send.s3", capture)
    model = client.meta.service_model.operation_model(operation)
    params = _example(model.input_shape, "", where) if model.input_shape else {}
    for skip in ("ExpectedBucketOwner", "ExpectedSourceBucketOwner", "ChecksumAlgorithm", "ContentMD5"):
        params.pop(skip, None)
    method = botocore.xform_name(operation)
    with pytest.raises(_Captured) as caught:
        getattr(client, method)(**params)
    return caught.value.request


def _in_scope(operation: str) -> dict[str, str]:
    return {
        "Bucket": BUCKET,
        "Key": PREFIX + "x",
        "Prefix": PREFIX,
        "CopySource": f"{BUCKET}/{PREFIX}source",
        "RenameSource": f"{BUCKET}/{PREFIX}source",
        "BucketName": BUCKET,
    }


OPERATION_NAMES = sorted(botocore.session.get_session().get_service_model("s3").operation_names)


def _check(request: Any, style: str) -> None:
    endpoint = wire.Endpoint.of(ENDPOINT, custom=True)
    wire.check_request(SCOPE, endpoint, request.method, request.url, request.headers, request.body)


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("operation", OPERATION_NAMES)
def test_every_operation_is_classified_at_the_wire(operation: str, style: str) -> None:
    """Allowed operations pass with in-scope values and fail with another tenant's key or
    another bucket; bucket configuration and account operations never pass. Every member of
    the input is filled, so a query parameter botocore adds to an allowed operation fails
    here until the wire table knows it."""
    access = OPERATIONS[operation]
    request = _request(operation, _in_scope(operation), style)
    if access in (Access.ADMIN, Access.ACCOUNT):
        with pytest.raises(ScopeError, match="refused"):
            _check(request, style)
        return
    _check(request, style)
    if access is Access.BUCKET_READ:
        escapes = [{**_in_scope(operation), "Bucket": "other-bucket"}]
    elif access is Access.LISTING:
        escapes = [{**_in_scope(operation), "Prefix": "tenants/"}, {**_in_scope(operation), "Bucket": "other-bucket"}]
    else:
        escapes = [{**_in_scope(operation), "Key": SECRET}, {**_in_scope(operation), "Bucket": "other-bucket"}]
        if access is Access.COPY:
            escapes.append({**_in_scope(operation), "CopySource": f"{BUCKET}/{SECRET}", "RenameSource": SECRET})
    for escape in escapes:
        with pytest.raises(ScopeError):
            _check(_request(operation, escape, style), style)


def test_a_request_to_another_host_is_refused() -> None:
    endpoint = wire.Endpoint.of(ENDPOINT, custom=True)
    with pytest.raises(ScopeError, match=r"a request to 'evil\.test:9000', while the connection's endpoint is"):
        wire.check_request(SCOPE, endpoint, "GET", f"http://evil.test:9000/{BUCKET}/{PREFIX}x", {})
    with pytest.raises(ScopeError, match="is refused"):
        wire.check_request(SCOPE, endpoint, "GET", f"http://s3.store.test:9001/{BUCKET}/{PREFIX}x", {})


def test_amazon_hosts_of_other_regions_and_access_points() -> None:
    aws = wire.Endpoint.of("https://s3.eu-west-1.amazonaws.com", custom=False)
    wire.check_request(SCOPE, aws, "GET", f"https://{BUCKET}.s3.us-east-1.amazonaws.com/{PREFIX}x", {})
    wire.check_request(SCOPE, aws, "GET", f"https://s3.amazonaws.com/{BUCKET}/{PREFIX}x", {})
    with pytest.raises(ScopeError, match="names bucket 'other'"):
        wire.check_request(SCOPE, aws, "GET", f"https://other.s3.amazonaws.com/{PREFIX}x", {})
    arn = "arn:aws:s3:eu-west-1:123456789012:accesspoint/acme-ap"
    point = Scope(arn, PREFIX)
    host = "https://acme-ap-123456789012.s3-accesspoint.eu-west-1.amazonaws.com"
    wire.check_request(point, aws, "GET", f"{host}/{PREFIX}x", {})
    with pytest.raises(ScopeError, match="outside the connection's scope"):
        wire.check_request(point, aws, "GET", f"{host}/{SECRET}", {})
    with pytest.raises(ScopeError, match="names bucket"):
        wire.check_request(
            point, aws, "GET", f"https://other-ap-123456789012.s3-accesspoint.eu-west-1.amazonaws.com/{PREFIX}x", {}
        )


def test_unknown_query_names_and_methods_fail_closed() -> None:
    endpoint = wire.Endpoint.of(ENDPOINT, custom=True)
    base = f"{ENDPOINT}/{BUCKET}"
    cases = [
        ("GET", f"{base}/{PREFIX}x?future-subresource", "future-subresource"),
        ("PATCH", f"{base}/{PREFIX}x", "PATCH"),
        ("POST", f"{base}/{PREFIX}x", "without a sub-resource"),
        ("DELETE", base, "configuration"),
        ("GET", f"{base}?policy", "query names policy"),
        ("PUT", f"{base}?list-type=2&prefix={PREFIX}", "configuration"),
        ("GET", f"{base}?list-type=2&prefix={PREFIX}&future=1", "future"),
    ]
    for method, url, words in cases:
        with pytest.raises(ScopeError, match=words):
            wire.check_request(SCOPE, endpoint, method, url, {})


def test_a_delete_body_that_cannot_be_read_is_refused() -> None:
    endpoint = wire.Endpoint.of(ENDPOINT, custom=True)
    with pytest.raises(ScopeError, match="cannot be read"):
        wire.check_request(SCOPE, endpoint, "POST", f"{ENDPOINT}/{BUCKET}?delete", {}, body=iter([b"x"]))
    with pytest.raises(ScopeError, match="not the XML"):
        wire.check_request(SCOPE, endpoint, "POST", f"{ENDPOINT}/{BUCKET}?delete", {}, body=b"<Delete><Key>")


# -- through a real client and a real server --------------------------------------------------


def _scoped(moto: MotoServer) -> Any:
    return endpoint_client(
        moto.url, key="AKIASCOPED", secret="scoped-secret", region=REGION, bucket=BUCKET,
        path_prefix="tenants/acme", max_attempts=1,
    )  # fmt: skip


def _rewrite_key(params: dict[str, Any], **_: Any) -> None:
    params["Key"] = SECRET


def _rewrite_url(request: Any, **_: Any) -> None:
    request.url = request.url.replace("tenants/acme/x", "tenants/globex/secret.txt")


def _rewrite_params_url(params: dict[str, Any], **_: Any) -> None:
    params["url"] = params["url"].replace("tenants/acme/x", "tenants/globex/secret.txt")


HANDLERS: list[tuple[str, str, Callable[..., None], str]] = [
    ("after-parameter-guard", "before-parameter-build.s3", _rewrite_key, "last"),
    ("before-call", "before-call.s3.GetObject", _rewrite_params_url, "first"),
    ("request-created", "request-created.s3.GetObject", _rewrite_url, "last"),
    ("before-sign", "before-sign.s3.GetObject", _rewrite_url, "last"),
    ("before-send", "before-send.s3", _rewrite_url, "first"),
]


@pytest.mark.parametrize(("case", "event", "handler", "order"), HANDLERS, ids=[h[0] for h in HANDLERS])
def test_handlers_that_rewrite_a_request_after_the_check_cannot_reach_another_tenant(
    moto: MotoServer, case: str, event: str, handler: Callable[..., None], order: str
) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key=SECRET, Body=b"globex's")
    admin.put_object(Bucket=BUCKET, Key=PREFIX + "x", Body=b"acme's")
    client = _scoped(moto)
    register = client.meta.events.register_last if order == "last" else client.meta.events.register_first
    register(event, handler)
    with moto.recording() as rec, pytest.raises(ScopeError, match="tenants/globex"):
        client.get_object(Bucket=BUCKET, Key=PREFIX + "x")
    assert rec.requests == []
    assert admin.get_object(Bucket=BUCKET, Key=SECRET)["Body"].read() == b"globex's"


def test_a_restore_writing_its_output_elsewhere_is_refused(moto: MotoServer) -> None:
    client = _scoped(moto)
    outside = {"S3": {"BucketName": "other-bucket", "Prefix": "x/"}}
    inside_bucket_other_tenant = {"S3": {"BucketName": BUCKET, "Prefix": "tenants/globex/"}}
    cases = ((outside, "BucketName names bucket 'other-bucket'"), (inside_bucket_other_tenant, "Prefix"))
    for location, words in cases:
        request = {
            "Type": "SELECT",
            "Tier": "Standard",
            "SelectParameters": {
                "InputSerialization": {"CSV": {}},
                "ExpressionType": "SQL",
                "Expression": "select * from s3object",
                "OutputSerialization": {"CSV": {}},
            },
            "OutputLocation": location,
        }
        with moto.recording() as rec, pytest.raises(ScopeError, match=words):
            client.restore_object(Bucket=BUCKET, Key=PREFIX + "x", RestoreRequest=request)
        assert rec.requests == []


def test_the_wire_guard_refuses_what_the_parameter_check_missed(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the parameter check switched off, the wire check alone refuses another
    tenant's key and a restore's outside output: the boundary does not depend on it."""
    monkeypatch.setattr("airflow_s3connect.client.check_call", lambda *_: None)
    client = _scoped(moto)
    client.meta.events.register_last("before-parameter-build.s3", _rewrite_key)
    refused = r"GET http://\S+/tenants/globex/secret.txt is refused"
    with moto.recording() as rec, pytest.raises(ScopeError, match=refused):
        client.get_object(Bucket=BUCKET, Key=PREFIX + "x")
    client.meta.events.unregister("before-parameter-build.s3", _rewrite_key)
    output = {"S3": {"BucketName": "other-bucket", "Prefix": "x/"}}
    with pytest.raises(ScopeError, match=r"POST .* is refused: RestoreObject: .*other-bucket"):
        client.restore_object(Bucket=BUCKET, Key=PREFIX + "x", RestoreRequest={"Days": 1, "OutputLocation": output})
    assert rec.requests == []


# -- what an independent review found: each a way the store reads another request than we checked ---


def _dup_prefix(request: Any, **_: Any) -> None:
    request.url = request.url.replace("prefix=tenants%2Facme%2F", "prefix=tenants%2Fglobex%2F&prefix=tenants%2Facme%2F")


def _host_header(request: Any, **_: Any) -> None:
    request.headers["Host"] = f"{BUCKET}.evil.example"


@pytest.mark.parametrize(
    ("event", "handler", "call", "words"),
    [
        ("before-sign.s3.ListObjectsV2", _dup_prefix, lambda c: c.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX),
         "repeats prefix"),
        ("before-sign.s3.PutObject", _host_header, lambda c: c.put_object(Bucket=BUCKET, Key=PREFIX + "x", Body=b"x"),
         "Host header"),
    ],
    ids=["duplicate-query-name", "host-header"],
)  # fmt: skip
def test_a_request_the_store_would_read_otherwise_is_refused(
    moto: MotoServer, event: str, handler: Callable[..., None], call: Callable[[Any], Any], words: str
) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key=SECRET, Body=b"globex's")
    client = _scoped(moto)
    client.meta.events.register(event, handler)
    with moto.recording() as rec, pytest.raises(ScopeError, match=words):
        call(client)
    assert rec.requests == []


@pytest.mark.parametrize(
    "source",
    [f"//{BUCKET}/{PREFIX}x", f"///{BUCKET}/{PREFIX}x"],
)
def test_a_copy_source_stores_parse_differently_is_refused(moto: MotoServer, source: str) -> None:
    """'//bucket/key' is read as a URL (bucket 'tenants', key 'acme/x') by some stores."""
    client = _scoped(moto)
    with moto.recording() as rec, pytest.raises(ScopeError, match="CopySource"):
        client.copy_object(Bucket=BUCKET, Key=PREFIX + "copied", CopySource=source)
    assert rec.requests == []


def test_a_refused_object_request_names_its_own_operation() -> None:
    endpoint = wire.Endpoint.of(ENDPOINT, custom=True)
    with pytest.raises(ScopeError, match="GetObject: Key 'tenants/globex"):
        wire.check_request(SCOPE, endpoint, "GET", f"{ENDPOINT}/{BUCKET}/{SECRET}", {})
    with pytest.raises(ScopeError, match="DeleteObject: Key"):
        wire.check_request(SCOPE, endpoint, "DELETE", f"{ENDPOINT}/{BUCKET}/{SECRET}", {})
