"""boto3 clients built from :class:`ConnectionSettings`: credentials, AssumeRole, retries, scope.

No Airflow here. botocore does the hard parts: SigV4, the default credential chain,
``standard`` retries, and refreshable credentials. We only choose how to combine them:

* access_key: the key pair (and session token), or the worker's default chain when empty;
* assume_role: STS AssumeRole from those same source credentials, wrapped in
  refreshable credentials so a transfer of many hours outlives one-hour sessions;
* every S3 request passes a scope guard registered on the client's event system
  (:mod:`airflow_s3connect.allowlist`), so the connection's bucket / path_prefix
  restriction holds for every operation, even through the raw ``get_conn()`` client.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import datetime
import email.utils
import functools
import inspect
import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore.loaders
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    CredentialResolver,
    Credentials,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError

from airflow_s3connect import __version__, checksums, native, redaction, wire
from airflow_s3connect.allowlist import PRESIGN_REFUSED, check_call, restricted
from airflow_s3connect.connection import AuthType, ConnectionSettings
from airflow_s3connect.errors import ConnectionSettingsError, CredentialsNotFoundError, S3ConnectError, ScopeError
from airflow_s3connect.objects import version_args
from airflow_s3connect.scope import Scope
from airflow_s3connect.writes import CREATE, WriteOptions, add_defaults

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient


def refresh_margins(duration: int) -> tuple[int, int]:
    """Seconds before expiry at which assumed credentials refresh: (advisory, mandatory).

    botocore uses 15 and 10 minutes. With the shortest STS session (900 s) that margin
    covers the whole session, so every request would call AssumeRole again. A quarter
    and a sixth of the session, capped at botocore's margins, keep one AssumeRole per
    session for any duration.
    """
    return min(15 * 60, duration // 4), min(10 * 60, duration // 6)


class RoleCredentials(DeferredRefreshableCredentials):
    """Assumed-role credentials refreshed by botocore, with :func:`refresh_margins`."""

    def __init__(self, refresh_using: Callable[[], dict[str, Any]], duration: int) -> None:
        super().__init__(refresh_using=refresh_using, method="assume-role")
        self._advisory_refresh_timeout, self._mandatory_refresh_timeout = refresh_margins(duration)


class _FixedProvider(CredentialProvider):  # type: ignore[misc]
    """Hands botocore one credentials object (refreshable or not) as the whole chain."""

    METHOD = "s3connect"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def redact_in_logs(*secrets: str | None) -> None:
    """Register secrets (session tokens, secret keys) with :mod:`redaction`, and make sure
    the loggers that could print them are filtered."""
    redaction.register(*secrets)
    redaction.install()


def _verify(settings: ConnectionSettings) -> bool | str | None:
    if not settings.verify_ssl:
        return False
    if settings.ca_bundle:
        if not os.path.isfile(settings.ca_bundle):
            raise ConnectionSettingsError(
                settings.conn_id,
                "ca_bundle",
                f"{settings.ca_bundle!r} is not a file on this worker",
                "give the path of a PEM bundle present on every worker",
            )
        return settings.ca_bundle
    return None


def client_config(settings: ConnectionSettings) -> Config:
    """botocore Config shared by the S3 and STS clients of a connection."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        # Workers of a transfer share one client; one more for a listing running beside them.
        max_pool_connections=settings.max_concurrency + 1,
        s3={"addressing_style": settings.addressing_style.value},
        # Requests are signed with SigV4 anyway; presigned URLs would otherwise use the
        # legacy query signature, which newer AWS regions and many stores refuse.
        signature_version="s3v4",
        proxies={"http": settings.proxy_url, "https": settings.proxy_url} if settings.proxy_url else None,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        tcp_keepalive=True,
        # Only botocore's "sdk" mode lets it add checksums of its own (trailers over HTTPS).
        request_checksum_calculation="when_supported" if settings.upload_checksums == "sdk" else "when_required",
        user_agent_appid=f"airflow-s3connect_{__version__}",  # type: ignore[call-arg]
    )


#: botocore's data loader, shared by every session of the process. Each new session would
#: otherwise parse the S3 model and the endpoint rules again (about 140 ms of JSON parsing
#: that holds the GIL, so it stalls a triggerer's event loop even from a worker thread).
_LOADER = botocore.loaders.create_loader()


