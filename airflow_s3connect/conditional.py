"""Whether a store honours conditional writes (``If-None-Match: *``), probed once per endpoint.

No Airflow. ``overwrite=False`` is only a guarantee if the store refuses the write when the
key exists. AWS does, on PutObject and on CompleteMultipartUpload. Other stores differ:
some ignore the header (the write silently replaces the object), some honour it on
PutObject but not on CompleteMultipartUpload (Ceph RGW 16), some answer 501 or 400 to any
conditional write. The probe writes a key of its own under the connection's prefix, tries
to overwrite it conditionally both ways, and deletes it:

* PutObject honoured, Complete honoured: conditional writes as on AWS;
* PutObject honoured, Complete not: a multipart upload first reserves its key with a
  conditional empty PutObject (see :class:`~airflow_s3connect.uploads.Uploader`);
* PutObject not honoured: ``overwrite=False`` is refused before anything is written.

Results are cached per (endpoint, bucket) for the life of the process.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from airflow_s3connect.connection import is_aws_endpoint
from airflow_s3connect.errors import PRECONDITION_CODES, ConditionalWriteUnsupportedError, error_code, translate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
T = TypeVar("T")

HONOURED, IGNORED, REJECTED = "honoured", "ignored", "rejected"
_PRECONDITION = ("PreconditionFailed", "412", "ConditionalRequestConflict")


@dataclass(frozen=True)
class ConditionalSupport:
    """How a store answers ``If-None-Match: *`` on an existing key, per operation."""

    put: str
    complete: str

    def require(self, endpoint: str) -> None:
        """Refuse ``overwrite=False`` where the store cannot keep it, before any write."""
        if self.put != HONOURED:
            what = "ignores" if self.put == IGNORED else "refuses"
            raise ConditionalWriteUnsupportedError(
                f"The store at {endpoint} {what} conditional writes (If-None-Match on PutObject), so overwrite=False "
                "cannot be guaranteed; nothing was written. Use overwrite=True with a key no other run writes "
                "(add {uuid} or {connection_run_id}), or a store that supports conditional writes."
            )


#: AWS documents both conditional writes; no probe there.
AWS_SUPPORT = ConditionalSupport(HONOURED, HONOURED)
_cache: dict[tuple[str, str], ConditionalSupport] = {}
_lock = threading.Lock()


def conditional_support(client: S3Client, bucket: str, prefix: str) -> ConditionalSupport:
    """The store's support, probed under ``prefix`` the first time this process asks."""
    endpoint = str(client.meta.endpoint_url)
    if is_aws_endpoint(endpoint):
        return AWS_SUPPORT
    with _lock:
        if (endpoint, bucket) not in _cache:
            _cache[(endpoint, bucket)] = _probe(client, bucket, f"{prefix}.s3connect-probe-{uuid.uuid4().hex}")
        return _cache[(endpoint, bucket)]


def _outcome(call: Any) -> str:
    try:
        call()
    except ClientError as exc:
        code = error_code(exc)
        if code in _PRECONDITION and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
            return HONOURED
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise
        return REJECTED
    return IGNORED


def _probe(client: S3Client, bucket: str, key: str) -> ConditionalSupport:
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"")
        put = _outcome(lambda: client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*"))
        complete = _probe_complete(client, bucket, key)
    except ClientError as exc:
        raise translate(exc, "PutObject", bucket, key) from None
    finally:
        _quietly(lambda: client.delete_object(Bucket=bucket, Key=key))
    log.info("Conditional writes at %s: PutObject %s, CompleteMultipartUpload %s.", client.meta.endpoint_url, put,
             complete)  # fmt: skip
    return ConditionalSupport(put, complete)


def _probe_complete(client: S3Client, bucket: str, key: str) -> str:
    """How CompleteMultipartUpload answers ``If-None-Match: *`` on the probe's existing key.

    Where the multipart upload itself is denied (Ceph RGW evaluates a bucket policy's write
    conditions on UploadPart, whose request carries none of the headers), the answer is
    unknown and taken as "rejected": multipart uploads then reserve their key with a
    conditional PutObject first, which is right whatever the store does, and single-part
    writes, which the policy allows, keep their guarantee."""
    upload, complete = "", REJECTED
    try:
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        part = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x")
        complete = _outcome(
            lambda: client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
                IfNoneMatch="*",
            )
        )
    except ClientError as exc:
        if error_code(exc) not in ("AccessDenied", "403"):
            raise
        log.info("The store at %s denies the probe's multipart upload: multipart uploads reserve their key first.",
                 client.meta.endpoint_url)  # fmt: skip
    finally:
        if upload and complete != IGNORED:  # an ignored condition completed the upload: nothing open
            _quietly(lambda: client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload))
    return complete


def _quietly(call: Any) -> None:
    """Best-effort cleanup of the probe (the connection may lack DeleteObject or AbortMultipartUpload)."""
    try:
        call()
    except ClientError as exc:
        log.warning("Could not clean up the conditional-write probe: %s", error_code(exc))


# -- conditions pinned to an ETag ------------------------------------------------------------
#: (endpoint, parameter, multipart ETag) where the store answered 412 to an ETag condition on
#: an object that had not changed: OpenStack Swift's s3api, for every ``-N`` ETag, on
#: ``x-amz-copy-source-if-match`` and on DELETE's ``If-Match``.
_refused: set[tuple[str, str, bool]] = set()

#: What each pinned condition is called in the warning.
_CONDITIONS = {"CopySourceIfMatch": "x-amz-copy-source-if-match on copies",
               "IfMatch": "If-Match on deletes"}  # fmt: skip


def etag_condition(client: S3Client, parameter: str, etag: str) -> dict[str, Any]:
    """``{parameter: etag}`` (``CopySourceIfMatch`` or ``IfMatch``) pinning a request to the
    listed version, unless this store is known to refuse it wrongly for this kind of ETag
    (single-part or multipart)."""
    if not etag or (str(client.meta.endpoint_url), parameter, "-" in etag) in _refused:
        return {}
    return {parameter: etag}


def refused_wrongly(client: S3Client, parameter: str, bucket: str, key: str, etag: str) -> bool:
    """After a request pinned to ``etag`` failed its precondition: whether the object still
    is that version, i.e. the store mishandled the condition rather than the object changing.

    A plain HEAD decides (its ETag compared here, not by the store). If the store was wrong,
    it is remembered for this process, and the caller repeats the request unpinned: its
    version is then proven by the checks around it (a copy's size and the source's ETag read
    again; a delete's HEAD just made), as for a store that ignores the condition.
    """
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in (*PRECONDITION_CODES, "404", "NoSuchKey"):
            return False
        raise translate(exc, "HeadObject", bucket, key) from None
    if head.get("ETag") != etag:
        return False
    case = (str(client.meta.endpoint_url), parameter, "-" in etag)
    if case not in _refused:
        _refused.add(case)
        log.warning("The store at %s refuses %s for unchanged objects with %s ETags: those are checked with a HEAD "
                    "instead.", case[0], _CONDITIONS[parameter], "multipart" if case[2] else "single-part")  # fmt: skip
    return True


def pinned(call: Callable[..., T], client: S3Client, parameter: str, bucket: str, key: str, etag: str) -> T:
    """``call(**condition)`` pinned to ``etag``; where the store refused the condition for an
    unchanged object, ``call()`` again without it (the caller's checks prove the version)."""
    pin = etag_condition(client, parameter, etag)
    try:
        return call(**pin)
    except ClientError as exc:
        if not (
            pin and error_code(exc) in PRECONDITION_CODES and refused_wrongly(client, parameter, bucket, key, etag)
        ):
            raise
        return call()
