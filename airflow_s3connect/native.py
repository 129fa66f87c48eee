"""The native engine: GetObject and single-part PutObject through obstore (Rust's ``object_store``).

Why: on many small objects the cost is botocore's Python per request (signing, parsing,
events), which threads do not remove on a small worker. The same requests made in Rust
take about a third of the time and of the client CPU on gets, a sixth of the CPU on puts
(``make bench``, 2,000 objects of 16 KiB on Ceph RGW): the figures are in BENCHMARKS.md.

What stays ours: planning, temporary files, ETag pinning, resumption, cancellation, conditional
writes, cleanup and results are the Downloader's and Uploader's, whichever engine sends the
request. This module only sends requests, answering in botocore's shapes (a response dict, a
``ClientError`` with the store's code), so that every guarantee built on those answers holds
unchanged. Each request is checked against the connection's scope before it is made, counted
(``before-send`` on :attr:`NativeEngine.events`, as botocore counts its own), and retried as
the connection says (``max_attempts``, with botocore's ``standard`` backoff).

A request the native engine cannot make exactly as asked goes to botocore instead
(:meth:`NativeEngine.refusal` and :func:`connection_refusal` say why, and the transfer logs
it): a parameter it does not send (ACL, encryption it cannot see applied, an expected bucket
owner, SSE-C, a chosen checksum), a ``ca_bundle`` (rustls would trust the public roots beside
it), obstore's own ``AWS_*`` settings in the worker's environment, AWS without a region (no
region redirects), a key ``object_store`` would rewrite (a trailing or doubled ``/``, ``.``
segments), a bucket with dots or an access point, or a multipart upload (whose upload id
obstore does not hand out, so that a killed worker's upload could not be aborted by its
retry). With ``engine=auto`` the later ranges of a large object also go to botocore: measured
faster there (BENCHMARKS.md).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)

from airflow_s3connect.allowlist import check_call
from airflow_s3connect.checksums import read_back_md5, remove_damaged
from airflow_s3connect.connection import AddressingStyle, ConnectionSettings
from airflow_s3connect.errors import ConnectionSettingsError, IntegrityError
from airflow_s3connect.scope import path_problem
from airflow_s3connect.writes import add_defaults

if TYPE_CHECKING:
    from obstore.store import S3Store

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: GetObject's parameters the native engine sends, and obstore's name for each.
GET_PARAMETERS = {
    "Bucket": None,
    "Key": None,
    "Range": "range",
    "IfMatch": "if_match",
    "IfNoneMatch": "if_none_match",
    "IfModifiedSince": "if_modified_since",
    "VersionId": "version",
    "RequestPayer": None,  # the store's request_payer, set from the connection
}
#: PutObject's parameters the native engine sends, and obstore's attribute for each.
#: ``ChecksumAlgorithm`` is answered by comparing the returned ETag with the body's MD5.
PUT_PARAMETERS = {
    "Bucket": None,
    "Key": None,
    "Body": None,
    "IfNoneMatch": None,
    "Metadata": None,
    "Tagging": None,
    "ChecksumAlgorithm": None,
    "ContentType": "Content-Type",
    "CacheControl": "Cache-Control",
    "ContentDisposition": "Content-Disposition",
    "ContentEncoding": "Content-Encoding",
    "ContentLanguage": "Content-Language",
    "StorageClass": "Storage-Class",
    "RequestPayer": None,
}
#: obstore takes a metadata key that names an attribute (any case, with or without '-') as that attribute.
_ATTRIBUTE_NAMES = {name.lower().replace("-", "") for name in PUT_PARAMETERS.values() if name}
#: What a connection setting keeps every request on botocore, and why.
CONNECTION_REFUSALS: tuple[tuple[str, str], ...] = (
    ("expected_bucket_owner", "it does not send x-amz-expected-bucket-owner"),
    ("sse_customer_key", "it does not send an SSE-C key"),
    ("server_side_encryption", "it cannot see whether the store applied the encryption"),
    ("kms_key_id", "it cannot see whether the store applied the encryption"),
    ("acl", "it does not send a canned ACL"),
    # rustls adds a bundle to the system's roots; botocore trusts the bundle alone
    ("ca_bundle", "it would trust the public CAs beside the bundle"),
)
#: obstore reads these from the worker's environment for what the connection leaves unset:
#: a write encrypted, tags dropped, another endpoint, unsigned requests. Set, they keep the
#: connection on botocore, which reads none of them.
ENVIRONMENT_REFUSALS = (
    "AWS_SERVER_SIDE_ENCRYPTION", "AWS_SSE_KMS_KEY_ID", "AWS_SSE_BUCKET_KEY_ENABLED", "AWS_SSE_CUSTOMER_KEY_BASE64",
    "AWS_CHECKSUM_ALGORITHM", "AWS_ENDPOINT", "AWS_SKIP_SIGNATURE", "AWS_UNSIGNED_PAYLOAD", "AWS_DISABLE_TAGGING",
    "AWS_REQUEST_PAYER", "AWS_CONDITIONAL_PUT", "AWS_PROXY_URL", "AWS_PROXY_CA_CERTIFICATE",
    "AWS_ALLOW_INVALID_CERTIFICATES", "AWS_DEFAULT_CONTENT_TYPE", "AWS_COPY_IF_NOT_EXISTS",
)  # fmt: skip
#: What a HEAD describing a GET's object takes from the GET (the same version, pinned).
_HEAD_PARAMETERS = ("Bucket", "Key", "VersionId", "IfMatch", "RequestPayer")
_PLAIN_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]+)</Code>")
#: obstore's refusal of an answer shorter than the range asked for, and of a range of an empty object.
_SHORT = re.compile(r"Requested \d+\.\.\d+, got \d+\.\.\d+")
_EMPTY = re.compile(r"Wanted range starting at \d+, but object was only 0 bytes long")
#: A failure with no answer: the connection, a timeout, a reset or a cut-off body.
_NETWORK = re.compile(r"kind: (Connect|Timeout|Interrupted|Request|Body)\b|error sending request|body error")
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}
_RETRYABLE_CODES = {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "RequestTimeTooSkewed"}
#: An exception type of obstore's, the HTTP status and error code it stands for when its
#: message names none (a 304 has no body).
_ANSWERS = {
    "NotModifiedError": (304, "304"),
    "PreconditionError": (412, "PreconditionFailed"),
    "AlreadyExistsError": (412, "PreconditionFailed"),
    "NotFoundError": (404, "NoSuchKey"),
    "FileNotFoundError": (404, "NoSuchKey"),
    "PermissionDeniedError": (403, "AccessDenied"),
    "UnauthenticatedError": (403, "AccessDenied"),
}


def available() -> bool:
    """Whether obstore is installed (``pip install airflow-s3connect[fast]``)."""
    return importlib.util.find_spec("obstore") is not None


def connection_refusal(settings: ConnectionSettings) -> str | None:
    """Why no request of this connection can use the native engine, or None."""
    for name, why in CONNECTION_REFUSALS:
        if getattr(settings, name):
            return f"the connection sets {name} and {why}"
    if set_here := sorted(name for name in ENVIRONMENT_REFUSALS if os.environ.get(name)):
        return f"the worker's environment sets {', '.join(set_here)}, which it would apply to its requests"
    if not settings.endpoint_url and not settings.region_name:
        return "on AWS it needs the connection's region_name (it does not follow region redirects)"
    return None


def key_refusal(bucket: str, key: str) -> str | None:
    """Why obstore cannot address ``key`` of ``bucket`` exactly, or None: it drops a trailing
    '/' and refuses empty or dot segments, so such a key would be another object or none."""
    if not _PLAIN_BUCKET.match(bucket) or "." in bucket or bucket.endswith("--x-s3"):
        return f"bucket {bucket!r} is not a plain bucket name (dots, directory buckets, access points)"
    if not key or (problem := path_problem(key, empty_segments=False, backslash=True)) is not None:
        return f"key {key!r} {problem or 'is empty'}"
    return None


class _ShortAnswer(Exception):
    """obstore refused an answer shorter than its range (see :meth:`NativeEngine._short_answer`)."""


class NativeBody:
    """A GET's body as botocore's StreamingBody is read here: chunks, then closed.

    A body that breaks off raises botocore's ResponseStreamingError, which the Downloader
    answers by asking again from the byte it reached (``result`` None: one that broke off
    before its first byte)."""

    def __init__(self, result: Any, length: int) -> None:
        self._result = result
        self._length = length
        self._closed = False

    def iter_chunks(self, chunk_size: int) -> Iterator[Any]:
        """Chunks of at least ``chunk_size`` bytes (obstore's buffers, not copied); a body no
        longer than one chunk is taken in one call."""
        try:
            if self._result is None:
                raise ValueError("the store answered fewer bytes than the range asked for")
            if self._length <= chunk_size:
                yield self._result.bytes()
                return
            for chunk in self._result.stream(min_chunk_size=chunk_size):
                if self._closed:
                    return
                yield chunk
        except Exception as exc:  # obstore raises its own types for a broken body
            raise ResponseStreamingError(error=exc) from None

    def read(self) -> bytes:
        return b"".join(self.iter_chunks(self._length))

    def close(self) -> None:
        self._closed = True


class NativeEngine:
    """S3 requests of one connection through obstore, one store per bucket, thread-safe.

    It shares the connection's botocore ``client``: its credentials (refreshing for
    assume_role: obstore asks for them again every minute, so a refreshed session reaches it
    as it reaches botocore), its region, and the removal of a write found damaged.
    """

    def __init__(self, client: Any, settings: ConnectionSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        from botocore.hooks import HierarchicalEmitter  # with botocore's HTTP stack: not at import

        self.client = client
        self.settings = settings
        self.events = HierarchicalEmitter()
        self._defaults = settings.write_defaults
        self._default_args: dict[str, dict[str, Any]] = {}  # per operation: the options never change
        self._region = client.meta.region_name or settings.region_name or "us-east-1"
        self._stores: dict[str, S3Store] = {}
        self._sleep = sleep

    def _with_defaults(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with the connection's write options, as botocore's client adds them."""
        merged = dict(params)
        defaults = self._default_args.get(operation)
        if defaults is None:
            defaults = self._default_args[operation] = self._defaults.args(operation)
        add_defaults(merged, defaults)
        return merged

    # ------------------------------------------------------------------ routing
    def refusal(self, operation: str, params: Mapping[str, Any]) -> str | None:
        """Why this request goes to botocore instead, or None."""
        allowed = GET_PARAMETERS if operation == "GetObject" else PUT_PARAMETERS if operation == "PutObject" else None
        if allowed is None:
            return f"it does not make {operation} requests"
        params = self._with_defaults(operation, params)
        if unknown := sorted(name for name, value in params.items() if name not in allowed and value is not None):
            return f"it does not send {', '.join(unknown)}"
        if (why := key_refusal(str(params.get("Bucket", "")), str(params.get("Key", "")))) is not None:
            return why
        metadata = params.get("Metadata") or {}
        if clash := sorted(name for name in metadata if name.lower().replace("-", "") in _ATTRIBUTE_NAMES):
            return f"metadata {', '.join(clash)} would be sent as a header of that name"
        if operation == "PutObject" and params.get("IfNoneMatch") not in (None, "*"):
            return "it sends only If-None-Match: * on a write"
        if params.get("ChecksumAlgorithm") is not None:
            return f"it does not send a {params['ChecksumAlgorithm']} checksum (it compares the ETag with the MD5)"
        return None

    # ------------------------------------------------------------------ requests
    def get_object(self, **params: Any) -> dict[str, Any]:
        """GetObject, answered as botocore answers it: ETag, LastModified, VersionId,
        ContentLength, ContentRange (for a range) and a streaming Body."""
        import obstore

        bucket, key = params["Bucket"], params["Key"]
        options: Any = {}  # obstore's GetOptions
        for name, value in params.items():
            option = GET_PARAMETERS.get(name)
            if option is None or value is None:
                continue
            options[option] = _range(value) if name == "Range" else value
        try:
            result = self._send("GetObject", params, lambda: obstore.get(self._store(bucket), key, options=options))
        except _ShortAnswer:
            return self._short_answer(params, options)
        meta = result.meta
        start, end = result.range
        answer: dict[str, Any] = {
            "ETag": meta["e_tag"],
            "LastModified": meta["last_modified"],
            "ContentLength": end - start,
            "Body": NativeBody(result, end - start),
        }
        if meta.get("version"):
            answer["VersionId"] = meta["version"]
        if "Range" in params:
            answer["ContentRange"] = f"bytes {start}-{end - 1}/{meta['size']}"
        return answer

    def _short_answer(self, params: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        """The store answered fewer bytes than the range asked for, which obstore refuses
        whole: answered as botocore's body that ends early (the Downloader asks again from
        where it was, as many times as its transfer allows), described by a HEAD."""
        head = self.client.head_object(**{name: params[name] for name in _HEAD_PARAMETERS if params.get(name)})
        size = int(head["ContentLength"])
        first, last = options["range"] if isinstance(options["range"], tuple) else (options["range"]["offset"], 0)
        last = last or size
        return {
            "ETag": head["ETag"],
            "LastModified": head["LastModified"],
            "ContentLength": last - first,
            "ContentRange": f"bytes {first}-{last - 1}/{size}",
            "Body": NativeBody(None, last - first),
        }

    def put_object(self, **params: Any) -> dict[str, Any]:
        """A single-part PutObject; the answered ETag must be the body's MD5 (what the
        store received), else the object is removed and :class:`IntegrityError` raised."""
        import obstore

        params = self._with_defaults("PutObject", params)
        bucket, key, body = params["Bucket"], params["Key"], params["Body"]
        data = body if isinstance(body, bytes | bytearray | memoryview) else body.read()
        attributes: dict[str, str] = {
            PUT_PARAMETERS[name] or name: str(value)
            for name, value in params.items()
            if PUT_PARAMETERS.get(name) and value is not None
        }
        attributes.update(params.get("Metadata") or {})
        tags = _tags(params.get("Tagging"))
        mode = "create" if params.get("IfNoneMatch") == "*" else "overwrite"
        store = self._store(bucket)
        options: dict[str, Any] = {"attributes": attributes or None, "tags": tags or None, "mode": mode}
        result = self._send("PutObject", params, lambda: obstore.put(store, key, data, use_multipart=False, **options))
        etag = str(result.get("e_tag") or "")
        expected = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        if (
            self.settings.upload_checksums != "off"
            and etag != expected
            and not self._holds(bucket, key, result, expected)
        ):
            removed = remove_damaged(self.client, bucket, key, result.get("version"), etag)
            raise IntegrityError(
                f"PutObject of s3://{bucket}/{key}: the store answered ETag {etag}, not the MD5 of the bytes sent "
                f"({expected}): the bytes were damaged on the way{removed}. Run again."
            )
        answer: dict[str, Any] = {"ETag": etag}
        if result.get("version"):
            answer["VersionId"] = result["version"]
        return answer

    def _holds(self, bucket: str, key: str, result: Mapping[str, Any], expected: str) -> bool:
        """Whether the store holds the bytes sent although its ETag is not their MD5: under
        the bucket's default SSE-KMS the ETag is no MD5, so what it holds is read back (as
        ``checksum_mode="header"`` does under encryption on botocore)."""
        where: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if result.get("version"):
            where["VersionId"] = result["version"]
        head = self.client.head_object(**where)
        if not str(head.get("ServerSideEncryption", "")).startswith("aws:kms"):
            return False
        return f'"{read_back_md5(self.client, where)}"' == expected

    def _send(self, operation: str, params: Mapping[str, Any], request: Callable[[], _T]) -> _T:
        """One request: checked against the scope, counted, retried as botocore's standard
        mode retries (5xx, throttling, broken connections; at most ``max_attempts``)."""
        check_call(self.settings.scope, operation, params)
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            self.events.emit(f"before-send.s3.{operation}", request=None, attempt=attempt)
            try:
                return request()
            except (ValueError, TypeError):
                raise  # a request obstore refused to build: a bug here, not an answer
            except Exception as exc:  # obstore's exception types; translated below
                status, code = _answer(exc)
                if _SHORT.search(str(exc)):
                    raise _ShortAnswer from None
                network = status is None and _NETWORK.search(str(exc)) is not None
                retryable = code in _RETRYABLE_CODES or status in _RETRYABLE_STATUS or network
                if retryable and attempt < attempts:
                    self._sleep(random.random() * min(20.0, 2.0 ** (attempt - 1)))  # jitter, as botocore's
                    continue
                if network:
                    raise _unreachable(exc, self.settings.endpoint_url or "https://s3.amazonaws.com") from None
                answer: Any = {
                    "Error": {"Code": code, "Message": _message(exc)},
                    "ResponseMetadata": {"HTTPStatusCode": status or 0, "RetryAttempts": attempt - 1},
                }
                raise ClientError(answer, operation) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ stores
    def _store(self, bucket: str) -> S3Store:
        store = self._stores.get(bucket)
        if store is None:
            store = self._stores[bucket] = self._build(bucket)
        return store

    def _build(self, bucket: str) -> S3Store:
        from obstore.store import S3Store

        settings = self.settings
        options: Any = {  # obstore's ClientConfig
            "connect_timeout": datetime.timedelta(seconds=settings.connect_timeout),
            "read_timeout": datetime.timedelta(seconds=settings.read_timeout),
            # obstore's default bounds a whole request (body included) to 30 s; the
            # connection bounds the wait for each byte (read_timeout), as botocore does
            "timeout": datetime.timedelta(days=1),
            "pool_max_idle_per_host": str(settings.max_concurrency + 1),
            "user_agent": "airflow-s3connect",
        }
        if settings.endpoint_url and settings.endpoint_url.startswith("http://"):
            options["allow_http"] = True
        if not settings.verify_ssl:
            options["allow_invalid_certificates"] = True
        if settings.proxy_url:
            options["proxy_url"] = settings.proxy_url
        config: Any = {  # obstore's S3Config
            "region": self._region,
            "virtual_hosted_style_request": settings.addressing_style is AddressingStyle.VIRTUAL
            or (settings.addressing_style is AddressingStyle.AUTO and not settings.endpoint_url),
        }
        if settings.endpoint_url:
            config["endpoint"] = settings.endpoint_url
        config["request_payer"] = settings.requester_pays
        config.update(skip_signature=False, unsigned_payload=False, disable_tagging=False, conditional_put="etag")
        return S3Store(
            bucket,
            config=config,
            client_options=options,
            retry_config={"max_retries": 0},  # retried by _send, as the connection says and counted
            credential_provider=self._credential,
        )

    def _credential(self) -> Any:  # obstore's S3Credential
        credentials = self.client._get_credentials()
        if credentials is None:
            raise NoCredentialsError
        frozen = credentials.get_frozen_credentials()
        refreshing = hasattr(credentials, "refresh_needed")
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            # A refreshing session is asked again in a minute: botocore renews it ahead of expiry.
            "expires_at": datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
            if refreshing
            else None,
        }


