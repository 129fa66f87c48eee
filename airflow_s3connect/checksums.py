"""Upload checksums that every S3-compatible store accepts, and a check that it stored our bytes.

No Airflow. boto3 ≥ 1.36 sends flexible checksums over HTTPS as an ``aws-chunked`` body
with a trailer. AWS verifies it; stores that do not speak that framing refuse the upload
(411 MissingContentLength, 501 NotImplemented) or, worse, store the framing as the object.
Over HTTP botocore sends a header instead, so a test store on HTTP never shows it.

The connection's ``checksum_mode`` chooses
(:attr:`~airflow_s3connect.connection.ConnectionSettings.upload_checksums`):

* ``sdk``: botocore's own behaviour (the default on AWS, which verifies the trailer);
* ``header``: we compute the checksum and the MD5 of each PutObject / UploadPart body
  and send them as headers (``x-amz-checksum-crc32``, ``Content-MD5``), plain bodies with
  a Content-Length that any store reads. Stores that know the checksum header verify it,
  every store verifies Content-MD5, and where the answer's ETag is an MD5 (single-part
  objects and parts without SSE-KMS/SSE-C) we compare it with ours: a store that kept
  other bytes fails the write with :class:`IntegrityError` instead of a green task.
  Under SSE-KMS or SSE-C the ETag is no MD5: the checksum the store answers is compared
  instead, and a store that answers none has the object read back (each part of a
  multipart upload by ``PartNumber`` once it completes) and its MD5 compared; never
  skipped silently. The default for any custom endpoint;
* ``off``: no checksum at all (only for a store that refuses even the headers).

A body carrying our Content-MD5 is sent as ``UNSIGNED-PAYLOAD``, over HTTP too: the MD5 is
a signed header, so it binds the body to the signature as the SHA-256 botocore would add
over HTTP does, and that SHA-256 would cost another pass over every byte (0.7 s of CPU per
GiB beside the MD5's 1.6 s, ``make bench``'s put_large). Over HTTPS botocore already
leaves such a body unsigned.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any

from airflow_s3connect.errors import ArgumentError, IntegrityError, S3ConnectError

log = logging.getLogger(__name__)

ALGORITHMS = ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME")
#: Algorithms only the AWS CRT (``botocore[crt]``) computes.
CRT_ALGORITHMS = ("CRC32C", "CRC64NVME")
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')
_CHUNK = 1024 * 1024


def check_algorithm(algorithm: str) -> str:
    """``algorithm`` upper-cased if usable here, else a message saying what to install or pick."""
    name = algorithm.upper()
    if name not in ALGORITHMS:
        raise ArgumentError(f"checksum_algorithm={algorithm!r}: use one of {', '.join(ALGORITHMS)}.")
    if name in CRT_ALGORITHMS and not _has_crt():
        raise ArgumentError(
            f"checksum_algorithm={name} needs the AWS CRT on every worker: pip install 'botocore[crt]', "
            "or use CRC32, SHA1 or SHA256."
        )
    return name


def _has_crt() -> bool:
    # Imported here, not at module level: operators validate their algorithm while a DAG
    # file is parsed, and botocore's HTTP stack is not worth loading for that.
    from botocore.compat import HAS_CRT

    return bool(HAS_CRT)


def _hasher(algorithm: str) -> Any:
    from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum

    classes: dict[str, Callable[[], Any]] = {"CRC32": Crc32Checksum, "SHA1": Sha1Checksum, "SHA256": Sha256Checksum}
    if _has_crt():
        from botocore.httpchecksum import CrtCrc32cChecksum, CrtCrc64NvmeChecksum

        classes.update(CRC32C=CrtCrc32cChecksum, CRC64NVME=CrtCrc64NvmeChecksum)
    return classes[check_algorithm(algorithm)]()


def _digest_body(body: Any, algorithm: str) -> tuple[str, str, str, int]:
    """(checksum as base64, MD5 as base64, MD5 as hex, size) of a body, left where it was."""
    checksum, md5 = _hasher(algorithm), hashlib.md5(usedforsecurity=False)
    size = 0
    if isinstance(body, bytes | bytearray | memoryview):
        checksum.update(bytes(body))
        md5.update(body)
        size = len(body)
    elif isinstance(body, str):
        checksum.update(body.encode())
        md5.update(body.encode())
        size = len(body.encode())
    else:
        seekable = getattr(body, "seekable", None)  # s3transfer's part chunks have seek/tell only
        if not (hasattr(body, "seek") and hasattr(body, "tell")) or (callable(seekable) and not seekable()):
            raise S3ConnectError(
                "checksum_mode 'header' needs a seekable body (bytes or a file) to compute its checksum before "
                "sending it: pass one, or set the connection's checksum_mode to 'off'."
            )
        start = body.tell()
        while chunk := body.read(_CHUNK):
            checksum.update(chunk)
            md5.update(chunk)
            size += len(chunk)
        body.seek(start)
    digest = md5.digest()
    return checksum.b64digest(), base64.b64encode(digest).decode(), digest.hex(), size


#: Request parameters a read-back repeats: the object's SSE-C key (the store needs it to read).
_SSE_C_PARAMS = ("SSECustomerAlgorithm", "SSECustomerKey", "SSECustomerKeyMD5", "RequestPayer", "ExpectedBucketOwner")


def _encrypted(parsed: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Whether the answer's ETag is no MD5: SSE-KMS (asked or the bucket's default) or SSE-C."""
    return str(parsed.get("ServerSideEncryption", "")).startswith("aws:kms") or bool(
        parsed.get("SSECustomerAlgorithm") or sent.get("SSECustomerAlgorithm")
    )


