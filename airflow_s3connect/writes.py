"""What every write carries: one set of options, and one table routing each to the requests
that accept it.

Pure: no I/O, no Airflow. A bucket another company owns comes with a policy ("deny
PutObject without aws:kms", "require bucket-owner-full-control", a tag that lifecycle
rules select on), and a write that lacks it is refused, whichever of our paths made it:
an upload, a multipart upload's first request, a copy, an archive, a reservation, a probe,
a manifest, a task log. So the connection's write options are applied by the client to
every request of those kinds (:func:`airflow_s3connect.client.configure`), and the
options a caller gives for one call travel as a :class:`WriteOptions` whose
:meth:`~WriteOptions.args` asks :data:`ROUTES` which of them each request takes, as
s3transfer's per-request argument tables do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

from airflow_s3connect.errors import ArgumentError, MacroError
from airflow_s3connect.macros import macro_names

#: Requests that create an object and take its attributes.
CREATE = frozenset({"PutObject", "CreateMultipartUpload", "CopyObject"})
#: Requests that carry an SSE-C key: every write of the object's bytes and every read.
SSE_C = frozenset(
    {
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "CopyObject",
        "UploadPartCopy",
        "GetObject",
        "HeadObject",
    }
)
#: Requests that read another object of the connection as their source.
COPIES = frozenset({"CopyObject", "UploadPartCopy"})
#: Requests s3transfer routes an upload's arguments to itself (ours are given as PutObject's).
CHECKSUM = frozenset({"PutObject", "CreateMultipartUpload", "UploadPart"})

SSE_VALUES = ("AES256", "aws:kms", "aws:kms:dsse")
CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
)


@dataclass(frozen=True)
class Route:
    """One option: the request parameters it becomes, and the requests that take them."""

    option: str
    operations: frozenset[str]
    to_params: Callable[[Any], dict[str, Any]]


def _kms_context(value: Mapping[str, str]) -> dict[str, Any]:
    return {"SSEKMSEncryptionContext": base64.b64encode(json.dumps(dict(value)).encode()).decode()}


def _sse_c(value: str) -> dict[str, Any]:
    # botocore base64-encodes the key and adds its MD5 (the sse-c handler of its S3 client).
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": value}


#: Every write option, once: which parameters it becomes on which requests.
ROUTES: tuple[Route, ...] = (
    Route("content_type", CREATE, lambda v: {"ContentType": v}),
    Route("cache_control", CREATE, lambda v: {"CacheControl": v}),
    Route("content_disposition", CREATE, lambda v: {"ContentDisposition": v}),
    Route("content_encoding", CREATE, lambda v: {"ContentEncoding": v}),
    Route("content_language", CREATE, lambda v: {"ContentLanguage": v}),
    Route("metadata", CREATE, lambda v: {"Metadata": dict(v)}),
    Route("server_side_encryption", CREATE, lambda v: {"ServerSideEncryption": v}),
    Route("kms_key_id", CREATE, lambda v: {"SSEKMSKeyId": v}),
    Route("bucket_key_enabled", CREATE, lambda v: {"BucketKeyEnabled": bool(v)}),
    Route("kms_encryption_context", CREATE, _kms_context),
    Route("sse_customer_key", SSE_C, _sse_c),
    # Within one connection a copy's source was written with the same key.
    Route(
        "sse_customer_key",
        COPIES,
        lambda v: {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": v},
    ),
    Route("acl", CREATE, lambda v: {"ACL": v}),
    Route("storage_class", CREATE, lambda v: {"StorageClass": v}),
    Route("tags", CREATE, lambda v: {"Tagging": urlencode(sorted(dict(v).items()))}),
    Route("checksum_algorithm", CHECKSUM, lambda v: {"ChecksumAlgorithm": v}),
)
#: Options a copy applies instead of the source's, and the directive that makes S3 do so.
_DIRECTIVES = {
    "MetadataDirective": ("content_type", "cache_control", "content_disposition", "content_encoding",
                          "content_language", "metadata"),
    "TaggingDirective": ("tags",),
}  # fmt: skip


@dataclass(frozen=True)
class WriteOptions:
    """Everything a write may carry besides its bytes. ``None`` (or empty) means "not set":
    neither sent nor overriding another set of options.

    :param overwrite: False makes every write conditional (``If-None-Match: *``).
    :param writer: who writes, the same for every try of one task instance; stored as
        metadata, so that a retry recognises the object its earlier try completed.
    :param requester_pays: every request of the connection says it pays (read and write).
    """

    overwrite: bool = True
    content_type: str | None = None
    cache_control: str | None = None
    content_disposition: str | None = None
    content_encoding: str | None = None
    content_language: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    server_side_encryption: str | None = None
    kms_key_id: str | None = None
    bucket_key_enabled: bool | None = None
    kms_encryption_context: Mapping[str, str] | None = None
    sse_customer_key: str | None = field(default=None, repr=False)
    acl: str | None = None
    storage_class: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    requester_pays: bool = False
    checksum_algorithm: str | None = None
    writer: str | None = None

    def __post_init__(self) -> None:
        if self.server_side_encryption is not None and self.server_side_encryption not in SSE_VALUES:
            raise ArgumentError(
                f"server_side_encryption={self.server_side_encryption!r}: use one of {', '.join(SSE_VALUES)}."
            )
        kms = (self.server_side_encryption or "").startswith("aws:kms")
        for name in ("kms_key_id", "kms_encryption_context", "bucket_key_enabled"):
            if getattr(self, name) not in (None, {}) and not kms:
                raise ArgumentError(f"{name} needs server_side_encryption='aws:kms' (or 'aws:kms:dsse').")
        if self.sse_customer_key is not None and self.server_side_encryption is not None:
            raise ArgumentError("sse_customer_key (SSE-C) and server_side_encryption exclude each other: give one.")
        if self.acl is not None and self.acl not in CANNED_ACLS:
            raise ArgumentError(f"acl={self.acl!r}: use a canned ACL, one of {', '.join(CANNED_ACLS)}.")
        if self.storage_class is not None and self.storage_class not in STORAGE_CLASSES:
            raise ArgumentError(f"storage_class={self.storage_class!r}: use one of {', '.join(STORAGE_CLASSES)}.")

    def overridden(self, **overrides: Any) -> WriteOptions:
        """These options with ``overrides`` applied; ``None`` and empty values override nothing."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ArgumentError(f"Unknown write option {unknown[0]!r}: use one of {', '.join(sorted(known))}.")
        given = {name: value for name, value in overrides.items() if value is not None and value != {}}
        return replace(self, **given)

    def args(self, operation: str) -> dict[str, Any]:
        """The parameters of ``operation`` these options make (:data:`ROUTES`), with the
        writer's metadata; for a copy, the directives that make S3 apply them."""
        if operation in CREATE and (pending := sorted({m for v in self.tags.values() for m in macro_names(v)})):
            raise MacroError(
                f"tags {dict(self.tags)!r} name {{{pending[0]}}}, which only a run can fill: write through an "
                "s3connect operator (or call hook.render_path_prefix(...) first), or give the tag's value itself."
            )
        params: dict[str, Any] = {}
        for route in ROUTES:
            value = getattr(self, route.option)
            if operation in route.operations and value not in (None, {}, ""):
                params.update(route.to_params(value))
        if self.writer and operation in CREATE:
            params["Metadata"] = {**params.get("Metadata", {}), WRITER_METADATA: self.writer}
        if operation == "CopyObject":
            for directive, options in _DIRECTIVES.items():
                if any(getattr(self, name) not in (None, {}, "") for name in options):
                    params[directive] = "REPLACE"
        if self.requester_pays:
            params["RequestPayer"] = "requester"
        return params

    @property
    def replaces_source_attributes(self) -> bool:
        """Whether a copy with these options takes the caller's content type and metadata
        instead of the source's."""
        return any(getattr(self, name) not in (None, {}, "") for name in _DIRECTIVES["MetadataDirective"])


