"""Scope is an allowlist over the whole S3 API: every botocore operation is classified, and no
parameter value outside a scoped connection's bucket and prefix reaches the wire."""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import botocore
import botocore.loaders
import botocore.session
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_s3connect import client as client_module
from airflow_s3connect.allowlist import CHECKED, NESTED, OPERATIONS, Access, check_call
from airflow_s3connect.errors import ScopeError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.scope import Scope
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer
from tests.support.stores import endpoint_client

PREFIX = "tenants/acme/"
SCOPE = Scope(BUCKET, PREFIX)

#: Parameters of allowed operations that look like locations but are not: (name, why).
NOT_LOCATIONS = {
    "ExpectedBucketOwner": "an account id the request asserts",
    "ExpectedSourceBucketOwner": "an account id the request asserts",
    "BucketKeyEnabled": "a KMS setting",
    "SSECustomerKey": "an encryption key",
    "SSECustomerKeyMD5": "an encryption key digest",
    "SSEKMSKeyId": "a KMS key id",
    "CopySourceSSECustomerKey": "an encryption key",
    "CopySourceSSECustomerKeyMD5": "an encryption key digest",
    "CopySourceSSECustomerAlgorithm": "an encryption algorithm",
    "CopySourceIfMatch": "a condition on the (checked) source",
    "CopySourceIfNoneMatch": "a condition on the (checked) source",
    "CopySourceIfModifiedSince": "a condition on the (checked) source",
    "CopySourceIfUnmodifiedSince": "a condition on the (checked) source",
    "CopySourceRange": "a byte range of the (checked) source",
    "SourceIfMatch": "a condition on the (checked) source",
    "SourceIfNoneMatch": "a condition on the (checked) source",
    "SourceIfModifiedSince": "a condition on the (checked) source",
    "SourceIfUnmodifiedSince": "a condition on the (checked) source",
    "AnnotationPrefix": "annotation names of the (checked) object",
    "PartNumberMarker": "a part number",
    "UploadIdMarker": "an upload id, within the (checked) listing prefix",
    "VersionIdMarker": "a version id, within the (checked) listing prefix",
    "KeyMarker": "where a listing resumes: results still start with the (checked) Prefix",
    "Marker": "where a listing resumes: results still start with the (checked) Prefix",
    "StartAfter": "where a listing resumes: results still start with the (checked) Prefix",
    "ContinuationToken": "the store's opaque cursor: results still start with the (checked) Prefix",
    "ClientToken": "an idempotency token",
    "ObjectIfMatch": "a condition on the (checked) object",
    "DestinationIfMatch": "a condition on the (checked) target",
    "DestinationIfNoneMatch": "a condition on the (checked) target",
    "DestinationIfModifiedSince": "a condition on the (checked) target",
    "DestinationIfUnmodifiedSince": "a condition on the (checked) target",
    "SessionMode": "read-only or read-write session of the (checked) bucket",
    "KMSKeyId": "a KMS key id",
    "KMSKeyArn": "a KMS key ARN",
    "Tagging.TagSet[].Key": "a tag's name",
    "RestoreRequest.OutputLocation.S3.Tagging.TagSet[].Key": "a tag's name",
}
_LOCATION_LIKE = re.compile(r"Bucket|Key(?!s)|Prefix|Source|Marker|After|Delete|Token|Route")


def _model() -> Any:
    return botocore.session.get_session().get_service_model("s3")


def test_every_operation_of_the_installed_botocore_is_classified() -> None:
    names = set(_model().operation_names)
    assert names - set(OPERATIONS) == set(), "classify these in airflow_s3connect/allowlist.py"
    assert len(names) >= 100  # the whole API, not a sample


def _members(shape: Any, path: str, seen: frozenset[str]) -> Iterator[tuple[str, str]]:
    """(dotted path, member name) of every member below ``shape``: structures, lists, maps."""
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            yield f"{path}{name}", name
            if member.name not in seen:
                yield from _members(member, f"{path}{name}.", seen | {member.name})
    elif shape.type_name == "list":
        yield from _members(shape.member, path[:-1] + "[].", seen)
    elif shape.type_name == "map":
        yield from _members(shape.value, path[:-1] + "{}.", seen)


