"""The scope checked on the HTTP request itself: method, host, path, query, headers, body.

Pure: no I/O, no Airflow. :mod:`airflow_s3connect.allowlist` checks an operation's
parameters when botocore starts building a request, which gives the clearest messages;
but event handlers registered after it, botocore's own rewrites (a presigned URL's
``HttpMethod``, a region redirect) and in-process code can still change what is sent.
This module is the boundary: the client runs :func:`check_request` on every prepared
request just before it goes to the network, and on every presigned URL it hands out, so
what is checked is what the store will see.

It fails closed: a request it cannot classify (an unknown sub-resource, another host, a
body it cannot read) is refused on a scoped connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.etree import ElementTree

from airflow_s3connect.allowlist import check_call, restricted
from airflow_s3connect.errors import ScopeError
from airflow_s3connect.scope import Scope, access_point_label

#: Query parameters that carry a request's signature (SigV4 and SigV2 presigned URLs) or
#: botocore's operation hint: they never name a location.
SIGNING_QUERY = frozenset(
    {
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-amz-signature",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "x-amz-user-agent",
        "awsaccesskeyid",
        "signature",
        "expires",
        "x-id",
    }
)

_RESPONSE_OVERRIDES = (
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
)

#: Query parameters an object request (a key in the path) may carry, per method. Each is a
#: sub-resource of one object (its tags, ACL, parts, restore…) or a parameter of one:
#: none names another bucket, key or prefix. A test derives the same sets from botocore's
#: model for every operation :mod:`allowlist` allows, so one botocore adds fails the build.
OBJECT_QUERY: Mapping[str, frozenset[str]] = {
    "GET": frozenset(
        {
            "versionId",
            "partNumber",
            *_RESPONSE_OVERRIDES,
            "acl",
            "annotation",
            "annotationName",
            "max-annotation-results",
            "annotation-prefix",
            "continuation-token",
            "attributes",
            "legal-hold",
            "retention",
            "tagging",
            "torrent",
            "uploadId",
            "max-parts",
            "part-number-marker",
        }
    ),
    "HEAD": frozenset({"versionId", "partNumber", *_RESPONSE_OVERRIDES}),
    "PUT": frozenset(
        {
            "partNumber",
            "uploadId",
            "versionId",
            "acl",
            "annotation",
            "annotationName",
            "legal-hold",
            "retention",
            "tagging",
            "renameObject",
            "encryption",
        }
    ),
    "POST": frozenset({"uploads", "uploadId", "restore", "select", "select-type", "versionId"}),
    "DELETE": frozenset({"uploadId", "versionId", "tagging", "annotation", "annotationName"}),
}

_LISTING_PARAMETERS = frozenset(
    {
        "delimiter",
        "encoding-type",
        "max-keys",
        "prefix",
        "marker",
        "continuation-token",
        "fetch-owner",
        "start-after",
        "key-marker",
        "version-id-marker",
        "upload-id-marker",
        "max-uploads",
    }
)

#: Bucket requests (no key in the path) a scoped connection may send: (method, the
#: sub-resource that names the operation or "" for none) → the operation and the other
#: query parameters it may carry. Everything else on a bucket is its configuration.
BUCKET_REQUESTS: Mapping[tuple[str, str], tuple[str, frozenset[str]]] = {
    ("HEAD", ""): ("HeadBucket", frozenset()),
    ("GET", "location"): ("GetBucketLocation", frozenset()),
    ("GET", "session"): ("CreateSession", frozenset()),
    ("GET", ""): ("ListObjects", _LISTING_PARAMETERS),
    ("GET", "list-type"): ("ListObjectsV2", _LISTING_PARAMETERS),
    ("GET", "versions"): ("ListObjectVersions", _LISTING_PARAMETERS),
    ("GET", "uploads"): ("ListMultipartUploads", _LISTING_PARAMETERS),
    ("POST", "delete"): ("DeleteObjects", frozenset()),
    ("PUT", ""): ("CreateBucket", frozenset()),
}
#: The sub-resources that name a bucket operation above.
BUCKET_SUBRESOURCES = frozenset(sub for _, sub in BUCKET_REQUESTS if sub)

#: Requests about no bucket (``GET /``): the account's buckets.
SERVICE_REQUESTS: Mapping[str, tuple[str, frozenset[str]]] = {
    "GET": ("ListBuckets", frozenset({"max-buckets", "continuation-token", "prefix", "bucket-region"})),
}

#: Object requests by (method, naming sub-resource): the operation a refusal names.
_OBJECT_OPERATIONS: Mapping[tuple[str, str], str] = {
    ("GET", ""): "GetObject",
    ("HEAD", ""): "HeadObject",
    ("PUT", ""): "PutObject",
    ("DELETE", ""): "DeleteObject",
    ("POST", "uploads"): "CreateMultipartUpload",
    ("POST", "uploadId"): "CompleteMultipartUpload",
    ("POST", "restore"): "RestoreObject",
    ("POST", "select"): "SelectObjectContent",
    ("PUT", "uploadId"): "UploadPart",
    ("DELETE", "uploadId"): "AbortMultipartUpload",
    ("GET", "uploadId"): "ListParts",
    ("GET", "tagging"): "GetObjectTagging",
    ("PUT", "tagging"): "PutObjectTagging",
    ("DELETE", "tagging"): "DeleteObjectTagging",
}
_NAMING = frozenset(sub for _, sub in _OBJECT_OPERATIONS if sub)

#: Headers that name another object: the source of a copy or a rename.
SOURCE_HEADERS = ("x-amz-copy-source", "x-amz-rename-source")

#: Amazon S3's own host names: a bucket (or access point) label, the service, then any
#: region, FIPS or dual-stack labels. Only accepted when the connection has no endpoint_url.
_AWS_HOST = re.compile(
    r"^(?:(?P<label>.+?)\.)?s3(?:-accesspoint|-control)?(?:-fips)?(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?$"
)


@dataclass(frozen=True)
class Endpoint:
    """Where a client sends its requests: ``scheme://netloc/base`` of its endpoint URL,
    and whether it is Amazon S3's own (whose host names then vary by region)."""

    netloc: str
    base_path: str = ""
    aws: bool = False

    @classmethod
    def of(cls, endpoint_url: str, custom: bool) -> Endpoint:
        parts = urlsplit(endpoint_url)
        return cls(parts.netloc.lower(), parts.path.rstrip("/"), aws=not custom)