def parse_timestamp(value: Any) -> datetime.datetime:
    """A timestamp of an S3 answer, as botocore's parser reads it but without dateutil:
    ISO 8601 in XML bodies (``2025-04-14T06:00:00.000Z``), HTTP dates in headers
    (``Mon, 14 Apr 2025 06:00:00 GMT``); anything else goes to botocore's own parser.

    Every listed object and every GET carries one; dateutil's general parser was about a
    tenth of a small download's client CPU.
    """
    if isinstance(value, str):
        try:
            if value.endswith("Z"):
                parsed = datetime.datetime.fromisoformat(value[:-1])
            elif "," in value:
                parsed = email.utils.parsedate_to_datetime(value)
            else:
                parsed = datetime.datetime.fromisoformat(value)
        except (ValueError, TypeError, IndexError):
            pass
        else:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.timezone.utc)
    return botocore.utils.parse_timestamp(value)  # type: ignore[no-any-return]


def _botocore_session() -> botocore.session.Session:
    session = botocore.session.Session()
    session.register_component("data_loader", _LOADER)
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return session


def build_session(settings: ConnectionSettings) -> boto3.session.Session:
    """A boto3 session holding the connection's credentials (assumed role included).

    Built fresh per connection: boto3's default session is shared process-wide and not
    thread-safe, and mixing connections in it would mix their credentials. Only the parsed
    service models are shared (:data:`_LOADER`).
    """
    source = _botocore_session()
    redact_in_logs(settings.aws_secret_access_key, settings.aws_session_token, settings.sse_customer_key)
    if settings.aws_access_key_id:
        source.set_credentials(
            settings.aws_access_key_id, settings.aws_secret_access_key or "", settings.aws_session_token
        )
    if settings.auth_type is not AuthType.ASSUME_ROLE:
        return boto3.session.Session(botocore_session=source, region_name=settings.region_name)

    source_credentials = source.get_credentials()
    if source_credentials is None:
        raise CredentialsNotFoundError(
            f"Connection {settings.conn_id!r} assumes {settings.role_arn} but has no source credentials: "
            "fill the AWS Access Key ID / Secret, or give the worker a default AWS credential chain."
        )
    assume_args: dict[str, Any] = {
        "RoleSessionName": settings.session_name,
        "DurationSeconds": settings.session_duration,
    }
    if settings.external_id:
        assume_args["ExternalId"] = settings.external_id
    sts_region = settings.region_name or source.get_config_variable("region") or "us-east-1"
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=functools.partial(
            source.create_client,
            region_name=sts_region,
            endpoint_url=settings.sts_endpoint_url,
            verify=_verify(settings),
            config=client_config(settings),
        ),
        source_credentials=source_credentials,
        role_arn=settings.role_arn or "",
        extra_args=assume_args,
        expiry_window_seconds=refresh_margins(settings.session_duration)[0],
    )

    def fetch() -> dict[str, Any]:
        fetched = dict(fetcher.fetch_credentials())
        redact_in_logs(fetched.get("secret_key"), fetched.get("token"))
        return fetched

    credentials = RoleCredentials(fetch, settings.session_duration)
    assumed = _botocore_session()
    assumed.register_component("credential_provider", CredentialResolver([_FixedProvider(credentials)]))
    return boto3.session.Session(botocore_session=assumed, region_name=settings.region_name)


def scope_guard(scope: Scope) -> Callable[..., None]:
    """botocore ``before-parameter-build.s3`` handler applying :func:`allowlist.check_call`.

    The clear-message check: it names the operation and the parameter, before anything is
    serialized. The boundary is :class:`_WireGuard`, which sees the request as it is sent.
    """

    def guard(params: dict[str, Any], model: Any, context: dict[str, Any] | None = None, **_: Any) -> None:
        # botocore signs a presigned POST as a CreateBucket of the target bucket:
        # the presigned POST's own check (in :func:`guard`) looked at its bucket and key.
        presigned_post = model.name == "CreateBucket" and (context or {}).get("is_presign_request")
        if presigned_post and _PRESIGNED_POST.get() == params.get("Bucket"):
            _PRESIGNED_POST.set(None)  # one use: a POST presigned inside a handler is checked again
            return
        check_call(scope, model.name, params)

    return guard


#: The bucket of the presigned POST being built on this thread, once its key was checked.
_PRESIGNED_POST: contextvars.ContextVar[str | None] = contextvars.ContextVar("s3connect_presigned_post", default=None)
#: Where a presigned POST's uploader chooses the file name.
FILENAME_FIELD = "${filename}"


