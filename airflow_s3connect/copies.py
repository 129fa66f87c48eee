"""Copying objects: server-side inside one connection, streamed between two.

No Airflow here. Two ways, chosen per run, never silently mixed:

* **server-side** (one connection reads the source and writes the target): CopyObject up
  to ``multipart_threshold``, above it a multipart upload of UploadPartCopy parts planned
  by :func:`plan_parts` (any size up to S3's 5 TiB; CopyObject alone stops at 5 GiB).
  Every request is pinned to the source's listed ETag; the copy's size (and, for a
  single-part source, its ETag) is checked before the run goes on.
* **streamed** (two connections, e.g. a partner's role and ours: no identity can do both):
  one GET per object, pinned to its ETag, fed part by part into the same
  :class:`~airflow_s3connect.uploads.Uploader` as Put (bounded memory, parallel parts,
  conditional writes, checksums). The bytes are counted, and for a single-part source
  their MD5 is compared with its ETag, *before* the last part is sent: a short or
  different body fails the upload, which is aborted, so nothing partial becomes visible.

``skip_unchanged`` compares size and ETag, and else the source ETag each copy records in
its metadata (``s3connect-source-etag``), so a copy whose ETag differs by construction (a
streamed or multipart copy) is still recognised.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_s3connect import progress
from airflow_s3connect.cleanup import Cleanup, OpenResources
from airflow_s3connect.conditional import etag_condition, refused_wrongly
from airflow_s3connect.connection import is_aws_endpoint
from airflow_s3connect.errors import (
    PRECONDITION_CODES,
    ArgumentError,
    IntegrityError,
    NoSuchKeyError,
    ObjectChangedError,
    S3ConnectError,
    error_code,
    translated,
)
from airflow_s3connect.objects import MAX_COPY_BYTES, MiB, ObjectInfo, TransferConfig, version_args
from airflow_s3connect.uploads import ChunkStream, Uploader
from airflow_s3connect.writes import WriteOptions, with_source_attributes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef

#: S3's limits on a multipart upload.
MIN_PART = 5 * MiB
MAX_PARTS = 10_000
#: Metadata every copy carries: the ETag of what it was copied from.
SOURCE_ETAG = "s3connect-source-etag"


def quoted(etag: str) -> str:
    """An ETag in the quoted form S3 lists and heads it with (stores differ in copy answers)."""
    return f'"{etag.strip(chr(34))}"' if etag else etag


def plan_parts(size: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """(part number, first byte, last byte) of a multipart copy of ``size`` bytes.

    Parts of ``chunk_size`` (at least 5 MiB), doubled until 10,000 parts are enough, and
    never above 5 GiB: S3's three limits on a multipart upload.
    """
    part = max(chunk_size, MIN_PART)
    while math.ceil(size / part) > MAX_PARTS:
        part *= 2
    if part > MAX_COPY_BYTES:
        raise S3ConnectError(f"{size} bytes cannot be copied in {MAX_PARTS} parts of at most 5 GiB.")
    return [(number, start, min(start + part, size) - 1) for number, start in enumerate(range(0, size, part), 1)]


@dataclass(frozen=True)
class CopyTask:
    """One object to copy: the source as listed, and its full target key."""

    source: ObjectInfo
    target_key: str


@dataclass(frozen=True)
class Copied:
    source_uri: str
    bucket: str
    key: str
    size: int
    etag: str
    #: "server", "stream" or "unchanged" (skipped)
    method: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_uri": self.source_uri,
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "method": self.method,
        }


class Copier:
    """Copies :class:`CopyTask` s from one bucket (and client) to another.

    :param server_side: True when ``source_client`` is ``target_client`` (one connection).
        With ``overwrite=False`` on a store other than AWS the copies stream instead:
        CopyObject's ``If-None-Match`` is honoured by AWS, and elsewhere only the
        Uploader's probe tells whether create-only writes hold.
    :param prefix: the target connection's path_prefix (for the conditional-write probe).
    :param on_open: called with what is open now (multipart uploads, key reservations)
        whenever one starts or ends, so that a later try can undo what a killed one left.
    """

    def __init__(
        self,
        source_client: S3Client,
        source_bucket: str,
        target_client: S3Client,
        target_bucket: str,
        config: TransferConfig,
        options: WriteOptions,
        *,
        server_side: bool,
        skip_unchanged: bool = False,
        prefix: str = "",
        on_open: Callable[[OpenResources], None] | None = None,
        cleanup: Cleanup | None = None,
    ) -> None:
        self.source_client = source_client
        self.source_bucket = source_bucket
        self.target_client = target_client
        self.target_bucket = target_bucket
        self.config = config
        self.options = options
        endpoint = str(target_client.meta.endpoint_url)
        self.server_side = server_side and (options.overwrite or is_aws_endpoint(endpoint))
        self.skip_unchanged = skip_unchanged
        self.prefix = prefix
        self.requests = 0
        self.cleanup = cleanup or Cleanup(on_open=on_open)
        self._lock = threading.Lock()
        self._uploader: Uploader | None = None

    def cancel(self, reason: str) -> None:
        """Stop (from another thread: ``on_kill``): streamed copies are cancelled and their
        multipart uploads aborted; a server-side copy stops before its next request."""
        self.cleanup.cancel(reason)
        if self._uploader is not None:
            self._uploader.cancel(reason)

    def _check_cancelled(self) -> None:
        self.cleanup.check("Copy")

    def _refuse_onto_source(self, tasks: Sequence[CopyTask]) -> None:
        """A copy onto its own source would replace the object with itself (and an archive then
        delete it): refused for the whole batch, before the first request."""
        same_store = self.source_client is self.target_client or (
            self.source_client.meta.endpoint_url == self.target_client.meta.endpoint_url
        )
        if not same_store or self.source_bucket != self.target_bucket:
            return
        for task in tasks:
            if task.source.key == task.target_key:
                raise ArgumentError(
                    f"s3://{self.target_bucket}/{task.target_key} would be copied onto itself: "
                    "give a target_key / target_prefix (or archive_prefix) that differs from the source."
                )

    def run(self, tasks: Sequence[CopyTask]) -> Iterator[Copied]:
        self._refuse_onto_source(tasks)
        meter = progress.of(self.target_client)
        todo: list[CopyTask] = []
        for task in tasks:
            if self.skip_unchanged and (done := self._unchanged(task)) is not None:
                meter.queued(task.source.size)
                meter.skipped(task.source.size)
                yield done
            else:
                todo.append(task)
        if self.server_side:
            with ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="s3connect-copy") as pool:
                for done in pool.map(self._server_copy, meter.planning(todo, lambda task: task.source.size)):
                    meter.finished()
                    yield done
        else:  # the uploader tells the meter what it queued, sent and finished
            yield from self._stream_copies(todo)

    # -- skip ----------------------------------------------------------------------------
    def _unchanged(self, task: CopyTask) -> Copied | None:
        source = task.source
        try:
            with translated("HeadObject", self.target_bucket, task.target_key):
                head = self.target_client.head_object(
                    Bucket=self.target_bucket, Key=task.target_key, **self.options.args("HeadObject")
                )
        except NoSuchKeyError:
            return None
        if head["ContentLength"] != source.size:
            return None
        if head["ETag"] != source.etag and head.get("Metadata", {}).get(SOURCE_ETAG) != source.etag:
            return None
        return Copied(self._source_uri(source), self.target_bucket, task.target_key, source.size, head["ETag"],
                      "unchanged")  # fmt: skip

    def _source_uri(self, source: ObjectInfo) -> str:
        version = f"?versionId={source.version_id}" if source.version_id else ""
        return f"s3://{self.source_bucket}/{source.key}{version}"

    # -- server-side -----------------------------------------------------------------------
    def _server_copy(self, task: CopyTask) -> Copied:
        self._check_cancelled()
        source, key = task.source, task.target_key
        copy_source: CopySourceTypeDef = {"Bucket": self.source_bucket, "Key": source.key}
        if source.version_id:
            copy_source["VersionId"] = source.version_id
        # A version never changes: naming it pins the source better than its ETag.
        pin = {} if source.version_id else etag_condition(self.target_client, "CopySourceIfMatch", source.etag)
        args = self.options.args("CopyObject")
        if not self.options.overwrite:
            args["IfNoneMatch"] = "*"
        with translated("CopyObject", self.target_bucket, key):
            try:
                if source.size <= min(self.config.multipart_threshold, MAX_COPY_BYTES):
                    # The source's content type and metadata travel with it (MetadataDirective
                    # COPY) unless the options replace them (then REPLACE, with theirs).
                    single = dict(args)
                    if "MetadataDirective" not in single:
                        single.pop("Metadata", None)
                    answer = self.target_client.copy_object(
                        Bucket=self.target_bucket, Key=key, CopySource=copy_source, **pin, **single,
                    )  # fmt: skip
                    # Quoted as listings quote it: Ceph RGW answers a copy's ETag bare.
                    etag = quoted(str(answer.get("CopyObjectResult", {}).get("ETag", "")))
                    self.requests += 1
                    progress.of(self.target_client).moved(source.size)
                else:
                    self._multipart_copy(task, copy_source, pin, args)
                    etag = ""
            except ClientError as exc:
                code = error_code(exc)
                if code in PRECONDITION_CODES:
                    if pin and refused_wrongly(
                        self.target_client, "CopySourceIfMatch", self.source_bucket, source.key, source.etag
                    ):
                        return self._server_copy(task)  # unpinned now: checked below instead
                    raise self._changed(source) from None
                if code == "AccessDenied":
                    self._readable(source)  # a copy needs both: name the one that is missing
                raise
            if etag != source.etag:
                # A multipart source or copy, or encryption that makes ETags differ (and a
                # store may ignore the pin): the size, and for a single-part or unpinned
                # source its unchanged ETag, show which version was copied.
                copied = self.target_client.head_object(
                    Bucket=self.target_bucket, Key=key, **self.options.args("HeadObject")
                )
                etag = str(copied["ETag"])
                same = copied["ContentLength"] == source.size
                if same and ("-" not in source.etag or not pin):
                    now = self.source_client.head_object(
                        Bucket=self.source_bucket, Key=source.key, **version_args(source.version_id)
                    )
                    same = now["ETag"] == source.etag
                    self.requests += 1
                self.requests += 1
                if not same:
                    self.target_client.delete_object(Bucket=self.target_bucket, Key=key)
                    raise self._changed(source)
        return Copied(self._source_uri(source), self.target_bucket, key, source.size, etag, "server")

    def _multipart_copy(
        self, task: CopyTask, copy_source: CopySourceTypeDef, pin: dict[str, Any], args: dict[str, Any]
    ) -> None:
        source, key = task.source, task.target_key
        head = self.source_client.head_object(
            Bucket=self.source_bucket, Key=source.key, IfMatch=source.etag, **version_args(source.version_id)
        )
        create = self.options.args("CreateMultipartUpload")
        create["Metadata"] = {**create.get("Metadata", {}), SOURCE_ETAG: source.etag}
        if not self.options.replaces_source_attributes:
            # A multipart copy is a new upload: the source's attributes are given again.
            create = with_source_attributes(create, head)
        upload_id = self.target_client.create_multipart_upload(Bucket=self.target_bucket, Key=key, **create)["UploadId"]
        self.cleanup.upload_started(upload_id, key)
        self.requests += 2
        try:

            def part(plan: tuple[int, int, int]) -> CompletedPartTypeDef:
                self._check_cancelled()
                number, first, last = plan
                answer = self.target_client.upload_part_copy(
                    Bucket=self.target_bucket, Key=key, UploadId=upload_id, PartNumber=number,
                    CopySource=copy_source, CopySourceRange=f"bytes={first}-{last}", **pin,
                )  # fmt: skip
                progress.of(self.target_client).moved(last - first + 1)
                return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

            plan = plan_parts(source.size, self.config.chunk_size)
            with ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="s3connect-part") as pool:
                parts = list(pool.map(part, plan))
            self.requests += len(plan)
            complete: dict[str, Any] = {"IfNoneMatch": "*"} if "IfNoneMatch" in args else {}
            self.target_client.complete_multipart_upload(
                Bucket=self.target_bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **complete
            )
            self.requests += 1
        except BaseException:
            with contextlib.suppress(BotoCoreError, ClientError):
                self.target_client.abort_multipart_upload(Bucket=self.target_bucket, Key=key, UploadId=upload_id)
            raise
        finally:
            self.cleanup.upload_ended(upload_id)

    def _readable(self, source: ObjectInfo) -> None:
        """Raise AccessDeniedError naming s3:GetObject if the source cannot be read."""
        with translated("HeadObject", self.source_bucket, source.key):
            self.source_client.head_object(Bucket=self.source_bucket, Key=source.key, **version_args(source.version_id))

    def _changed(self, source: ObjectInfo) -> ObjectChangedError:
        return ObjectChangedError(
            f"{self._source_uri(source)} changed while it was copied (listed with ETag {source.etag}): "
            "nothing was copied for it. Run again to copy the current version."
        )

    # -- streamed --------------------------------------------------------------------------
    def _stream_copies(self, tasks: list[CopyTask]) -> Iterator[Copied]:
        uploader = Uploader(
            self.target_client, self.target_bucket, self.config, self.options, self.prefix, cleanup=self.cleanup
        )
        with uploader:
            self._uploader = uploader
            if self.cleanup.reason is not None:
                uploader.cancel(self.cleanup.reason)
            for task in tasks:
                answered: dict[str, Any] = {}
                body = ChunkStream(self._verified_body(task.source, answered))
                attributes = None if self.options.replaces_source_attributes else (lambda a=answered: a)
                uploader.put_stream(body, task.target_key, None, {SOURCE_ETAG: task.source.etag}, attributes,
                                    size=task.source.size)  # fmt: skip
            for task, done in zip(tasks, uploader.results(), strict=True):
                yield Copied(self._source_uri(task.source), done.bucket, done.key, done.size, done.etag, "stream")
        self.requests += 2 * len(tasks)

    def _verified_body(self, source: ObjectInfo, answered: dict[str, Any]) -> Iterator[bytes]:
        """The source's bytes, pinned to its ETag; raises at the end if they are not what was
        listed. ``answered`` receives the source's attributes once its GET answered (before
        the first byte is read, so before the upload's first request is made)."""
        with translated("GetObject", self.source_bucket, source.key):
            try:
                response = self.source_client.get_object(
                    Bucket=self.source_bucket, Key=source.key, IfMatch=source.etag, **version_args(source.version_id)
                )
                body = response["Body"]
                answered.update(with_source_attributes({}, response))
            except ClientError as exc:
                if error_code(exc) in PRECONDITION_CODES:
                    raise self._changed(source) from None
                raise
        digest, count = hashlib.md5(usedforsecurity=False), 0
        with body, translated("GetObject", self.source_bucket, source.key):
            while chunk := body.read(MiB):
                digest.update(chunk)
                count += len(chunk)
                yield chunk
        single_part = "-" not in source.etag
        if count != source.size or (single_part and f'"{digest.hexdigest()}"' != source.etag):
            raise IntegrityError(
                f"{self._source_uri(source)} gave {count} bytes (MD5 {digest.hexdigest()}) where the listing said "
                f"{source.size} bytes, ETag {source.etag}: the copy was not completed."
            )