@dataclass(frozen=True)
class Located:
    """The bucket (None for the account) and key (``""`` for the bucket itself) a URL names."""

    bucket: str | None
    key: str


def locate(url: str, endpoint: Endpoint, scope: Scope) -> Located:
    """Which bucket and key ``url`` addresses, on this endpoint, in path or virtual-host style.

    A host that is neither the endpoint nor a bucket's name under it (nor, for Amazon S3,
    one of its regional host names) is refused: a request redirected elsewhere.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    path = parts.path
    if endpoint.base_path and path.startswith(endpoint.base_path + "/"):
        path = path[len(endpoint.base_path) :]
    label: str | None
    if netloc == endpoint.netloc:
        label = None
    elif netloc.endswith("." + endpoint.netloc):
        label = netloc[: -len(endpoint.netloc) - 1]
    elif endpoint.aws and (match := _AWS_HOST.match(parts.hostname or "")) is not None:
        label = match.group("label")
    else:
        raise ScopeError(
            f"a request to {netloc!r}, while the connection's endpoint is "
            f"{endpoint.netloc!r} and its scope {scope.describe()}."
        )
    if label is not None:
        # Virtual-host style: the bucket (or an access point's name-account) is the host's label.
        return Located(_bucket_of_label(label, scope), unquote(path[1:]))
    bucket, _, key = path[1:].partition("/")
    return Located(unquote(bucket) or None, unquote(key))


def _bucket_of_label(label: str, scope: Scope) -> str:
    """A virtual host's label as a bucket: an access point's ``name-account`` label stands
    for the access point ARN the connection names."""
    if scope.bucket is not None and scope.bucket.startswith("arn:") and label == access_point_label(scope.bucket):
        return scope.bucket
    return label


def check_request(
    scope: Scope,
    endpoint: Endpoint,
    method: str,
    url: str,
    headers: Mapping[str, str] | Mapping[str, bytes] | Iterable[tuple[str, str]],
    body: object = None,
) -> None:
    """Refuse an HTTP request of a scoped client that reaches anything outside ``scope``.

    Raises :class:`ScopeError` saying what the request names; returns when the request is
    one of the shapes a scoped connection may send and everything it names is inside.
    """
    if not restricted(scope):
        return
    described = f"{method.upper()} {_shown(url)}"
    try:
        _check(scope, endpoint, method.upper(), url, headers, body, described)
    except ScopeError as exc:
        if str(exc).startswith(described):
            raise
        raise ScopeError(f"{described} is refused: {exc}") from None


def _check(
    scope: Scope,
    endpoint: Endpoint,
    method: str,
    url: str,
    headers: Mapping[str, str] | Mapping[str, bytes] | Iterable[tuple[str, str]],
    body: object,
    described: str,
) -> None:
    where = locate(url, endpoint, scope)
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    header_map = {_text(k).lower(): _text(v) for k, v in (headers.items() if isinstance(headers, Mapping) else headers)}
    host = header_map.get("host")
    if host is not None and host.lower() != urlsplit(url).netloc.lower():
        _refuse(described, f"its Host header {host!r} names another host than its URL", scope)
    seen = [name for name, _ in query]
    if len(seen) != len(set(seen)):
        repeated = sorted({name for name in seen if seen.count(name) > 1})
        _refuse(described, f"its query repeats {', '.join(repeated)} (stores differ in which one they read)", scope)
    names: dict[str, str] = {}
    for name, value in query:
        if name.lower().startswith("x-amz-") and name.lower() not in SIGNING_QUERY:
            header_map.setdefault(name.lower(), value)  # a presigned URL hoists headers into its query
        elif name.lower() not in SIGNING_QUERY:
            names[name] = value
    if where.bucket is None:
        operation, allowed = SERVICE_REQUESTS.get(method, ("", frozenset()))
        _only(names, allowed, described, scope)
        if not operation:
            _refuse(described, "it is not an S3 request a scoped connection sends", scope)
        check_call(scope, operation, {})
        return
    if where.key:
        _check_object(scope, method, where, names, header_map, body, described)
        return
    sub = next((name for name in names if name in BUCKET_SUBRESOURCES), "")
    operation, allowed = BUCKET_REQUESTS.get((method, sub), ("", frozenset()))
    if not operation:
        _refuse(described, "it reads or changes the bucket's configuration", scope)
    _only(names, allowed | {sub} if sub else allowed, described, scope)
    params: dict[str, object] = {"Bucket": where.bucket}
    if operation in ("ListObjects", "ListObjectsV2", "ListObjectVersions", "ListMultipartUploads"):
        if "prefix" in names:
            params["Prefix"] = names["prefix"]
    elif operation == "DeleteObjects":
        params["Delete"] = {"Objects": [{"Key": key} for key in _xml_texts(body, "Key", described, scope)]}
    check_call(scope, operation, params)


def _check_object(
    scope: Scope,
    method: str,
    where: Located,
    names: Mapping[str, str],
    headers: Mapping[str, str],
    body: object,
    described: str,
) -> None:
    allowed = OBJECT_QUERY.get(method)
    if allowed is None:
        _refuse(described, f"an object request by {method} is not one S3 knows", scope)
    _only(names, allowed, described, scope)
    sources = {name: headers[name] for name in SOURCE_HEADERS if name in headers}
    if sources and method != "PUT":
        _refuse(described, "only a PUT may name a copy or rename source", scope)
    if method == "POST" and not names:
        _refuse(described, "a POST to an object without a sub-resource is not one S3 knows", scope)
    params: dict[str, object] = {"Bucket": where.bucket, "Key": where.key}
    operation = _OBJECT_OPERATIONS.get((method, next((n for n in names if n in _NAMING), "")), "PutObject")
    if "x-amz-copy-source" in sources:
        operation, params["CopySource"] = "CopyObject", sources["x-amz-copy-source"]
    if "x-amz-rename-source" in sources:
        operation, params["RenameSource"] = "RenameObject", sources["x-amz-rename-source"]
    check_call(scope, operation, params)
    if method == "POST" and "restore" in names:
        # A restore with a SELECT writes its output to OutputLocation.S3 (BucketName, Prefix).
        buckets = _xml_texts(body, "BucketName", described, scope)
        prefixes = _xml_texts(body, "Prefix", described, scope)
        if len(buckets) > 1 or len(prefixes) > 1:
            _refuse(described, "its restore request names more than one output location", scope)
        output = {"BucketName": buckets[0] if buckets else None, "Prefix": prefixes[0] if prefixes else None}
        if buckets or prefixes:
            check_call(scope, "RestoreObject", {**params, "RestoreRequest": {"OutputLocation": {"S3": output}}})


def _only(names: Mapping[str, str], allowed: Iterable[str], described: str, scope: Scope) -> None:
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        _refuse(described, f"its query names {', '.join(unknown)}, which a scoped connection does not send", scope)


def _xml_texts(body: object, tag: str, described: str, scope: Scope) -> list[str]:
    """The texts of every ``tag`` element of an XML request body (any namespace)."""
    if body is None or body == b"" or body == "":
        return []
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, bytes | bytearray):
        _refuse(described, "its body cannot be read before sending", scope)
    try:
        root = ElementTree.fromstring(bytes(body))
    except ElementTree.ParseError:
        _refuse(described, "its body is not the XML S3 expects", scope)
    return [element.text or "" for element in root.iter() if element.tag.rsplit("}", 1)[-1] == tag]


def _text(value: str | bytes) -> str:
    """A header name or value as text (botocore keeps some as bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _shown(url: str) -> str:
    """A URL without its query (a presigned URL's query holds the signature)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _refuse(described: str, why: str, scope: Scope) -> NoReturn:
    raise ScopeError(f"{described} is refused on a connection restricted to {scope.describe()}: {why}.")