#: Metadata naming the task instance that wrote an object (``x-amz-meta-s3connect-writer``).
WRITER_METADATA = "s3connect-writer"
#: Metadata marking the object that holds a multipart upload's key until it completes (on
#: stores that ignore the condition on CompleteMultipartUpload). Never data: listings skip it.
RESERVATION_METADATA = "s3connect-reservation"
#: A reservation's bytes: fixed, so that a listing tells a reservation by its size and
#: ETag (the MD5 of these bytes) without reading its metadata, and a person who opens one
#: reads what it is. Padded to an unusual size, so that data of the same size (whose ETag
#: then differs, costing a HEAD) is rare.
RESERVATION_BODY = b"s3connect: reserved for a multipart upload in progress; never data.\n".ljust(1337, b" ")
RESERVATION_ETAG = '"' + hashlib.md5(RESERVATION_BODY, usedforsecurity=False).hexdigest() + '"'


def looks_reserved(size: int, etag: str) -> bool | None:
    """From a listing: True for a reservation, False for data, None when only its metadata
    can tell (the reservation's size, but an ETag encryption changed)."""
    if size != len(RESERVATION_BODY):
        return False
    return True if etag == RESERVATION_ETAG else None


_TAG_TEXT = re.compile(r"^[^=&]+=[^&]*(&[^=&]+=[^&]*)*$")


