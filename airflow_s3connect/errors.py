"""One exception type per kind of failure, each with a message that says what to fix.

botocore's errors name HTTP codes; ours name the IAM action, the resource and the
connection field to change. Messages never carry a secret: botocore texts such as
SignatureDoesNotMatch can echo the canonical request, so they are never copied; for
other codes the store's own message is quoted (:func:`store_message`), because a bare
``NotImplemented`` or ``InvalidRequest`` does not say what to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from airflow_s3connect.redaction import holds_secret, redact


class S3ConnectError(Exception):
    """Base of every error raised by airflow-s3connect. Its message is cleaned of every
    secret the process knows (:func:`redaction.redact`), whoever built it."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class ArgumentError(S3ConnectError, ValueError):
    """An operator, sensor or hook argument is wrong; the message says what to give instead."""


class SourceNotFoundError(S3ConnectError, FileNotFoundError):
    """A local file, directory or glob given to Put matches nothing."""


class ConnectionSettingsError(S3ConnectError, ValueError):
    """A connection field is missing, malformed or contradicts another field."""

    def __init__(self, conn_id: str, field: str, problem: str, fix: str) -> None:
        self.conn_id = conn_id
        self.field = field
        super().__init__(f"Connection {conn_id!r}, field {field!r}: {problem}. Fix: {fix}.")


class ConnectionNotFoundError(S3ConnectError, LookupError):
    """No Airflow connection has the given id."""


class ScopeError(S3ConnectError, PermissionError):
    """A bucket or key lies outside the connection's bucket / path_prefix restriction."""


class InvalidKeyError(S3ConnectError, ValueError):
    """A key or bucket name S3 would refuse, or one that would escape its prefix."""


class CredentialsNotFoundError(S3ConnectError):
    """Neither the connection nor the worker's default AWS chain provided credentials."""


class AuthenticationError(S3ConnectError):
    """The store or STS rejected the credentials themselves (unknown key, wrong secret, expired)."""


class AccessDeniedError(S3ConnectError, PermissionError):
    """The credentials are valid but lack an IAM permission."""

    def __init__(self, action: str, resource: str, detail: str = "") -> None:
        self.action = action
        self.resource = resource
        hint = f" ({detail})" if detail else ""
        super().__init__(
            f"Access denied: {action} on {resource}{hint}. "
            f"Grant {action} on {resource} to the connection's identity (see `s3connect policy`)."
        )


class LocalPathError(S3ConnectError, ValueError):
    """A key would be written outside the local directory, or the local path cannot be used."""


class ObjectChangedError(S3ConnectError):
    """The object was replaced while its parts were being downloaded."""


class TransferInterrupted(S3ConnectError):
    """A response body kept breaking off after every retry."""


class MacroError(S3ConnectError, ValueError):
    """A template names an unknown macro, lacks a value, or a value is unsafe in a key."""


class TooManyResultsError(S3ConnectError):
    """``results="list"`` and more results than ``max_xcom_objects``."""


class IntegrityError(S3ConnectError):
    """The store answered for other bytes than the ones we sent."""


class PatternError(S3ConnectError, ValueError):
    """A malformed key pattern."""


class EmptyMatchError(S3ConnectError, ValueError):
    """Nothing matched and ``fail_on_empty`` is set."""


class SetupError(ValueError):
    """An argument of a setup helper is malformed; the message says what to give."""


class FormatError(S3ConnectError, ValueError):
    """Records cannot be written in the requested format."""


class WatcherError(S3ConnectError):
    """The event watcher could not list its prefix; the message is the store's answer."""


class ConditionalWriteUnsupportedError(S3ConnectError):
    """The store cannot refuse a write to an existing key, so overwrite=False cannot hold."""


class NoSuchBucketError(S3ConnectError, LookupError):
    """The bucket does not exist on this endpoint."""


class NoSuchKeyError(S3ConnectError, LookupError):
    """The object does not exist."""


class ArchivedObjectError(S3ConnectError):
    """An object in an archive storage class (GLACIER, DEEP_ARCHIVE) read before it was restored."""


#: How to get an archived object back, named wherever one is refused.
RESTORE_HINT = (
    "give restore={'days': 1, 'tier': 'Standard'} to the Get or Copy operator: it requests the restore "
    "(s3:RestoreObject) and waits for it in the triggerer"
)


class KeyExistsError(S3ConnectError, FileExistsError):
    """A conditional write (overwrite=False) found the key already taken."""


class WrongRegionError(S3ConnectError):
    """The bucket lives in another region than the connection signs for."""


class EndpointUnreachableError(S3ConnectError, ConnectionError):
    """No HTTP answer from the S3 or STS endpoint."""


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (``"NoSuchKey"``, ``"412"``…), else ``""``."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", "") or "")


#: Codes of a failed precondition (If-Match, If-None-Match, a copy source's condition).
PRECONDITION_CODES = ("PreconditionFailed", "412")