def _later_range(params: Mapping[str, Any]) -> bool:
    """A GetObject of a range after the first byte: a part of a large object, or a resumption."""
    return not str(params.get("Range", "bytes=0-")).startswith("bytes=0-")


def _range(value: str) -> Any:
    """``bytes=a-b`` (inclusive) or ``bytes=a-`` as obstore's range: [a, b + 1) or an offset."""
    first, _, last = value.removeprefix("bytes=").partition("-")
    return {"offset": int(first)} if not last else (int(first), int(last) + 1)


def _tags(value: str | None) -> dict[str, str]:
    import urllib.parse

    return dict(urllib.parse.parse_qsl(value or "", keep_blank_values=True))


def _answer(exc: BaseException) -> tuple[int | None, str]:
    """The HTTP status and S3 error code an obstore exception stands for (status None: no answer)."""
    text = str(exc)
    status_match, code_match = _STATUS.search(text), _CODE.search(text)
    status = int(status_match.group(1)) if status_match else None
    known = _ANSWERS.get(type(exc).__name__)
    if status is None and known is not None:
        status = known[0]
    if status is None and "Received redirect" in text:  # AWS: the bucket is in another region
        return 301, "PermanentRedirect"
    if code_match:
        return status, code_match.group(1)
    if known is not None:
        return status, known[1]
    if status == 416 or _EMPTY.search(text):
        return 416, "InvalidRange"
    return status, str(status) if status is not None else "RequestError"