def test_every_location_parameter_of_an_allowed_operation_is_checked() -> None:
    """Top-level and nested: a location inside a structure (a restore's OutputLocation)
    fails this test until allowlist.NESTED or NOT_LOCATIONS classifies it."""
    model = _model()
    unchecked: list[str] = []
    for name in model.operation_names:
        access = OPERATIONS[name]
        shape = model.operation_model(name).input_shape
        if shape is None or access in (Access.ADMIN, Access.ACCOUNT):
            continue
        nested = {path for path, _ in NESTED.get(name, ())}
        for path, member in _members(shape, "", frozenset()):
            top = path.split(".")[0].split("[")[0]
            covered = top in CHECKED[access] or path in nested
            location = _LOCATION_LIKE.search(member) and not {member, path} & set(NOT_LOCATIONS)
            if location and not covered:
                unchecked.append(f"{name}.{path}")
    assert unchecked == []
    assert len(list(_members(model.operation_model("RestoreObject").input_shape, "", frozenset()))) > 30


def test_unclassified_operation_is_refused_on_a_scoped_connection_only() -> None:
    with pytest.raises(ScopeError, match=r"FutureOperation is refused .* does not know whether it stays inside"):
        check_call(SCOPE, "FutureOperation", {"Bucket": BUCKET})
    check_call(Scope(), "FutureOperation", {"Bucket": "any"})


# -- a counting server: what reaches the wire ------------------------------------------------


