"""Uploads through s3transfer: multipart, non-seekable streams and aborting failed
multipart uploads are what it does well; conditional writes, reservations, responses
and open-upload tracking are added on the client's event system.
"""

from __future__ import annotations

import datetime
import functools
import io
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError as FutureCancelledError
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_s3connect import progress
from airflow_s3connect.cleanup import Cleanup, OpenResources
from airflow_s3connect.conditional import AWS_SUPPORT, HONOURED, conditional_support
from airflow_s3connect.deletes import delete_object
from airflow_s3connect.errors import (
    PRECONDITION_CODES,
    ArgumentError,
    KeyExistsError,
    S3ConnectError,
    TransferInterrupted,
    error_code,
    translate,
    translated,
)
from airflow_s3connect.native import Router
from airflow_s3connect.objects import MiB, TransferConfig, Uploaded
from airflow_s3connect.writes import (
    RESERVATION_BODY,
    RESERVATION_METADATA,
    WRITER_METADATA,
    WriteOptions,
    with_source_attributes,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from s3transfer.futures import TransferFuture

# s3transfer is imported where a transfer starts, not here: this module is imported by
# every DAG file that uses an operator, and s3transfer (with multiprocessing's managers
# and botocore's HTTP stack) would double what parsing such a file costs.


class ChunkStream(io.RawIOBase):
    """A read-only, non-seekable file over an iterator of byte chunks (counts what it read).

    s3transfer uploads non-seekable streams part by part, so an iterator of any length
    is sent holding only the parts in flight.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = b""
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return 0
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise ArgumentError(f"data yielded a {type(chunk).__name__}; an iterator must yield bytes.")
            self._pending = bytes(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self.bytes_read += size
        return size


_RESPONSE_OPERATIONS = ("PutObject", "CompleteMultipartUpload")


class Uploader:
    """Uploads through one s3transfer TransferManager sharing the connection's client.

    s3transfer does not accept ``IfNoneMatch`` nor return responses, so handlers on the
    client's event system, limited to this uploader's keys, add the condition to
    PutObject / CompleteMultipartUpload and keep their ETag, version id and checksum.

    With ``overwrite=False`` the store's support for conditional writes is probed first
    (:mod:`airflow_s3connect.conditional`, under ``prefix``): a store that cannot refuse an
    overwrite is refused before anything is written, and where only PutObject honours the
    condition, each multipart upload first reserves its key with a conditional empty
    PutObject, removed again if the upload fails.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        config: TransferConfig,
        options: WriteOptions,
        prefix: str = "",
        on_open: Callable[[OpenResources], None] | None = None,
        cleanup: Cleanup | None = None,
    ) -> None:
        """:param on_open: called with what is open now (multipart uploads, key reservations)
        whenever one starts or ends, so that a later try can undo what a killed one left."""
        self.client = client
        self.bucket = bucket
        self.options = options
        # Reservations name their writer, so that only its own are ever released: a task's
        # tag (the same for its retries) or, given none, this upload's.
        self._reserver = options.writer or f"upload-{uuid.uuid4().hex[:16]}"
        self.prefix = prefix
        self.cleanup = cleanup or Cleanup(on_open=on_open)
        from s3transfer.manager import TransferConfig as S3TransferConfig
        from s3transfer.manager import TransferManager

        self._manager = TransferManager(
            client,
            S3TransferConfig(
                multipart_threshold=config.multipart_threshold,
                multipart_chunksize=config.chunk_size,
                max_request_concurrency=config.max_concurrency,
                max_in_memory_upload_chunks=config.max_concurrency,
            ),
        )
        self._router = Router(client)
        self._args_of_type: dict[str | None, dict[str, Any]] = {}
        self._native: ThreadPoolExecutor | None = None
        self._threshold = config.multipart_threshold
        self._concurrency = config.max_concurrency
        self._keys: set[str] = set()
        self._responses: dict[str, Mapping[str, Any]] = {}
        self._lock = threading.Lock()
        self._pending: list[tuple[str, TransferFuture | Future[None], Callable[[], int]]] = []
        self._id = f"s3connect-upload-{uuid.uuid4().hex}"
        self._support = AWS_SUPPORT
        self._attributes: dict[str, Callable[[], Mapping[str, Any]]] = {}
        self._retried_creates: dict[str, str] = {}
        # Uploads initiated since (a minute of clock skew allowed) may be this one's orphans.
        self._started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)

    def _handlers(self) -> list[tuple[str, Callable[..., None]]]:
        handlers: list[tuple[str, Callable[..., None]]] = []
        for operation in _RESPONSE_OPERATIONS:
            handlers.append((f"before-parameter-build.s3.{operation}", self._before))
            handlers.append((f"after-call.s3.{operation}", self._after))
        handlers.append(("before-parameter-build.s3.CreateMultipartUpload", self._reserve))
        for operation in ("PutObject", "CreateMultipartUpload"):
            handlers.append((f"before-parameter-build.s3.{operation}", self._add_attributes))
        for operation in ("CreateMultipartUpload", "CompleteMultipartUpload", "AbortMultipartUpload"):
            handlers.append((f"after-call.s3.{operation}", self._track))
        for operation in ("CompleteMultipartUpload", "AbortMultipartUpload"):
            handlers.append((f"before-parameter-build.s3.{operation}", self._upload_of))
        return handlers

    @staticmethod
    def _upload_of(params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["s3connect_upload_id"] = params.get("UploadId")

    def _track(self, parsed: Mapping[str, Any], model: Any, params: Mapping[str, Any] | None = None,
               context: Mapping[str, Any] | None = None, **_: Any) -> None:  # fmt: skip
        """Keep the open multipart uploads of this uploader's keys, and report them."""
        upload = parsed.get("UploadId") if model.name == "CreateMultipartUpload" else None
        if upload and parsed.get("Key") in self._keys:
            self.cleanup.upload_started(str(upload), str(parsed["Key"]))
            if parsed.get("ResponseMetadata", {}).get("RetryAttempts"):
                # An earlier attempt may have created an upload whose answer was lost.
                with self._lock:
                    self._retried_creates[str(upload)] = str(parsed["Key"])
        elif model.name != "CreateMultipartUpload" and "Error" not in parsed:
            self.cleanup.upload_ended(str((context or {}).get("s3connect_upload_id")))

    def cancel(self, reason: str) -> None:
        """Stop every upload (from another thread: ``on_kill``); s3transfer aborts their
        multipart uploads, and :meth:`results` raises :class:`TransferInterrupted`."""
        self.cleanup.cancel(reason)
        for _key, future, _size in list(self._pending):
            future.cancel()

    def __enter__(self) -> Uploader:
        if not self.options.overwrite:
            self._support = conditional_support(self.client, self.bucket, self.prefix)
            self._support.require(str(self.client.meta.endpoint_url))
        for index, (event, handler) in enumerate(self._handlers()):
            self.client.meta.events.register(event, handler, unique_id=f"{self._id}-{index}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._native is not None:
            self._native.shutdown(wait=True, cancel_futures=exc is not None)
        try:
            # TransferManager.shutdown(cancel=True) passes its arguments in the wrong order
            # (s3transfer 0.19: TypeError "'str' object is not callable", hiding the real
            # error, and worker threads left running). The context-manager exit cancels the
            # transfers in flight correctly, with the failure as the reason.
            self._manager.__exit__(exc_type, exc, tb)
        finally:
            for index, (event, _handler) in enumerate(self._handlers()):
                self.client.meta.events.unregister(event, unique_id=f"{self._id}-{index}")
            if exc is not None:
                self._release_reservations()
                self._abort_open_uploads()
            self._abort_orphans()

    def _before(self, params: dict[str, Any], context: dict[str, Any], model: Any, **_: Any) -> None:
        key = params.get("Key")
        if params.get("Bucket") == self.bucket and key in self._keys:
            context["s3connect_key"] = key
            conditional = model.name == "PutObject" or self._support.complete == HONOURED
            if not self.options.overwrite and conditional:
                params["IfNoneMatch"] = "*"

    def _after(self, parsed: Mapping[str, Any], context: Mapping[str, Any], model: Any, **_: Any) -> None:
        key = context.get("s3connect_key")
        if key is not None and "Error" not in parsed:
            with self._lock:
                self._responses[key] = parsed
            if model.name == "CompleteMultipartUpload":
                self.cleanup.reservation_ended(key)

    def _add_attributes(self, params: dict[str, Any], **_: Any) -> None:
        attributes = self._attributes.get(str(params.get("Key"))) if params.get("Bucket") == self.bucket else None
        if attributes is not None:
            params.update(with_source_attributes(params, attributes()))

    def _reserve(self, params: dict[str, Any], **_: Any) -> None:
        """Claim a multipart upload's key with a conditional empty PutObject, where the
        store ignores or refuses the condition on CompleteMultipartUpload.

        The reservation carries the writer's tag: a retry of the same task instance (after a
        killed try left it) recognises it as its own and takes it over instead of failing
        "already exists"."""
        key = str(params.get("Key"))
        if self.options.overwrite or self._support.complete == HONOURED or key not in self._keys:
            return
        reservation = self.options.args("PutObject")
        reservation["Metadata"] = {
            **reservation.get("Metadata", {}),
            RESERVATION_METADATA: "upload in progress",
            WRITER_METADATA: self._reserver,
        }
        reservation.pop("ChecksumAlgorithm", None)
        with translated("PutObject", self.bucket, key):
            try:
                answer = self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=RESERVATION_BODY, IfNoneMatch="*", **reservation
                )
            except ClientError as exc:
                if error_code(exc) not in PRECONDITION_CODES or (etag := self._own_reservation(key)) is None:
                    raise
                log.info("s3://%s/%s holds this task's reservation from an earlier try: taken over.", self.bucket, key)
            else:
                etag = str(answer.get("ETag", ""))
        self.cleanup.reservation_made(key, etag)

    def _own_reservation(self, key: str) -> str | None:
        return own_reservation(self.client, self.bucket, key, self._reserver)

    def _abort_open_uploads(self) -> None:
        """Abort what is still open after a failure: s3transfer aborts the uploads it knows
        failed, but one whose CreateMultipartUpload answered after the cancellation escapes it."""
        left = self.cleanup.take_uploads()
        try:
            aborted = abort_uploads(self.client, self.bucket, left)
        except S3ConnectError as error:
            log.warning("Could not abort unfinished multipart uploads: %s", error)
            return
        if aborted:
            log.info("Aborted the unfinished multipart uploads of %s", ", ".join(aborted))

    def _abort_orphans(self) -> None:
        """Abort the uploads a retried CreateMultipartUpload left behind: the first attempt
        created one whose answer never arrived, which nothing else would ever complete or
        abort. Found by listing the key's uploads (s3:ListBucketMultipartUploads), and
        told from ours by their id; best effort."""
        with self._lock:
            retried, self._retried_creates = dict(self._retried_creates), {}
        for ours, key in retried.items():
            try:
                with translated("ListMultipartUploads", self.bucket, key):
                    listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
                orphans = {
                    str(u["UploadId"]): key
                    for u in listed.get("Uploads", [])
                    if u.get("Key") == key
                    and u.get("UploadId") != ours
                    and u.get("Initiated", self._started) >= self._started
                }
                aborted = abort_uploads(self.client, self.bucket, orphans)
            except S3ConnectError as error:
                log.warning(
                    "Could not look for uploads a retried request left at s3://%s/%s: %s", self.bucket, key, error
                )
                continue
            if aborted:
                log.info("Aborted %d multipart uploads a retried request left at s3://%s/%s", len(aborted), self.bucket,
                         key)  # fmt: skip

    def _release_reservations(self) -> None:
        """Remove the reservations of uploads that did not complete (best effort)."""
        release_reservations(self.client, self.bucket, self.cleanup.take_reservations(), self._reserver)

    def _args(self, content_type: str | None, metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
        """An upload's arguments, as PutObject's (s3transfer routes them to the multipart
        requests itself): the options, this object's content type and metadata, and a CRC32
        checksum unless another algorithm was chosen. A copy each time: the same for every
        file of one content type, so built once per type (a tree of small files)."""
        if metadata is None:
            if (known := self._args_of_type.get(content_type)) is None:
                known = self._args_of_type[content_type] = self._build_args(content_type, None)
            return {name: dict(value) if isinstance(value, dict) else value for name, value in known.items()}
        return self._build_args(content_type, metadata)

    def _build_args(self, content_type: str | None, metadata: Mapping[str, str] | None) -> dict[str, Any]:
        options = self.options.overridden(
            content_type=self.options.content_type or content_type,
            metadata={**self.options.metadata, **(metadata or {})},
        )
        args = options.args("PutObject")
        args.setdefault("ChecksumAlgorithm", "CRC32")
        return args

    def _progress(self) -> list[Any]:
        """s3transfer's byte counts, told to the meter of this uploader's client."""
        return [_moved_subscriber()(progress.of(self.client))]

    def _claim(self, key: str) -> None:
        with self._lock:
            if key in self._keys:
                raise S3ConnectError(f"Two sources would be written to the same key {key!r}: make keys unique.")
            self._keys.add(key)

    def put_file(self, path: Path, key: str, content_type: str | None = None) -> None:
        """Queue a local file (multipart above the threshold). A single-part one goes
        through the native engine where it can send that PutObject exactly."""
        self._claim(key)
        size = path.stat().st_size
        progress.of(self.client).queued(size)
        args = self._args(content_type)
        if size <= self._threshold and self._router.engine is not None:
            params = {"Bucket": self.bucket, "Key": key, **args}
            if not self.options.overwrite:
                params["IfNoneMatch"] = "*"
            if self.options.checksum_algorithm is None:  # our default CRC32: the ETag check answers it
                params.pop("ChecksumAlgorithm", None)
            if (send := self._router.native("PutObject", params)) is not None:
                if self._native is None:
                    self._native = ThreadPoolExecutor(self._concurrency, thread_name_prefix="s3connect-put")
                native: Future[None] = self._native.submit(self._put_native, send, path, params)
                self._pending.append((key, native, lambda: size))
                return
        future = self._manager.upload(str(path), self.bucket, key, extra_args=args, subscribers=self._progress())
        self._pending.append((key, future, lambda: size))

    def _put_native(self, send: Callable[..., Mapping[str, Any]], path: Path, params: dict[str, Any]) -> None:
        if self.cleanup.reason is not None:
            raise TransferInterrupted(f"Upload of s3://{self.bucket}/{params['Key']} cancelled: {self.cleanup.reason}.")
        body = path.read_bytes()
        answer = send(Body=body, **params)
        progress.of(self.client).moved(len(body))
        with self._lock:
            self._responses[str(params["Key"])] = answer

    def put_stream(
        self,
        stream: IO[bytes] | ChunkStream,
        key: str,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        attributes: Callable[[], Mapping[str, Any]] | None = None,
        size: int | None = None,
    ) -> None:
        """Queue a readable binary stream, read part by part (so it may be endless-looking).

        :param attributes: parameters known only once the stream was first read (a copied
            object's content type and metadata, from its GET's answer), added to the
            upload's PutObject or CreateMultipartUpload, which s3transfer sends after that.
        :param size: the stream's length, when known (progress lines show the total).
        """
        self._claim(key)
        progress.of(self.client).queued(size)
        if attributes is not None:
            self._attributes[key] = attributes
        if not isinstance(stream, ChunkStream):
            stream = ChunkStream(iter(functools.partial(stream.read, MiB), b""))
        counted = stream
        # Buffered: read(n) then returns n bytes unless the stream ends. A raw stream may
        # return less, and s3transfer takes a short first read for the whole object: one
        # PutObject holding everything in memory instead of a multipart upload.
        future = self._manager.upload(
            io.BufferedReader(stream), self.bucket, key, extra_args=self._args(content_type, metadata),
            subscribers=self._progress(),
        )  # fmt: skip
        self._pending.append((key, future, lambda: counted.bytes_read))

    def results(self) -> Iterator[Uploaded]:
        """Wait for the queued uploads in order; the first failure is raised (translated)."""
        from s3transfer.exceptions import CancelledError as S3TransferCancelledError

        meter = progress.of(self.client)
        meter.planned()
        for key, future, size in self._pending:
            try:
                future.result()
            except (BotoCoreError, ClientError) as exc:
                error = translate(exc, "PutObject", self.bucket, key)
                own = self._own_earlier_write(key, error) if isinstance(error, KeyExistsError) else None
                if own is None:
                    raise error from None
                meter.finished()
                yield own
                continue
            except (S3TransferCancelledError, FutureCancelledError):
                reason = self.cleanup.reason or "the transfer was stopped"
                raise TransferInterrupted(
                    f"Upload of s3://{self.bucket}/{key} cancelled: {reason}. "
                    "Its multipart upload, if any, was aborted."
                ) from None
            response = self._responses.get(key, {})
            if not response.get("ETag"):
                # Ceph RGW 16 answers CompleteMultipartUpload with an empty ETag.
                with translated("HeadObject", self.bucket, key):
                    # (with this upload's SSE-C key, if it has its own: the store needs it to answer)
                    head = self.client.head_object(Bucket=self.bucket, Key=key, **self.options.args("HeadObject"))
                    response = {**response, "ETag": head["ETag"]}
            checksum = next(
                (str(v) for k, v in response.items() if k.startswith("Checksum") and k != "ChecksumType"), None
            )
            meter.finished()
            yield Uploaded(
                self.bucket,
                key,
                size(),
                str(response.get("ETag", "")),
                response.get("VersionId"),
                checksum,
            )
        self._pending.clear()

    def _own_earlier_write(self, key: str, error: KeyExistsError) -> Uploaded | None:
        """The object at ``key``, if an earlier try of this same task instance completed it
        (its writer metadata is ours); None if another writer's, or if that cannot be told."""
        if not self.options.writer:
            return None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, **self.options.args("HeadObject"))
        except (BotoCoreError, ClientError):
            return None  # no s3:GetObject: the KeyExistsError stands, with its own advice
        metadata = head.get("Metadata", {})
        if metadata.get(WRITER_METADATA) != self.options.writer or RESERVATION_METADATA in metadata:
            raise KeyExistsError(
                f"s3://{self.bucket}/{key} already exists and overwrite is off; it was written by "
                f"{'another task' if WRITER_METADATA in metadata else 'something other than airflow-s3connect'}, "
                "not by an earlier try of this one: choose another key (add {uuid} or {connection_run_id}) or set "
                "overwrite=True."
            ) from None
        log.info("s3://%s/%s was completed by an earlier try of this task: kept as this try's result.", self.bucket,
                 key)  # fmt: skip
        return Uploaded(self.bucket, key, int(head["ContentLength"]), str(head.get("ETag", "")),
                        head.get("VersionId"), None)  # fmt: skip


@functools.cache
def _moved_subscriber() -> type:
    """s3transfer's subscriber telling a meter the bytes each upload sends (and takes back
    when it rewinds a retried part); s3transfer is imported where a transfer starts."""
    from s3transfer.subscribers import BaseSubscriber

    class Moved(BaseSubscriber):
        def __init__(self, meter: progress.Meter) -> None:
            self.meter = meter

        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            self.meter.moved(bytes_transferred)

    return Moved


def own_reservation(client: S3Client, bucket: str, key: str, writer: str | None) -> str | None:
    """The ETag of the reservation at ``key`` if ``writer`` made it (this try, or an earlier
    try of the same task instance), else None. Every reservation has the same bytes, so
    only the writer tag tells whose it is."""
    if not writer:
        return None
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError):
        return None
    metadata = head.get("Metadata", {})
    ours = metadata.get(WRITER_METADATA) == writer and RESERVATION_METADATA in metadata
    if ours and int(head.get("ContentLength", -1)) == len(RESERVATION_BODY):
        return str(head.get("ETag", ""))
    return None