def parse_tags(value: str | Mapping[str, Any] | None) -> dict[str, str]:
    """Tags given as a JSON object, a mapping, or ``k=v&k2=v2``: a dict, or ArgumentError."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    text = value.strip()
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            raise ArgumentError(f'tags {text!r} is not a JSON object: write {{"team": "data"}}.') from None
        if not isinstance(loaded, dict):
            raise ArgumentError(f'tags {text!r} is not a JSON object: write {{"team": "data"}}.')
        return {str(k): str(v) for k, v in loaded.items()}
    if not _TAG_TEXT.match(text):
        raise ArgumentError(
            f"tags {text!r}: write a JSON object or key=value pairs joined by '&' (team=data&env=prod)."
        )
    return dict(parse_qsl(text, keep_blank_values=True))


def parse_json_object(name: str, value: str | Mapping[str, Any] | None) -> dict[str, str] | None:
    """A JSON object option (``kms_encryption_context``): a dict of strings, or ArgumentError."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    try:
        loaded = json.loads(value)
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict):
        raise ArgumentError(f'{name} {value!r} is not a JSON object: write {{"project": "billing"}}.')
    return {str(k): str(v) for k, v in loaded.items()}


#: What an object carries besides its bytes that a copy keeps: (request parameter, answer field).
SOURCE_ATTRIBUTES = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")


def with_source_attributes(params: dict[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of a new write plus the source's attributes (a HeadObject or GetObject
    answer): content type, cache control, disposition, encoding, language and user metadata.
    What ``params`` already holds wins."""
    out = dict(params)
    for name in SOURCE_ATTRIBUTES:
        if answer.get(name) and name not in out:
            out[name] = answer[name]
    if answer.get("Metadata"):
        out["Metadata"] = {**answer["Metadata"], **out.get("Metadata", {})}
    return out


def add_defaults(params: dict[str, Any], defaults: Mapping[str, Any], accepted: Iterable[str] | None = None) -> None:
    """Add a connection's write options (``WriteOptions.args`` of the request) to ``params``:
    what the caller gave for this request stays, and metadata is merged under the caller's.
    ``accepted``: the parameters the request takes (others are skipped)."""
    for name, value in defaults.items():
        if accepted is not None and name not in accepted:
            continue
        if name == "Metadata":
            params["Metadata"] = {**value, **params.get("Metadata", {})}
        else:
            params.setdefault(name, value)
