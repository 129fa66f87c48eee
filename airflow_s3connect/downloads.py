"""Parallel atomic downloads: planning (pure) apart from doing (threads, requests, files).

No Airflow here; operators only wire these pieces. Planning (which objects, which local
paths, what is new since the last run) is pure and lives in functions and small value
types; doing (requests, threads, files) lives in :class:`Lister`, :class:`Downloader`
and :class:`Uploader`.

Why downloads are not s3transfer's (0.19): given each object's size and ETag from the
listing it sends no HEAD either, but it costs more per object. On Ceph RGW, 2,000 objects of
16 KiB (``make bench``, get_many): ours 4.6 s and 4.6 s of client CPU, s3transfer's
TransferManager 5.8 s and 5.7 s; ours is within 2% of a plain botocore client that writes
each body to its file and does nothing else. Without a listing, s3transfer sends a HEAD per
object unless response checksum validation is off; ours asks for the first chunk as a
ranged GET, whose Content-Range tells the size: one request for any object up to a chunk.
Ours also writes parts in place (``pwrite``) into a temporary file named for the task
instance (a retry removes what a killed try left), pins every part to the first ETag and
compares each answer's (a store that ignores ``If-Match`` answers the new bytes), asks
again from the byte a short body reached, and runs ``after`` (delete, archive) in the
worker. Uploads are s3transfer's: multipart, non-seekable streams and aborting failed
multipart uploads are exactly what it does well.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from airflow_s3connect import progress
from airflow_s3connect.cleanup import Cleanup
from airflow_s3connect.errors import (
    PRECONDITION_CODES,
    LocalPathError,
    ObjectChangedError,
    S3ConnectError,
    TransferInterrupted,
    error_code,
    translate,
    translated,
)
from airflow_s3connect.local import record_etag, stored_etag
from airflow_s3connect.native import Router
from airflow_s3connect.objects import Downloaded, MiB, ObjectInfo, TransferConfig, version_args

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True, slots=True)
class DownloadTask:
    """One object to fetch; size/etag/last_modified are known when it came from a listing."""

    key: str
    path: Path
    size: int | None = None
    etag: str | None = None
    last_modified: datetime.datetime | None = None
    version_id: str | None = None

    @classmethod
    def of(cls, item: ObjectInfo | str, path: Path) -> DownloadTask:
        """A listed object (its size, ETag, time and version known) or a bare key."""
        if isinstance(item, str):
            return cls(item, path)
        return cls(item.key, path, item.size, item.etag, item.last_modified, item.version_id)


def _unchanged(task: DownloadTask) -> bool:
    """Whether the local file is the object already: the ETag it was written from when
    both are known (exact, also for a same-size replacement within the same second), else
    size and LastModified (which we stamp as its mtime)."""
    if task.size is None or task.last_modified is None:
        return False
    try:
        stat = task.path.stat()
    except OSError:
        return False
    if stat.st_size != task.size:
        return False
    if task.etag and (kept := stored_etag(task.path)) is not None:
        return kept == task.etag
    return int(stat.st_mtime) == int(task.last_modified.timestamp())


FetchMode = Literal["whole", "probe", "ranges"]


def plan_fetch(size: int | None, config: TransferConfig) -> FetchMode:
    """How one object is fetched, from what is known before any request: ``"whole"`` (size
    known, at most the threshold: one plain GET), ``"ranges"`` (known and larger: parallel
    ranged GETs) or ``"probe"`` (unknown: the first chunk as a range, whose Content-Range
    tells the size; never a HEAD)."""
    if size is None:
        return "probe"
    return "whole" if size <= config.multipart_threshold else "ranges"


def range_size(size: int, config: TransferConfig) -> int:
    """Bytes per ranged GET of an object of ``size``: ``chunk_size``, or more for a large
    object, so that each worker takes about four ranges (whole MiB, at most 64 MiB).

    Every GET costs the worker about 6 ms of CPU (signing, parsing, events): a 1 GiB object
    in 32 MiB ranges takes a quarter of the requests of 8 MiB ones, and 35% less client
    CPU (``make bench``'s get_large), while four ranges a worker still keep every worker
    busy to the end. A range streams to its file as it arrives and a broken body resumes
    where it broke, with ``max_attempts`` per ``chunk_size`` bytes of it, so a larger range
    holds no more memory, loses no more work and bears as many breaks."""
    per_worker = -(-size // (config.max_concurrency * 4))
    return max(config.chunk_size, min(64 * MiB, -(-per_worker // MiB) * MiB))


def plan_ranges(size: int, chunk: int, start: int = 0) -> list[tuple[int, int]]:
    """Inclusive byte ranges of ``chunk`` bytes covering ``[start, size)``."""
    return [(first, min(first + chunk, size) - 1) for first in range(start, size, chunk)]


class _Job:
    """One object being downloaded: a temporary file and the parts still outstanding."""

    def __init__(self, task: DownloadTask, cleanup: Cleanup) -> None:
        self.task = task
        self.temp = cleanup.temp_path(task.path)
        self.fd: int | None = None
        self.size = task.size
        self.etag = task.etag
        self.last_modified = task.last_modified
        self.version_id = task.version_id
        self.outstanding = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()


class Downloader:
    """Parallel, atomic downloads: ``max_concurrency`` workers share one client.

    Memory is O(concurrency x read_size) whatever the object sizes: bodies are streamed
    to disk. Objects in flight are capped at twice the workers, so a task list of a
    million keys is consumed lazily, as the listing produces it.

    :param after: runs in the worker once a file is complete and renamed (delete, archive).
    :param owner: a stable tag of the task instance (see :func:`temp_path`).
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        config: TransferConfig,
        *,
        skip_unchanged: bool = False,
        after: Callable[[Downloaded], None] | None = None,
        owner: str | None = None,
        cleanup: Cleanup | None = None,
    ) -> None:
        self.client = client
        self.router = Router(client)
        self.bucket = bucket
        self.config = config
        self.skip_unchanged = skip_unchanged
        self.after = after
        self.cleanup = cleanup or Cleanup(owner=owner)
        self._pool: ThreadPoolExecutor | None = None
        self._results: queue.Queue[tuple[Downloaded | None, BaseException | None]] = queue.Queue()
        self._abort = threading.Event()
        self._made_dirs: set[Path] = set()

    def download(self, tasks: Iterable[DownloadTask]) -> Iterator[Downloaded]:
        """Fetch every task; yields each file once complete. On the first failure, stops
        submitting, lets work in flight end, removes its temporary files, and raises.

        State is per call: a failed call does not stop the next one; only :meth:`cancel` does.
        """
        self._results = queue.Queue()
        self._abort = threading.Event()
        if self.cleanup.reason is not None:
            self._abort.set()
        limit = 2 * self.config.max_concurrency
        in_flight = 0
        meter = progress.of(self.client)
        tasks = meter.planning(tasks, lambda task: task.size)
        error: BaseException | None = None
        with ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="s3connect-get") as pool:
            self._pool = pool
            try:
                for task in tasks:
                    while in_flight >= limit and error is None:
                        done, error = self._results.get()
                        in_flight -= 1
                        if done is not None:
                            _told(meter, done)
                            yield done
                    if error is not None:
                        break
                    in_flight += 1
                    self._submit(self._start, _Job(task, self.cleanup))
            except BaseException as exc:  # the task iterator itself failed (listing, planning)
                error = exc
            if error is None and self.cleanup.reason is not None:
                error = TransferInterrupted(f"Download cancelled: {self.cleanup.reason}. No partial file was kept.")
            if error is not None:
                self._abort.set()
            while in_flight:
                done, failure = self._results.get()
                in_flight -= 1
                if failure is not None and error is None:
                    error = failure
                    if self.cleanup.reason is not None:
                        error = TransferInterrupted(
                            f"Download cancelled: {self.cleanup.reason}. No partial file was kept."
                        )
                    self._abort.set()
                if done is not None and error is None:
                    _told(meter, done)
                    yield done
        if error is not None:
            raise error

    def cancel(self, reason: str) -> None:
        """Stop (from another thread: ``on_kill``): parts in flight end at their next chunk,
        their temporary files are removed, and :meth:`download` raises TransferInterrupted."""
        self.cleanup.cancel(reason)
        self._abort.set()

    # The pool's futures are not kept: every job reports through the results queue.
    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._pool is not None
        self._pool.submit(fn, *args)

    def _start(self, job: _Job) -> None:
        task = job.task
        try:
            if self._abort.is_set():
                raise TransferInterrupted("Download cancelled after another object failed.")
            if self.skip_unchanged and _unchanged(task):
                self._results.put(
                    (Downloaded(task.key, task.path, task.size or 0, task.etag or "", task.last_modified, True), None)
                )
                return
            try:
                if task.path.parent not in self._made_dirs:
                    task.path.parent.mkdir(parents=True, exist_ok=True)
                    self._made_dirs.add(task.path.parent)
                if self.cleanup.owner:
                    job.temp.unlink(missing_ok=True)  # an earlier try of this task instance left it
                job.fd = os.open(job.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except OSError as exc:
                raise LocalPathError(
                    f"Cannot write {str(task.path)!r} for s3://{self.bucket}/{task.key}: {exc.strerror}. "
                    "Make local_dir writable and remove files that sit where directories must go."
                ) from None
            mode = plan_fetch(task.size, self.config)
            if mode == "whole":
                self._fetch(job, 0, None)
                self._finish(job)
                return
            if mode == "probe" and not self._first_range(job):
                return  # a 304: skipped
            assert job.size is not None
            first = self.config.chunk_size if mode == "probe" else 0  # the probe fetched chunk_size bytes
            ranges = plan_ranges(job.size, range_size(job.size, self.config), start=first)
            if not ranges:
                self._finish(job)
                return
            os.ftruncate(job.fd, job.size)
            job.outstanding = len(ranges)
            for start, end in ranges:
                self._submit(self._part, job, start, end)
        except BaseException as exc:
            self._fail(job, exc)

    def _first_range(self, job: _Job) -> bool:
        """Size unknown: GET the first chunk as a range; its Content-Range gives the size."""
        task = job.task
        params: dict[str, Any] = {"Range": f"bytes=0-{self.config.chunk_size - 1}"}
        if self.skip_unchanged and task.path.exists():
            # The version the file holds when it is known (exact), else its LastModified stamp.
            if (kept := stored_etag(task.path)) is not None:
                params["IfNoneMatch"] = kept
            else:
                params["IfModifiedSince"] = datetime.datetime.fromtimestamp(
                    int(task.path.stat().st_mtime), datetime.timezone.utc
                )
        try:
            response = self._get(task, **params)
        except ClientError as exc:
            code = error_code(exc)
            if code == "304":
                self._close(job, remove=True)
                stat = task.path.stat()
                modified = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc)
                etag = stored_etag(task.path) or ""
                self._results.put((Downloaded(task.key, task.path, stat.st_size, etag, modified, True), None))
                return False
            if code != "InvalidRange":
                raise
            # An empty object has no byte 0: fetch it whole.
            job.size = 0
            self._fetch(job, 0, None)
            return True
        job.size = object_size(response)
        self._remember(job, response)
        if job.size == 0:
            response["Body"].close()  # some stores answer an empty object's range with 206 and no body
            return True
        self._drain(job, response, 0, min(self.config.chunk_size, job.size) - 1)
        return True

    def _get(self, task: DownloadTask, **params: Any) -> Any:
        key = task.key
        call = {"Bucket": self.bucket, "Key": key, **version_args(task.version_id), **params}
        try:
            return self.router.sender("GetObject", call)(**call)
        except ClientError as exc:
            code = error_code(exc)
            if code in PRECONDITION_CODES:
                raise ObjectChangedError(
                    f"s3://{self.bucket}/{key} was replaced while it was being downloaded: run again."
                ) from None
            if code in ("304", "InvalidRange"):
                raise
            raise translate(exc, "GetObject", self.bucket, key, version_id=task.version_id) from None
        except BotoCoreError as exc:
            raise translate(exc, "GetObject", self.bucket, key, version_id=task.version_id) from None

    def _remember(self, job: _Job, response: Mapping[str, Any]) -> None:
        """Pin the object's version on the first answer; every later one must be the same
        version (a store that ignores If-Match would answer the new bytes)."""
        etag = response.get("ETag")
        if job.etag and etag and etag != job.etag:
            response["Body"].close()
            raise ObjectChangedError(
                f"s3://{self.bucket}/{job.task.key} was replaced while it was being downloaded (ETag {job.etag} "
                f"became {etag}, and the store ignored If-Match): nothing was kept; run again."
            )
        job.etag = job.etag or etag
        job.last_modified = job.last_modified or response.get("LastModified")
        job.version_id = job.version_id or response.get("VersionId")

    def _fetch(self, job: _Job, start: int, end: int | None) -> None:
        """GET bytes start..end (None: to the object's end) into the job's file, resuming breaks."""
        extra: dict[str, Any] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end}"
        if job.etag:
            extra["IfMatch"] = job.etag
        response = self._get(job.task, **extra)
        self._remember(job, response)
        if end is None:
            end = start + int(response["ContentLength"]) - 1
            job.size = job.size if job.size is not None else end + 1
        self._drain(job, response, start, end)

    def _drain(self, job: _Job, response: Mapping[str, Any], start: int, end: int) -> None:
        """Write a response body at its offset; on a broken body, re-request what is missing."""
        from s3transfer.utils import S3_RETRYABLE_DOWNLOAD_ERRORS as retryable

        assert job.fd is not None
        position = start
        attempts = 1
        # max_attempts per chunk_size bytes: a range larger than a chunk (range_size) may
        # break as often as the chunks it stands for would have.
        budget = self.config.max_attempts * -(-(end - start + 1) // self.config.chunk_size)
        body = response["Body"]
        while True:
            try:
                for chunk in body.iter_chunks(self.config.read_size):
                    if self._abort.is_set() or job.error is not None:
                        body.close()
                        raise TransferInterrupted("Download cancelled after another part failed.")
                    if position + len(chunk) > end + 1:
                        body.close()
                        raise TransferInterrupted(
                            f"GetObject of s3://{self.bucket}/{job.task.key} answered more bytes than bytes "
                            f"{start}-{end} asked for (a store that ignores Range): nothing was kept."
                        )
                    os.pwrite(job.fd, chunk, position)
                    position += len(chunk)
                    progress.of(self.client).moved(len(chunk))
                if position == end + 1:
                    return
                # A body that ends early without an error: what is missing is asked for again.
            except retryable:
                if position > end:
                    return
            if attempts >= budget:
                raise TransferInterrupted(
                    f"GetObject of s3://{self.bucket}/{job.task.key} broke off {attempts} times "
                    f"(at byte {position} of bytes {start}-{end}): check the network or the store, then run again."
                ) from None
            attempts += 1
            extra: dict[str, Any] = {"Range": f"bytes={position}-{end}"}
            if job.etag:
                extra["IfMatch"] = job.etag
            again = self._get(job.task, **extra)
            self._remember(job, again)
            body = again["Body"]

    def _part(self, job: _Job, start: int, end: int) -> None:
        try:
            if job.error is None and not self._abort.is_set():
                self._fetch(job, start, end)
        except BaseException as exc:
            with job.lock:
                job.error = job.error or exc
        with job.lock:
            job.outstanding -= 1
            last = job.outstanding == 0
        if not last:
            return
        if job.error is not None:
            self._fail(job, job.error)
            return
        if self._abort.is_set():
            self._fail(job, TransferInterrupted("Download cancelled after another object failed."))
            return
        try:
            self._finish(job)
        except BaseException as exc:
            self._fail(job, exc)

    def _finish(self, job: _Job) -> None:
        """The file is complete: rename it into place, stamp LastModified, run ``after``."""
        task = job.task
        self._close(job, remove=False)
        try:
            os.replace(job.temp, task.path)
        except IsADirectoryError:
            os.unlink(job.temp)
            raise LocalPathError(
                f"{str(task.path)!r} is a directory: s3://{self.bucket}/{task.key} cannot replace it."
            ) from None
        if job.last_modified is not None:
            stamp = int(job.last_modified.timestamp())
            os.utime(task.path, (stamp, stamp))
        if job.etag:
            record_etag(task.path, job.etag)
        done = Downloaded(task.key, task.path, job.size or 0, job.etag or "", job.last_modified,
                          version_id=job.version_id)  # fmt: skip
        if self.after is not None:
            self.after(done)
        self._results.put((done, None))

    def _close(self, job: _Job, remove: bool) -> None:
        if job.fd is not None:
            os.close(job.fd)
            job.fd = None
        if remove:
            with contextlib.suppress(OSError):  # never created, or its directory is unusable
                job.temp.unlink(missing_ok=True)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        """Report a failed object; always reports, or ``download`` would wait for it forever."""
        try:
            self._close(job, remove=True)
        finally:
            if isinstance(exc, (BotoCoreError, ClientError)):
                exc = translate(exc, "GetObject", self.bucket, job.task.key, version_id=job.task.version_id)
            self._results.put((None, exc))


def _told(meter: progress.Meter, done: Downloaded) -> None:
    """An object is done: fetched, or skipped as unchanged (its bytes leave the total)."""
    if done.skipped:
        meter.skipped(done.size)
    else:
        meter.finished()


def object_size(response: Mapping[str, Any]) -> int:
    """The whole object's size from a GET: Content-Range's total for a range, else Content-Length."""
    if "ContentRange" in response:
        return int(response["ContentRange"].rpartition("/")[2])
    return int(response["ContentLength"])


def read_object(
    client: S3Client, bucket: str, key: str, max_bytes: int, version_id: str | None = None
) -> tuple[bytes, str]:
    """The content and ETag of one small object (or one version of it), in one request;
    refuses objects over ``max_bytes``."""
    version = version_args(version_id)
    with translated("GetObject", bucket, key, version_id=version_id):
        try:
            response = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}", **version)
        except ClientError as exc:
            if error_code(exc) != "InvalidRange":
                raise
            # An empty object has no byte 0 to range over; its ETag is still needed
            # (a delete or archive afterwards is conditional on it).
            return b"", client.head_object(Bucket=bucket, Key=key, **version)["ETag"]
        etag = str(response.get("ETag", ""))
        total = object_size(response)
        if total == 0:
            response["Body"].close()
            return b"", etag
        if total > max_bytes:
            response["Body"].close()
            raise S3ConnectError(
                f"s3://{bucket}/{key} is {total} bytes, over the XCom limit of {max_bytes}: download it to "
                "local_dir instead, or raise max_xcom_bytes if your XCom backend can hold it."
            )
        return bytes(response["Body"].read()), etag