def read_back_md5(client: Any, where: dict[str, Any], span: tuple[int, int] | None = None) -> str:
    """The MD5 of what the store holds (bytes ``span`` = (first, size) of it), read back in
    1 MiB reads: the check of last resort under encryption, when the store answers no checksum."""
    extra = {"Range": f"bytes={span[0]}-{span[0] + span[1] - 1}"} if span else {}
    body = client.get_object(**where, **extra)["Body"]
    md5 = hashlib.md5(usedforsecurity=False)
    with body:
        while chunk := body.read(_CHUNK):
            md5.update(chunk)
    return md5.hexdigest()


def register(client: Any, mode: str) -> None:
    """Install the handlers of ``mode`` (``header`` or ``off``) on an S3 client."""
    if mode not in ("header", "off"):
        return
    from botocore.config import Config  # here: DAG files import this module, and parsing them stays light

    events = client.meta.events
    s3: Any = client.meta.config.s3 or {}
    unsigned_s3: Any = {**s3, "payload_signing_enabled": False}
    unsigned = client.meta.config.merge(Config(s3=unsigned_s3))
    #: Encrypted multipart uploads without a checksum answer: upload id → {part: MD5}, read back at completion.
    unverified: dict[str, dict[int, tuple[str | None, int]]] = {}

    def before_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        algorithm = params.pop("ChecksumAlgorithm", None) or "CRC32"
        if mode == "off" or any(name.startswith("Checksum") for name in params) or "Body" not in params:
            return
        checksum, md5_b64, md5_hex, size = _digest_body(params["Body"], algorithm)
        context["s3connect_size"] = size
        params[f"Checksum{algorithm.upper()}"] = checksum
        params["ContentMD5"] = md5_b64
        context["s3connect_checksum"] = (f"Checksum{algorithm.upper()}", checksum)
        context["s3connect_md5"] = md5_hex
        context["s3connect_where"] = {
            "Bucket": params.get("Bucket"), "Key": params.get("Key"), "UploadId": params.get("UploadId"),
            "PartNumber": params.get("PartNumber"), **{n: params[n] for n in _SSE_C_PARAMS if n in params},
        }  # fmt: skip

    def no_algorithm(params: dict[str, Any], **_: Any) -> None:
        # The store would then expect a composite checksum of the parts at completion.
        params.pop("ChecksumAlgorithm", None)

    def plain_parts(params: dict[str, Any], **_: Any) -> None:
        for part in (params.get("MultipartUpload") or {}).get("Parts") or ():
            for name in [n for n in part if n.startswith("Checksum")]:
                del part[name]

    def after_body(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        sent = context.get("s3connect_md5")
        if sent is None or "Error" in parsed or http_response.status_code >= 300:
            return
        where = dict(context["s3connect_where"])
        if _encrypted(parsed, where):
            name, value = context["s3connect_checksum"]
            upload, part = where.pop("UploadId"), where.pop("PartNumber")
            if parsed.get(name) is not None:
                if parsed[name] != value:
                    raise IntegrityError(
                        f"{model.name}: the store answered {name} {parsed[name]} for a body whose checksum is "
                        f"{value}: it stored other bytes than were sent. Nothing is reported written."
                    )
                sent = None  # vouched for; its size still places the parts after it
            if upload:  # a part cannot be read before its upload completes
                unverified.setdefault(upload, {})[part] = (sent, context["s3connect_size"])
            elif sent is None:
                return
            else:
                version = {"VersionId": parsed["VersionId"]} if parsed.get("VersionId") else {}
                _compare(model.name, read_back_md5(client, {**where, **version}), sent)
            parsed.setdefault(name, value)
            return
        found = _MD5_ETAG.match(str(parsed.get("ETag", "")))
        if not found or found.group(1) == sent:
            # Stores that ignore the checksum header answer none: report the one sent, whose
            # bytes the MD5 comparison (or the store's Content-MD5 check) just vouched for.
            name, value = context["s3connect_checksum"]
            parsed.setdefault(name, value)
            return
        removed = ""
        if not where["UploadId"]:  # a part is dropped with its upload; an object must go itself
            bucket, key = str(where["Bucket"]), str(where["Key"])
            removed = remove_damaged(client, bucket, key, parsed.get("VersionId"), str(parsed.get("ETag", "")))
        raise IntegrityError(
            f"{model.name}: the store answered ETag {found.group(1)} for a body whose MD5 is {sent}: "
            f"it stored other bytes than were sent{removed}. Nothing is reported written; check the store and "
            "the connection's checksum_mode."
        )

    def before_complete(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["s3connect_where"] = {n: params[n] for n in ("Bucket", "Key", *_SSE_C_PARAMS) if n in params}
        context["s3connect_upload"] = params.get("UploadId")

    def after_complete(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        parts = unverified.pop(context.get("s3connect_upload") or "", None)
        if not parts or "Error" in parsed or http_response.status_code >= 300:
            return
        where = dict(context["s3connect_where"])
        if parsed.get("VersionId"):
            where["VersionId"] = parsed["VersionId"]
        first = 0
        for number, (md5, size) in sorted(parts.items()):  # the parts in the object's order: their ranges
            if size and md5 is not None:
                _compare(f"UploadPart {number}", read_back_md5(client, where, (first, size)), md5)
            first += size

    def forget(params: dict[str, Any], **_: Any) -> None:
        unverified.pop(params.get("UploadId") or "", None)  # an aborted upload has nothing to read back

    def md5_signed(request: Any, **_: Any) -> None:
        # Only a body whose MD5 we computed (and compare with the ETag), and unless payload
        # signing was asked for; botocore reads it from the request's client config alone.
        if request.context.get("s3connect_md5") and "Content-MD5" in request.headers:
            request.context["client_config"] = unsigned

    def delete_md5(params: dict[str, Any], **_: Any) -> None:
        # Some stores (OpenStack Swift) require Content-MD5 on DeleteObjects, whose body
        # botocore serializes only now; S3 accepts it beside its own checksum.
        body, headers = params.get("body"), params.setdefault("headers", {})
        if mode == "header" and isinstance(body, bytes | bytearray) and "Content-MD5" not in headers:
            headers["Content-MD5"] = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()

    events.register("before-call.s3.DeleteObjects", delete_md5)
    for operation in ("PutObject", "UploadPart"):
        events.register(f"before-parameter-build.s3.{operation}", before_body)
        events.register(f"after-call.s3.{operation}", after_body)
        if s3.get("payload_signing_enabled") is None:
            events.register(f"before-sign.s3.{operation}", md5_signed)
    events.register("before-parameter-build.s3.CreateMultipartUpload", no_algorithm)
    events.register("before-parameter-build.s3.CompleteMultipartUpload", plain_parts)
    events.register("before-parameter-build.s3.CompleteMultipartUpload", before_complete)
    events.register("after-call.s3.CompleteMultipartUpload", after_complete)
    events.register("before-parameter-build.s3.AbortMultipartUpload", forget)


def remove_damaged(client: Any, bucket: str, key: str, version: str | None, etag: str) -> str:
    """Remove an object a store answered for with other bytes than were sent, so that no
    reader takes it for the write: its own version on a versioned bucket, else the key only
    while it still holds that write's ``etag`` (an object another writer stored since is
    kept). Best effort; returns what the error should say of it."""
    from airflow_s3connect.deletes import delete_object  # (deletes → progress → native → here)

    try:
        if version:
            client.delete_object(Bucket=bucket, Key=key, VersionId=version)
        else:
            delete_object(client, bucket, key, etag)
    except Exception:  # the IntegrityError about to be raised is the failure that matters
        log.warning("Could not remove the damaged object s3://%s/%s", bucket, key)
        return f"; it was not removed (the delete was refused, or the key holds another write since): check s3://{bucket}/{key}"
    return " and the object was removed"


def _compare(what: str, stored: str, sent: str) -> None:
    if stored != sent:
        raise IntegrityError(
            f"{what}: the store holds bytes whose MD5 is {stored}, read back, for a body whose MD5 is {sent}: "
            "it stored other bytes than were sent. Nothing is reported written; check the store."
        )