#: What a copy also needs, besides the target's s3:PutObject: a denied copy may lack either.
_COPY_SOURCE_NEEDS = "and s3:GetObject on the source object"
#: A write the identity may make can still be denied by the bucket's own policy, when the
#: request lacks a header the policy requires (encryption, its key, an ACL, a tag).
_WRITE_CONDITIONS = (
    "if the identity has it, the bucket's policy may refuse writes without a header it requires: give the "
    "connection (or the call) the server_side_encryption, kms_key_id, acl or tags it names"
)
#: IAM action checked by AWS for each API operation we call.
_ACTION_OF_OPERATION = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "RestoreObject": "s3:RestoreObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "CopyObject": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "ListBuckets": "s3:ListAllMyBuckets",
    "AssumeRole": "sts:AssumeRole",
    "GetCallerIdentity": "sts:GetCallerIdentity",
}

_AUTH_CODES = {
    "InvalidAccessKeyId": "the Access Key ID is unknown to the endpoint",
    "InvalidClientTokenId": "the Access Key ID or session token is unknown to STS",
    "SignatureDoesNotMatch": "the Secret Access Key does not match the Access Key ID",
    "ExpiredToken": "the session token has expired",
    "ExpiredTokenException": "the session token has expired",
    "InvalidToken": "the session token is malformed or not valid for this key",
    "TokenRefreshRequired": "the session token has expired",
}

#: A store's refusal of a body that does not match the digest sent with it.
_DAMAGED_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}


def resource_arn(bucket: str | None, key: str | None = None) -> str:
    """ARN IAM evaluates for an S3 request: the object, or the bucket."""
    if bucket is None:
        return "*"
    if key is None:
        return f"arn:aws:s3:::{bucket}"
    return f"arn:aws:s3:::{bucket}/{key}"


def translate(
    exc: BotoCoreError | ClientError,
    operation: str,
    bucket: str | None = None,
    key: str | None = None,
    role_arn: str | None = None,
    version_id: str | None = None,
) -> S3ConnectError:
    """Map a botocore failure of ``operation`` on ``bucket``/``key`` to our error type.

    ``exc`` is scrubbed on the way (:func:`scrub`): Python keeps it as the new error's
    ``__context__`` wherever the new one is raised from its ``except`` block.
    """
    scrub(exc)
    # Credentials are fetched lazily, so an S3 call can fail inside its AssumeRole.
    operation = getattr(exc, "operation_name", None) or operation
    action = _ACTION_OF_OPERATION.get(operation, operation)
    if version_id and action in ("s3:GetObject", "s3:DeleteObject"):
        action += "Version"  # one version of an object is its own permission
    if isinstance(exc, NoCredentialsError):
        return CredentialsNotFoundError(
            "No AWS credentials: fill the connection's AWS Access Key ID and Secret Access Key, "
            "or give the worker a default credential chain (environment, web identity, instance profile)."
        )
    if isinstance(exc, SSLError):
        url = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url", "")))
        endpoint = f"{url.scheme}://{url.netloc}" if url.netloc else "the endpoint"
        return EndpointUnreachableError(
            f"{operation}: the TLS certificate of {endpoint} could not be verified: set the connection's ca_bundle to "
            "the CA that signed it (verify_ssl off only for a test store)."
        )
    if isinstance(exc, EndpointConnectionError | HTTPClientError):
        # Reached only once botocore's retries (the connection's max_attempts) are spent.
        url = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url", "")))
        endpoint = f"{url.scheme}://{url.netloc}" if url.netloc else "the endpoint"
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            what = f"could not reach {endpoint}"
        elif isinstance(exc, ReadTimeoutError):
            what = f"got no answer from {endpoint} within the connection's read_timeout"
        else:
            what = f"lost its connection to {endpoint} before the answer ({type(exc).__name__})"
        return EndpointUnreachableError(
            f"{operation} {what}, on every attempt: check endpoint_url, proxy_url and the network."
        )
    if isinstance(exc, FlexibleChecksumError):
        return S3ConnectError(
            f"{operation} of {resource_arn(bucket, key)}: the bytes received do not match the checksum the store "
            "sent with them (a body cut short or changed on the way); nothing was kept. Run again."
        )
    if not isinstance(exc, ClientError):
        return S3ConnectError(f"{operation} failed: {type(exc).__name__}")
    error = exc.response.get("Error", {})
    code = error_code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    request_id = exc.response.get("ResponseMetadata", {}).get("RequestId", "")
    where = f" (request id {request_id})" if request_id else ""
    if code in _AUTH_CODES:
        return AuthenticationError(
            f"{operation} was refused: {_AUTH_CODES[code]}{where}. "
            "Fix the connection's AWS Access Key ID / Secret Access Key / session token."
        )
    if code in ("AccessDenied", "AccessDeniedException", "AllAccessDisabled", "403") or (status == 403 and not code):
        if operation == "AssumeRole":
            return AccessDeniedError(
                action,
                role_arn or "the role",
                "the role's trust policy must name this identity and, when set, the same sts:ExternalId",
            )
        needs = [_COPY_SOURCE_NEEDS] if operation in ("CopyObject", "UploadPartCopy") else []
        detail = "; ".join([*needs, _WRITE_CONDITIONS] if action == "s3:PutObject" else needs)
        return AccessDeniedError(action, resource_arn(bucket, key if action != "s3:ListBucket" else None), detail)
    if code == "NoSuchBucket":
        return NoSuchBucketError(
            f"Bucket {bucket!r} does not exist on this endpoint: check the bucket name and endpoint_url."
        )
    if version_id and code in ("NotImplemented", "501"):
        return S3ConnectError(
            f"{operation} of version {version_id!r} of s3://{bucket}/{key}: this store keeps no object versions. "
            "Drop version_id (the current object is read), or use a store with versioning."
        )
    if version_id and code in ("NoSuchVersion", "NoSuchKey", "404", "NotFound", "InvalidArgument", "400"):
        return NoSuchKeyError(
            f"No version {version_id!r} of s3://{bucket}/{key}: check version_id (ListObjectVersions lists them)."
        )
    if code in ("NoSuchKey", "404", "NotFound"):
        return NoSuchKeyError(f"No object s3://{bucket}/{key}: check the key and the connection's path_prefix.")
    if code in ("InvalidObjectState", "ObjectNotInActiveTierError"):
        what = (
            f"s3://{bucket}/{key}" if code == "InvalidObjectState" else f"The source of the copy to s3://{bucket}/{key}"
        )
        return ArchivedObjectError(
            f"{what} is archived (GLACIER or DEEP_ARCHIVE) and not restored: nothing was read. "
            f"To read it, {RESTORE_HINT}."
        )
    if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
        if exc.response.get("ResponseMetadata", {}).get("RetryAttempts"):
            # The first attempt's answer was lost: it may have been the write that now exists.
            return KeyExistsError(
                f"s3://{bucket}/{key} exists and overwrite is off, but this write was retried after a "
                "lost answer: the object may be this run's own first attempt. Compare it with the source "
                "before choosing another key or setting overwrite=True."
            )
        return KeyExistsError(
            f"s3://{bucket}/{key} already exists and overwrite is off: choose another key "
            "(add {uuid} or {date_time}) or set overwrite=True."
        )
    if code in _DAMAGED_CODES:
        return IntegrityError(
            f"{operation} of {resource_arn(bucket, key)} was refused by the store: the body it received does not "
            f"match the MD5 or checksum sent with it ({code}: changed on the way). Nothing was written; run again."
        )
    if code in _REGION_CODES or status == 301:
        found = error.get("Region") or exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get(
            "x-amz-bucket-region", ""
        )
        hint = f" it is in {found};" if found else ""
        return WrongRegionError(f"Bucket {bucket!r} is in another region:{hint} set the connection's region_name.")
    said = store_message(error.get("Message"))
    return S3ConnectError(f"{operation} on {resource_arn(bucket, key)} failed: {code or status}{where}{said}")