def _unreachable(exc: Exception, endpoint: str) -> Exception:
    """A request that got no answer, as botocore raises it (so it is translated the same way):
    refused or unreachable, timed out, or cut off."""
    text = str(exc)
    if re.search(r"(?i)certificate", text):
        return SSLError(endpoint_url=endpoint, error=exc)
    if re.search(r"kind: Connect\b", text):  # not ConnectionReset: that one is a cut-off
        return EndpointConnectionError(endpoint_url=endpoint)
    if re.search(r"kind: Timeout\b", text):
        return ReadTimeoutError(endpoint_url=endpoint)
    return ConnectionClosedError(endpoint_url=endpoint)


def _message(exc: BaseException) -> str:
    """The store's own message where it sent one (as botocore parses it from the error's XML),
    else the first line of obstore's (its debug detail follows)."""
    import html

    text = str(exc)
    if (found := re.search(r"<Message>([^<]*)</Message>", text)) is not None:
        return html.unescape(found.group(1))
    return text.split("\n", 1)[0][:500]


def engine_for(client: Any, settings: ConnectionSettings) -> NativeEngine | None:
    """The native engine of a connection's client, or None where every request is botocore's
    (``engine=botocore``; obstore not installed under ``auto``; a setting it cannot send)."""
    if settings.engine == "botocore":
        return None
    if not available():
        if settings.engine == "native":
            raise ConnectionSettingsError(
                settings.conn_id, "engine", "native needs obstore, which is not installed on this worker",
                "install airflow-s3connect[fast] on every worker, or set engine to auto",
            )  # fmt: skip
        return None
    if (why := connection_refusal(settings)) is not None:
        log.info("Connection %s: every request goes through botocore: %s.", settings.conn_id, why)
        return None
    return NativeEngine(client, settings)