class Wire:
    """An HTTP server on loopback that answers every request with an empty 200 and keeps it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        wire = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                wire.requests.append((self.command, self.path, dict(self.headers.items()), body))
                payload = b'<?xml version="1.0" encoding="UTF-8"?><Result/>'
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def violations(self) -> list[str]:
        """Every bucket, key, prefix or source on the wire that lies outside SCOPE."""
        found: list[str] = []

        def key_in_scope(key: str) -> bool:
            return key.startswith(PREFIX) and not any(p in (".", "..") for p in key.split("/"))

        for method, target, headers, body in self.requests:
            parts = urlsplit(target)
            path = unquote(parts.path).lstrip("/")
            bucket, _, key = path.partition("/")
            query = parse_qs(parts.query, keep_blank_values=True)
            if bucket != BUCKET:
                found.append(f"bucket {bucket!r} in {method} {target}")
            if key and not key_in_scope(key):
                found.append(f"key {key!r} in {method} {target}")
            if not key and method == "GET" and "location" not in query:
                prefix = query.get("prefix", [None])[0]
                if prefix is None or not prefix.startswith(PREFIX):
                    found.append(f"listing with prefix {prefix!r}: {target}")
            for header in ("x-amz-copy-source", "x-amz-rename-source"):
                source = {k.lower(): v for k, v in headers.items()}.get(header)
                if source is not None:
                    src = unquote(re.sub(r"\?versionId=.*$", "", source)).lstrip("/")
                    src_bucket, _, src_key = src.partition("/")
                    if src_bucket != BUCKET or not key_in_scope(src_key):
                        found.append(f"{header} {source!r}")
            if "delete" in query:
                for deleted in re.findall(rb"<Key>(.*?)</Key>", body):
                    if not key_in_scope(deleted.decode()):
                        found.append(f"deleted key {deleted!r}")
        return found


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    server = Wire()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def wired_client(wire: Wire) -> Any:
    return _scoped_client(wire.url)


def _scoped_client(endpoint: str, prefix: str = "tenants/acme", bucket: str | None = BUCKET) -> Any:
    scope = {"bucket": bucket} if bucket else {}
    return endpoint_client(endpoint, key="AKIASCOPED", secret="scoped-secret", region=REGION, path_prefix=prefix,
                           max_attempts=1, **scope)  # fmt: skip


# -- the escapes found by hand, as explicit cases -----------------------------------------------

SECRET = "tenants/globex/secret.txt"
ESCAPES: list[tuple[str, Callable[[Any], Any], str]] = [
    (
        "copy-source-dict",
        lambda c: c.copy_object(Bucket=BUCKET, Key=PREFIX + "x", CopySource={"Bucket": BUCKET, "Key": SECRET}),
        "CopySource",
    ),
    (
        "copy-source-string",
        lambda c: c.copy_object(Bucket=BUCKET, Key=PREFIX + "x", CopySource=f"{BUCKET}/{SECRET}"),
        "CopySource",
    ),
    (
        "copy-source-other-bucket",
        lambda c: c.copy_object(Bucket=BUCKET, Key=PREFIX + "x", CopySource="other-bucket/tenants/acme/x"),
        "CopySource names bucket",
    ),
    (
        "upload-part-copy",
        lambda c: c.upload_part_copy(
            Bucket=BUCKET, Key=PREFIX + "x", UploadId="u", PartNumber=1, CopySource={"Bucket": BUCKET, "Key": SECRET}
        ),
        "CopySource",
    ),
    (
        "delete-objects",
        lambda c: c.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": PREFIX + "ok"}, {"Key": SECRET}]}),
        r"Delete.Objects\[1\].Key",
    ),
    ("list-objects-v1", lambda c: c.list_objects(Bucket=BUCKET), "ListObjects with no Prefix"),
    ("list-objects-v1-prefix", lambda c: c.list_objects(Bucket=BUCKET, Prefix="tenants/"), "Prefix 'tenants/'"),
    ("list-objects-v2", lambda c: c.list_objects_v2(Bucket=BUCKET), "ListObjectsV2 with no Prefix"),
    ("list-versions", lambda c: c.list_object_versions(Bucket=BUCKET), "ListObjectVersions with no Prefix"),
    ("list-uploads", lambda c: c.list_multipart_uploads(Bucket=BUCKET), "ListMultipartUploads with no Prefix"),
    ("prefix-sibling", lambda c: c.list_objects_v2(Bucket=BUCKET, Prefix="tenants/acme"), "Prefix 'tenants/acme'"),
    ("put-bucket-policy", lambda c: c.put_bucket_policy(Bucket=BUCKET, Policy="{}"), "whole bucket"),
    ("get-bucket-policy", lambda c: c.get_bucket_policy(Bucket=BUCKET), "whole bucket"),
    ("list-buckets", lambda c: c.list_buckets(), "not about the connection's bucket"),
    ("delete-bucket", lambda c: c.delete_bucket(Bucket=BUCKET), "whole bucket"),
    ("get-other-tenant", lambda c: c.get_object(Bucket=BUCKET, Key=SECRET), "Key 'tenants/globex"),
    ("dot-segments", lambda c: c.get_object(Bucket=BUCKET, Key=PREFIX + "../globex/secret.txt"), "'..' segment"),
    (
        "presigned-url",
        lambda c: c.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": SECRET}),
        "GetObject: Key",
    ),
    ("presigned-post", lambda c: c.generate_presigned_post(BUCKET, SECRET), "PutObject: Key"),
    (
        "presigned-url-admin",
        lambda c: c.generate_presigned_url("put_bucket_acl", Params={"Bucket": BUCKET, "ACL": "public-read"}),
        "whole bucket",
    ),
]


@pytest.mark.parametrize(("case", "call", "words"), ESCAPES, ids=[e[0] for e in ESCAPES])
def test_escapes_through_the_raw_client_are_refused_before_the_wire(
    moto: MotoServer, case: str, call: Callable[[Any], Any], words: str
) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key=SECRET, Body=b"globex's")
    client = _scoped_client(moto.url)
    with moto.recording() as rec, pytest.raises(ScopeError, match=words) as info:
        call(client)
    assert rec.requests == []
    assert "outside" in str(info.value) or "refused" in str(info.value) or "segment" in str(info.value)
    assert moto.admin_client("s3").get_object(Bucket=BUCKET, Key=SECRET)["Body"].read() == b"globex's"


def test_in_scope_calls_through_the_raw_client_work(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn(
        "scoped_raw", "AKIA1", "s", bucket=BUCKET, path_prefix="tenants/acme", region_name=REGION, endpoint_url=moto.url
    )
    client = S3ConnectHook(s3connect_conn_id=conn_id).get_conn()
    client.put_object(Bucket=BUCKET, Key=PREFIX + "a b%.csv", Body=b"1")
    assert client.get_object(Bucket=BUCKET, Key=PREFIX + "a b%.csv")["Body"].read() == b"1"
    source = {"Bucket": BUCKET, "Key": PREFIX + "a b%.csv"}
    client.copy_object(Bucket=BUCKET, Key=PREFIX + "copy.csv", CopySource=source)
    client.copy_object(Bucket=BUCKET, Key=PREFIX + "copy2.csv", CopySource=f"{BUCKET}/{PREFIX}a b%.csv")
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
    assert [o["Key"] for o in listed["Contents"]] == [PREFIX + "a b%.csv", PREFIX + "copy.csv", PREFIX + "copy2.csv"]
    assert len(client.list_objects(Bucket=BUCKET, Prefix=PREFIX)["Contents"]) == 3
    client.head_bucket(Bucket=BUCKET)
    client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": PREFIX + "copy.csv"}]})
    client.delete_object(Bucket=BUCKET, Key=PREFIX + "copy2.csv")
    assert client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["KeyCount"] == 1
    url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": PREFIX + "a b%.csv"})
    assert "tenants/acme/a%20b%25.csv" in url
    post = client.generate_presigned_post(BUCKET, PREFIX + "${filename}")
    assert post["fields"]["key"] == PREFIX + "${filename}"


def test_an_operation_botocore_adds_later_is_refused(
    wire: Wire, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service model with one operation more, as a future botocore would ship it."""
    data = Path(botocore.__file__).parent / "data" / "s3" / "2006-03-01"
    model = json.loads(gzip.decompress((data / "service-2.json.gz").read_bytes()))
    future = dict(model["operations"]["GetObject"], name="GetObjectFuture")
    future["http"] = dict(future["http"], requestUri="/{Bucket}/{Key+}?future")
    model["operations"]["GetObjectFuture"] = future
    target = tmp_path / "s3" / "2006-03-01"
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    monkeypatch.setattr(client_module, "_LOADER", botocore.loaders.create_loader(str(tmp_path)))  # not the cache
    client = _scoped_client(wire.url)
    assert "GetObjectFuture" in client.meta.service_model.operation_names
    before = len(wire.requests)
    with pytest.raises(ScopeError, match="GetObjectFuture is refused"):
        client.get_object_future(Bucket=BUCKET, Key=PREFIX + "x")
    assert len(wire.requests) == before