#: Words of an error text that may carry a signed request (and so a session token).
_SIGNED_TEXT = re.compile(r"canonical|stringtosign|signature|security-token|authorization", re.IGNORECASE)


def store_message(message: object) -> str:
    """The store's own explanation, for codes that do not explain themselves (NotImplemented:
    which header?). Only printable text, at most 300 characters, and never a text that may
    echo the signed request."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(message or "")).strip()
    if not text or text == "None" or _SIGNED_TEXT.search(text) or holds_secret(text):
        return ""
    return f': the store says "{text[:300]}"'


@contextmanager
def translated(
    operation: str,
    bucket: str | None = None,
    key: str | None = None,
    role_arn: str | None = None,
    *,
    version_id: str | None = None,
) -> Iterator[None]:
    """Run a block of S3/STS calls, re-raising botocore failures as our errors (without their
    text). Python keeps the botocore error as the new one's suppressed ``__context__``
    whatever we do inside ``except``; so it is scrubbed first (:func:`scrub`): code that
    walks the chain finds no signed request and no secret in it."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, operation, bucket, key, role_arn, version_id) from None


_E = TypeVar("_E", bound=BaseException)

#: Parts of an S3 error answer that echo the signed request (SignatureDoesNotMatch's).
_SIGNED_FIELDS = ("StringToSign", "StringToSignBytes", "CanonicalRequest", "CanonicalRequestBytes", "SignatureProvided")


def scrub(exc: _E) -> _E:
    """``exc`` with its text redacted and, for an S3 error, the fields echoing the signed
    request removed. Returns ``exc``."""
    error = getattr(exc, "response", {}).get("Error") if isinstance(getattr(exc, "response", None), dict) else None
    if isinstance(error, dict):
        for name in _SIGNED_FIELDS:
            error.pop(name, None)
        if isinstance(error.get("Message"), str) and (
            _SIGNED_TEXT.search(error["Message"]) or holds_secret(error["Message"])
        ):
            error["Message"] = "(removed: it may echo the signed request)"
    exc.args = tuple(_scrubbed_text(arg) if isinstance(arg, str) else arg for arg in exc.args)
    return exc


def _scrubbed_text(text: str) -> str:
    return "(removed: it may echo the signed request)" if _SIGNED_TEXT.search(text) else redact(text)