class _WireGuard:
    """The client's HTTP session, wrapped: every prepared request is checked by
    :func:`wire.check_request` just before it is sent. Nothing runs after it but the send,
    so no event handler, retry or redirect can change what was checked."""

    def __init__(self, inner: Any, scope: Scope, endpoint: wire.Endpoint) -> None:
        self._inner = inner
        self._scope = scope
        self._endpoint = endpoint

    def send(self, request: Any) -> Any:
        wire.check_request(self._scope, self._endpoint, request.method, request.url, request.headers, request.body)
        return self._inner.send(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _presigned_when_signed(scope: Scope, endpoint: wire.Endpoint) -> Callable[..., None]:
    """``before-sign.s3`` handler for presigned URLs: refuses the operations whose URL
    cannot be scoped, and checks the request as it is finally signed (the signature fixes
    its method, URL and signed headers, whatever handlers changed before), by wrapping
    that request's ``prepare``, which botocore calls after signing."""

    def check(request: Any, operation_name: str = "", **_: Any) -> None:
        if not request.context.get("is_presign_request") or request.context.get("s3-presign-post-fields") is not None:
            return
        if (why := PRESIGN_REFUSED.get(operation_name)) is not None:
            raise ScopeError(
                f"A presigned {operation_name} URL is refused on a connection restricted to {scope.describe()}: "
                f"{why}. Do the {operation_name} with the connection itself."
            )
        prepare = request.prepare

        def checked() -> Any:
            prepared = prepare()
            wire.check_request(scope, endpoint, prepared.method, prepared.url, prepared.headers)
            return prepared

        request.prepare = checked

    return check


def _check_post(scope: Scope, endpoint: wire.Endpoint, post: Mapping[str, Any]) -> None:
    """A presigned POST as handed out: its URL's bucket, its key field and every key and
    bucket condition of its signed policy lie inside ``scope``."""
    located = wire.locate(post["url"], endpoint, scope)
    fields = post.get("fields", {})
    policy = json.loads(base64.b64decode(fields.get("policy", "") or b"e30=") or b"{}")
    keys = [str(fields.get("key", ""))]
    for condition in policy.get("conditions", []):
        if isinstance(condition, Mapping):
            keys += [str(v) for k, v in condition.items() if k == "key"]
            for bucket in (v for k, v in condition.items() if k == "bucket"):
                check_call(scope, "PutObject", {"Bucket": bucket, "Key": scope.prefix + "file"})
        elif isinstance(condition, list | tuple) and len(condition) == 3 and condition[1] == "$key":
            keys.append(str(condition[2]) + "file" if condition[0] == "starts-with" else str(condition[2]))
    for key in keys:
        head, found, _ = key.rpartition(FILENAME_FIELD)
        check_call(scope, "PutObject", {"Bucket": located.bucket, "Key": head + "file" if found else key})


def guard(client: Any, scope: Scope, custom_endpoint: bool) -> Any:
    """Put ``client`` (any S3 client, ours or built from :meth:`S3ConnectHook.get_session`)
    under ``scope``: the parameter check, the wire check, and presigned URLs and POSTs
    checked as the requests they sign. Returns the client."""
    if not restricted(scope):
        return client
    endpoint = wire.Endpoint.of(client.meta.endpoint_url, custom_endpoint)
    client.meta.events.register_last("before-parameter-build.s3", scope_guard(scope))
    client.meta.events.register_last("before-sign.s3", _presigned_when_signed(scope, endpoint))
    client._endpoint.http_session = _WireGuard(client._endpoint.http_session, scope, endpoint)
    presign_url = client.generate_presigned_url
    presign_post = client.generate_presigned_post

    def generate_presigned_url(
        ClientMethod: str, Params: Any = None, ExpiresIn: int = 3600, HttpMethod: str | None = None
    ) -> str:
        model = client.meta.service_model.operation_model(client.meta.method_to_api_mapping.get(ClientMethod, ""))
        own = model.http["method"]
        # A HEAD of what a GET reads reads less; any other method is another operation.
        if HttpMethod is not None and HttpMethod.upper() not in (own, "HEAD" if own == "GET" else own):
            raise ScopeError(
                f"A presigned {model.name} URL must use its own method {own}, not {HttpMethod}: "
                f"a URL signed for another method is another operation (on {scope.describe()})."
            )
        return presign_url(ClientMethod, Params=Params, ExpiresIn=ExpiresIn, HttpMethod=HttpMethod)  # type: ignore[no-any-return]

    def generate_presigned_post(Bucket: str, Key: str, *args: Any, **kwargs: Any) -> Any:
        head, found, tail = Key.rpartition(FILENAME_FIELD)
        if found and (tail or FILENAME_FIELD in head or not head.endswith("/")):
            raise ScopeError(
                f"A presigned POST key may hold {FILENAME_FIELD} only as its whole last segment "
                f"(e.g. 'uploads/{FILENAME_FIELD}'), not {Key!r}: the uploader's file name then stays one segment."
            )
        check_call(scope, "PutObject", {"Bucket": Bucket, "Key": head + "file" if found else Key})
        token = _PRESIGNED_POST.set(Bucket)
        try:
            post = presign_post(Bucket, Key, *args, **kwargs)
        finally:
            _PRESIGNED_POST.reset(token)
        _check_post(scope, endpoint, post)
        return post

    client.generate_presigned_url = generate_presigned_url
    client.generate_presigned_post = generate_presigned_post
    return client


class GuardedSession(boto3.session.Session):
    """The connection's credentials handed out as a boto3 session that keeps its scope.

    Its S3 clients (and so its S3 resources, which boto3 builds from a client) are built
    at the connection's endpoint with the connection's scope guard. On a scoped connection,
    clients of other services and another endpoint are refused: the scope speaks of S3
    requests to this store only.
    """

    def __init__(self, session: boto3.session.Session, settings: ConnectionSettings) -> None:
        super().__init__(botocore_session=session._session, region_name=session.region_name)
        self._s3connect = settings

    def _register_default_handlers(self) -> None:
        """boto3's handlers are on the shared botocore session already (registering them twice
        makes boto3 inject its transfer methods twice, which it refuses)."""

    def get_credentials(self) -> Any:
        """Refused on a scoped connection: credentials handed out would build clients
        without the guard."""
        scope = self._s3connect.scope
        if restricted(scope):
            raise ScopeError(
                f"The credentials of a connection restricted to {scope.describe()} are not handed out: "
                "use the session's S3 clients, which keep the scope."
            )
        return super().get_credentials()

    def client(self, service_name: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        settings = self._s3connect
        scope = settings.scope
        if not restricted(scope):
            return super().client(service_name, *args, **kwargs)  # type: ignore[call-overload]
        if service_name != "s3":
            raise ScopeError(
                f"A {service_name} client is refused on a connection restricted to {scope.describe()}: "
                "its scope guards S3 requests only. Use a connection without bucket and path_prefix for it."
            )
        call = inspect.signature(boto3.session.Session.client).bind(self, service_name, *args, **kwargs).arguments
        call.pop("self")
        endpoint = call.get("endpoint_url")
        if endpoint not in (None, settings.endpoint_url):
            raise ScopeError(
                f"An S3 client at {endpoint!r} is refused: the connection's endpoint is "
                f"{settings.endpoint_url or 'Amazon S3'} and its scope {scope.describe()}."
            )
        call["endpoint_url"] = settings.endpoint_url
        if call.get("verify") is None:
            call["verify"] = _verify(settings)
        given = call.get("config")
        call["config"] = client_config(settings).merge(given) if given is not None else client_config(settings)
        return configure(super().client(**call), settings)


def pin_owner(client: Any, owner: str, bucket: str | None) -> None:
    """Send ``ExpectedBucketOwner`` with every request that takes it (and
    ``ExpectedSourceBucketOwner`` with a copy from the connection's bucket), so S3 itself
    refuses a bucket of another account. Registered first: a caller's own value stays."""
    from airflow_s3connect.allowlist import copy_source_bucket

    def add(params: dict[str, Any], model: Any, **_: Any) -> None:
        members = model.input_shape.members if model.input_shape is not None else {}
        if "ExpectedBucketOwner" in members and (bucket is None or params.get("Bucket") == bucket):
            params.setdefault("ExpectedBucketOwner", owner)
        source = params.get("CopySource")
        ours = source is not None and (bucket is None or copy_source_bucket(source) == bucket)
        if "ExpectedSourceBucketOwner" in members and ours:
            params.setdefault("ExpectedSourceBucketOwner", owner)

    client.meta.events.register_first("before-parameter-build.s3", add)


def apply_write_defaults(client: Any, defaults: WriteOptions) -> None:
    """Every request the connection's write options route to (:data:`writes.ROUTES`) carries
    them, whichever code path made it: an upload, a copy, an archive, a reservation, a probe,
    a manifest, a task log. Registered first: what a caller gave for one request stays."""

    from botocore.handlers import copy_source_sse_md5, sse_md5

    def add(params: dict[str, Any], model: Any, **_: Any) -> None:
        members = model.input_shape.members if model.input_shape is not None else {}
        add_defaults(params, defaults.args(model.name), members)
        # botocore's own handlers (base64 of an SSE-C key, and its MD5) ran before this one,
        # which is registered for every S3 operation: a key added here needs them again
        # (each does nothing where the MD5 is already there).
        sse_md5(params)
        copy_source_sse_md5(params)

    client.meta.events.register_first("before-parameter-build.s3", add)


#: The request parameter that asks a write for encryption, the answer that says it was
#: applied, and the option the user set.
_ENCRYPTION_ASKED = (
    ("SSECustomerAlgorithm", "the SSE-C key (sse_customer_key)"),
    ("ServerSideEncryption", "server_side_encryption"),
)


def refuse_ignored_encryption(client: Any) -> None:
    """A write that asks for encryption must come back saying it applied that encryption. A
    store that ignores the request stores the object unencrypted, or as its bucket default
    says (OpenStack Swift's s3api answers 200 without the SSE-C key; Ceph RGW 16 takes
    ``AES256`` over HTTPS without applying it): that object (its own version, on a
    versioned bucket) or upload is removed at once and the write fails, instead of a green
    task whose data is not protected as asked. A store that refuses encryption over plain
    HTTP (RGW answers InvalidRequest without a message) is named as such."""

    def remember(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.name in CREATE and (asked := [(p, params[p], o) for p, o in _ENCRYPTION_ASKED if params.get(p)]):
            context["s3connect_encryption"] = (params.get("Bucket"), params.get("Key"), asked)

    def check(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        asked = context.get("s3connect_encryption")
        if asked is None:
            return
        bucket, key, options = asked
        where = f"{model.name} of s3://{bucket}/{key}"
        if http_response.status_code >= 300:
            plain = str(client.meta.endpoint_url).startswith("http://")
            error = parsed.get("Error", {})
            if plain and error.get("Code") == "InvalidRequest" and not error.get("Message"):
                raise S3ConnectError(
                    f"{where}: the store refuses {options[0][2]} over plain HTTP (InvalidRequest); nothing was "
                    "written. Use an https:// endpoint_url, or drop the encryption option for this store."
                )
            return
        ignored = [option for parameter, asked, option in options if parsed.get(parameter) != asked]
        if not ignored:
            return
        with contextlib.suppress(BotoCoreError, ClientError):
            if model.name == "CreateMultipartUpload":
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=parsed.get("UploadId", ""))
            else:  # this write's own version: on a versioned bucket, the one before it stays
                client.delete_object(Bucket=bucket, Key=key, **version_args(parsed.get("VersionId")))
        raise S3ConnectError(
            f"{where}: the store ignored {' and '.join(ignored)} and would have kept the object unencrypted: it "
            "was removed. Use a store that supports this encryption, or another server_side_encryption."
        )

    client.meta.events.register("before-parameter-build.s3", remember)
    client.meta.events.register("after-call.s3", check)


def configure(client: Any, settings: ConnectionSettings) -> Any:
    """What every S3 client of a connection carries: the scope guard, the owner pin, the
    write options, the checksum mode. Returns ``client``."""
    guard(client, settings.scope, custom_endpoint=bool(settings.endpoint_url))
    if settings.expected_bucket_owner:
        pin_owner(client, settings.expected_bucket_owner, settings.bucket)
    defaults = settings.write_defaults
    if defaults != WriteOptions():
        apply_write_defaults(client, defaults)
    checksums.register(client, settings.upload_checksums)
    refuse_ignored_encryption(client)
    client.s3connect_native = native.engine_for(client, settings)
    return client


def build_s3_client(settings: ConnectionSettings, session: boto3.session.Session) -> S3Client:
    """The S3 client of a connection, with its scope guard. Thread-safe once built."""
    client = session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        verify=_verify(settings),
        config=client_config(settings),
    )
    return configure(client, settings)  # type: ignore[no-any-return]


def build_sts_client(settings: ConnectionSettings, session: boto3.session.Session) -> STSClient:
    """An STS client with the connection's (possibly assumed) credentials."""
    return session.client(
        "sts",
        region_name=settings.region_name or session.region_name or "us-east-1",
        endpoint_url=settings.sts_endpoint_url,
        verify=_verify(settings),
        config=client_config(settings),
    )


def build_sqs_client(settings: ConnectionSettings, session: boto3.session.Session, queue_url: str) -> Any:
    """An SQS client with the connection's (possibly assumed, refreshing) credentials, at the
    endpoint the queue's URL names. Its read timeout outlasts a long poll."""
    from airflow_s3connect.notifications import queue_address
    from airflow_s3connect.queues import MAX_WAIT

    address = queue_address(queue_url)
    config = client_config(settings).merge(Config(read_timeout=max(settings.read_timeout, MAX_WAIT + 10)))
    return session.client(
        "sqs",
        region_name=address.region or settings.region_name or session.region_name or "us-east-1",
        endpoint_url=address.endpoint,
        verify=_verify(settings),
        config=config,
    )