def release_reservations(client: S3Client, bucket: str, reserved: Mapping[str, str], writer: str | None) -> list[str]:
    """Delete the reservations ``reserved`` (key → ETag), each only while it still is
    ``writer``'s: another writer may have stored an object there since, and a store may
    ignore ``If-Match`` on DELETE (Ceph RGW does), so the key is read first and deleted
    conditionally too. Best effort; returns the keys released."""
    released = []
    for key, etag in sorted(reserved.items()):
        try:
            if own_reservation(client, bucket, key, writer) != etag:
                log.warning("s3://%s/%s no longer holds this task's reservation: left as it is.", bucket, key)
                continue
            delete_object(client, bucket, key, etag)  # If-Match, and a HEAD where it is ignored
            released.append(key)
        except (BotoCoreError, ClientError, S3ConnectError):
            log.warning("Could not remove the empty reservation s3://%s/%s of a failed upload", bucket, key)
    return released


def abort_uploads(client: S3Client, bucket: str, uploads: Mapping[str, str]) -> list[str]:
    """Abort multipart uploads an earlier, killed try left open (upload id → key); returns
    the keys whose upload was aborted. An upload already gone is not an error."""
    aborted = []
    for upload, key in uploads.items():
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
            aborted.append(key)
        except ClientError as exc:
            code = error_code(exc)
            if code not in ("NoSuchUpload", "404"):
                raise translate(exc, "AbortMultipartUpload", bucket, key) from None
    return aborted