def engine_of(client: Any) -> NativeEngine | None:
    """The native engine :func:`airflow_s3connect.client.configure` gave ``client``, if any."""
    return getattr(client, "s3connect_native", None)


class Router:
    """Which engine sends each GetObject / PutObject of one transfer. A request the native
    engine cannot make exactly goes to botocore, and the first few reasons are logged."""

    _TOLD = 3

    def __init__(self, client: Any) -> None:
        self.client = client
        self.engine = engine_of(client)
        self._told: set[str] = set()

    def sender(self, operation: str, params: Mapping[str, Any]) -> Callable[..., Any]:
        """The callable that sends ``operation`` with ``params`` (as keyword arguments)."""
        if (native := self.native(operation, params)) is not None:
            return native
        return self.client.get_object if operation == "GetObject" else self.client.put_object  # type: ignore[no-any-return]

    def native(self, operation: str, params: Mapping[str, Any]) -> Callable[..., Any] | None:
        """The native engine's method for this request, or None: botocore sends it."""
        if self.engine is None:
            return None
        why = self.engine.refusal(operation, params)
        if why is None and self.engine.settings.engine == "auto" and _later_range(params):
            return None  # measured: botocore streams the parts of a large object faster (BENCHMARKS.md)
        if why is None:
            return self.engine.get_object if operation == "GetObject" else self.engine.put_object
        if len(self._told) < self._TOLD and why not in self._told:
            self._told.add(why)
            log.info("%s of s3://%s/%s goes through botocore: the native engine %s.", operation,
                     params.get("Bucket"), params.get("Key"), why)  # fmt: skip
        return None