# -- the property: nothing outside the scope reaches the wire ----------------------------------

KEYS = st.one_of(
    st.sampled_from(
        [
            PREFIX + "x.csv",
            PREFIX + "dir/a b%.csv",
            PREFIX,
            "tenants/acme",
            "tenants/acmeX/x",
            "tenants/globex/x",
            PREFIX + "../globex/x",
            PREFIX + "./x",
            "/" + PREFIX + "x",
            "Tenants/acme/x",
            "tenants/acm%65/x",
            PREFIX + "x?versionId=1",
            "",
        ]
    ),
    st.text(alphabet="tenacm/.%?x ", max_size=20),
    st.text(alphabet="tenacm/.%?x ", max_size=12).map(lambda s: PREFIX + s),
)
BUCKETS = st.sampled_from([BUCKET, BUCKET, "other-bucket", "arn:aws:s3:eu-west-1:123456789012:accesspoint/ap"])


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    bucket = draw(BUCKETS)
    kind = draw(st.sampled_from(["object", "copy", "delete-many", "listing", "bucket", "admin"]))
    if kind == "object":
        name = draw(st.sampled_from(["get_object", "put_object", "head_object", "delete_object", "get_object_tagging"]))
        return name, {"Bucket": bucket, "Key": draw(KEYS)}
    if kind == "copy":
        source_bucket, source_key = draw(BUCKETS), draw(KEYS)
        version = draw(st.sampled_from(["", "?versionId=abc"]))
        source: Any = draw(
            st.sampled_from([{"Bucket": source_bucket, "Key": source_key}, f"{source_bucket}/{source_key}{version}"])
        )
        if draw(st.booleans()):
            return "copy_object", {"Bucket": bucket, "Key": draw(KEYS), "CopySource": source}
        return "upload_part_copy", {
            "Bucket": bucket, "Key": draw(KEYS), "CopySource": source, "UploadId": "u", "PartNumber": 1,
        }  # fmt: skip
    if kind == "delete-many":
        keys = draw(st.lists(KEYS, min_size=1, max_size=4))
        return "delete_objects", {"Bucket": bucket, "Delete": {"Objects": [{"Key": k} for k in keys]}}
    if kind == "listing":
        name = draw(
            st.sampled_from(["list_objects_v2", "list_objects", "list_object_versions", "list_multipart_uploads"])
        )
        params: dict[str, Any] = {"Bucket": bucket}
        prefix = draw(st.one_of(st.none(), KEYS))
        if prefix is not None:
            params["Prefix"] = prefix
        marker = {"list_objects_v2": "StartAfter", "list_objects": "Marker"}.get(name, "KeyMarker")
        if draw(st.booleans()):
            params[marker] = draw(KEYS)
        return name, params
    if kind == "bucket":
        return draw(st.sampled_from(["head_bucket", "get_bucket_location"])), {"Bucket": bucket}
    return draw(st.sampled_from(["get_bucket_acl", "delete_bucket", "get_bucket_versioning"])), {"Bucket": bucket}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=calls())
def test_no_value_outside_the_scope_reaches_the_wire(
    wire: Wire, wired_client: Any, call: tuple[str, dict[str, Any]]
) -> None:
    name, params = call
    wire.requests.clear()
    try:
        getattr(wired_client, name)(**params)
    except ScopeError:
        assert wire.requests == []
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        pass
    assert wire.violations() == []


def test_the_property_server_sees_what_an_unguarded_client_sends(wire: Wire) -> None:
    """The wire check itself can fail: an unguarded client's escape is seen."""
    client = boto3.client(
        "s3",
        endpoint_url=wire.url,
        region_name=REGION,
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    wire.requests.clear()
    client.copy_object(Bucket=BUCKET, Key=PREFIX + "x", CopySource={"Bucket": BUCKET, "Key": "tenants/acm%65/x"})
    client.list_objects_v2(Bucket=BUCKET)
    assert len(wire.violations()) == 2
