"""What the Put, Get and List operators share: connection, transfer settings, XCom results,
the console link and OpenLineage datasets."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from airflow_s3connect._compat import AirflowSkipException, BaseOperator, TaskDeferred
from airflow_s3connect.cleanup import OpenResources
from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import (
    ArchivedObjectError,
    ArgumentError,
    S3ConnectError,
    SourceNotFoundError,
    translated,
)
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.links import CONSOLE_XCOM_KEY, S3ConsoleLink
from airflow_s3connect.macros import NAMESPACE, MacroValues, macro_names, render
from airflow_s3connect.manifests import (
    SUMMARY_XCOM_KEY,
    Results,
    ResultSink,
    check_results,
    entry_listing,
    entry_location,
    manifest_slice,
    read_entries,
)
from airflow_s3connect.mixins import MacroFieldsMixin
from airflow_s3connect.objects import ObjectInfo, TransferConfig
from airflow_s3connect.restores import Restore, unrestored
from airflow_s3connect.scope import ObjectRef
from airflow_s3connect.uploads import abort_uploads, release_reservations
from airflow_s3connect.writes import WriteOptions, parse_json_object, parse_tags

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from airflow_s3connect.progress import Meter


class Stoppable(Protocol):
    """A transfer :meth:`S3ConnectOperator.on_kill` can stop (Uploader, Downloader, Copier)."""

    def cancel(self, reason: str) -> None: ...


TransferT = TypeVar("TransferT", bound=Stoppable)
T = TypeVar("T")
#: The most results ``results="list"`` returns through XCom.
MAX_XCOM_OBJECTS = 10_000
#: Results per mapped task of ``results="batches"``: 1,000 batches (Airflow's default
#: ``max_map_length`` is 1,024) cover a million objects.
BATCH_SIZE = 1_000
#: Task-state key of the multipart uploads in flight (upload id → key), for a later try.
#: The task state key of what a try has open (:class:`~airflow_s3connect.cleanup.OpenResources`).
OPEN_STATE = "s3connect.open"
#: Templated in every operator: where the manifest goes.
RESULT_FIELDS: tuple[str, ...] = ("manifest_path", "manifest_key")
#: Datasets reported to OpenLineage one by one; beyond this, the prefix stands for them.
MAX_LINEAGE_DATASETS = 100


#: The write options every operator takes (its writes: objects, copies, archives, manifests).
WRITE_ARGUMENTS = (
    "server_side_encryption", "kms_key_id", "bucket_key_enabled", "kms_encryption_context", "sse_customer_key",
    "acl", "storage_class", "tags", "requester_pays", "cache_control", "content_disposition", "content_encoding",
    "content_language", "metadata",
)  # fmt: skip


class S3ConnectOperator(MacroFieldsMixin, BaseOperator):
    """Base of the s3connect operators (not used directly).

    :param s3connect_conn_id: the ``s3connect`` connection.
    :param bucket: the bucket; default: the connection's bucket.
    :param tenant: value of ``{tenant}`` (over the DAG param and the connection field).
    :param tap: value of ``{tap}``.
    :param stream_name: value of ``{stream_name}`` (default: the task id).
    :param chunk_size: bytes per multipart part and per ranged GET (at least 5 MiB; a large
        download takes larger ranges, about four per worker, at most 64 MiB).
    :param multipart_threshold: objects above this size are transferred in parts.
    :param results: the result's shape, whatever the number of results: ``"list"`` (the
        results), ``"manifest"`` (``{"manifest", "count", "bytes"}``: every result one line
        of a JSONL file) or ``"batches"`` (one ``{"manifest", "start", "count", "bytes"}``
        per ``batch_size`` results, to map Get, Copy or Delete over).
    :param max_xcom_objects: the most results ``results="list"`` returns; more fail the
        task, before anything is written where the count is known first.
    :param batch_size: results per batch of ``results="batches"``.
    :param manifest_path: local path of the manifest (default: none, the manifest goes to S3).
    :param manifest_key: S3 key of the manifest (relative to path_prefix; needs
        s3:PutObject); default ``.s3connect/manifests/<dag>/<run>/<task>.jsonl``.
    :param server_side_encryption: ``AES256``, ``aws:kms`` or ``aws:kms:dsse``; with
        ``kms_key_id``, ``bucket_key_enabled``, ``kms_encryption_context`` (a mapping).
    :param sse_customer_key: an SSE-C key for this operator's writes and reads.
    :param acl: a canned ACL, e.g. ``bucket-owner-full-control``.
    :param storage_class: e.g. ``STANDARD_IA``, ``INTELLIGENT_TIERING``, ``GLACIER_IR``.
    :param tags: object tags (a mapping, JSON object or ``k=v&k2=v2``).
    :param requester_pays: say this task pays for its requests (Requester Pays buckets).
    :param progress_interval: seconds between progress lines in the task log (and metrics);
        default ``[s3connect] progress_interval`` (30); 0 turns them off.
    :param cache_control: ``content_disposition``, ``content_encoding``,
        ``content_language``, ``metadata``: attributes of the objects written.

    Write options apply to every object the operator writes (objects, copies, archives,
    manifests) and override the connection's; what is not given here is the connection's.

    Every operator also pushes ``{"count", "bytes", "truncated", "requests"}`` as the XCom
    ``s3connect_summary``, whatever the shape.
    """

    operator_extra_links = (S3ConsoleLink(),)
    ui_color = "#e7f0e0"

    def __init__(
        self,
        *,
        s3connect_conn_id: str = DEFAULT_CONN_ID,
        bucket: str | None = None,
        tenant: str | None = None,
        tap: str | None = None,
        stream_name: str | None = None,
        chunk_size: int = TransferConfig.chunk_size,
        multipart_threshold: int = TransferConfig.multipart_threshold,
        results: Results = "list",
        max_xcom_objects: int = MAX_XCOM_OBJECTS,
        batch_size: int = BATCH_SIZE,
        manifest_path: str | None = None,
        manifest_key: str | None = None,
        server_side_encryption: str | None = None,
        kms_key_id: str | None = None,
        bucket_key_enabled: bool | None = None,
        kms_encryption_context: Mapping[str, str] | str | None = None,
        sse_customer_key: str | None = None,
        acl: str | None = None,
        storage_class: str | None = None,
        tags: Mapping[str, str] | str | None = None,
        requester_pays: bool | None = None,
        cache_control: str | None = None,
        content_disposition: str | None = None,
        content_encoding: str | None = None,
        content_language: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.progress_interval = progress_interval
        self.server_side_encryption, self.kms_key_id = server_side_encryption, kms_key_id
        self.bucket_key_enabled, self.kms_encryption_context = bucket_key_enabled, kms_encryption_context
        self.sse_customer_key, self.acl, self.storage_class = sse_customer_key, acl, storage_class
        self.tags, self.requester_pays, self.metadata = tags, requester_pays, dict(metadata or {})
        self.cache_control, self.content_disposition = cache_control, content_disposition
        self.content_encoding, self.content_language = content_encoding, content_language
        self.write_options()  # a wrong write option is refused when the DAG is parsed
        self.s3connect_conn_id = s3connect_conn_id
        self.bucket = bucket
        self.tenant, self.tap, self.stream_name = tenant, tap, stream_name
        self.chunk_size = chunk_size
        self.multipart_threshold = multipart_threshold
        self.results = check_results(results, batch_size)
        if (manifest_path or manifest_key) and results == "list":
            raise ArgumentError("manifest_path / manifest_key place a manifest: set results='manifest' or 'batches'.")
        self.max_xcom_objects = max_xcom_objects
        self.batch_size = batch_size
        self.manifest_path = manifest_path
        self.manifest_key = manifest_key
        self._lineage_inputs: list[str] = []
        self._lineage_outputs: list[str] = []
        self._manifest_upload: tuple[Path, ObjectRef] | None = None
        self._transfers: list[Stoppable] = []
        self._meter: Meter | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every ``execute`` closes the progress meter it opened, however it ends: a failed
        transfer's reporter stops and its last line says so."""
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__:
            cls.execute = _closing_meter(cls.__dict__["execute"])  # type: ignore[method-assign]

    # -- wiring -------------------------------------------------------------------------
    def _render_macros(self, context: Any) -> None:
        """Key macros, and in tag values too (``tags={"run": "{connection_run_id}"}``)."""
        super()._render_macros(context)
        tags = parse_tags(self.tags)
        if any(macro_names(value) for value in tags.values()):
            values = MacroValues(context, self.macro_overrides(), self.hook.macro_fallbacks())
            self.tags = {name: render(value, values) for name, value in tags.items()}

    @cached_property
    def hook(self) -> S3ConnectHook:
        return self.connection_hook(self.s3connect_conn_id)

    def connection_hook(self, conn_id: str) -> S3ConnectHook:
        """The hook of ``conn_id`` with this operator's request-wide options (SSE-C key,
        Requester Pays) over the connection's, for its reads as for its writes."""
        hook = S3ConnectHook(s3connect_conn_id=conn_id)
        hook.override_requests(sse_customer_key=self.sse_customer_key, requester_pays=self.requester_pays)
        return hook

    @property
    def client(self) -> S3Client:
        return self.hook.get_conn()

    def write_options(self, context: Any = None, **call: Any) -> WriteOptions:
        """The options of this operator's writes: ``call`` (overwrite, content type…) with
        the operator's write arguments over it. The connection's own are added by its
        client to every request, under these. With ``context`` and overwrite off, writes
        name their writer (:meth:`task_tag`): a retry then recognises what an earlier try
        wrote or reserved, and no other writer's reservation is ever taken for its own."""
        given = {name: getattr(self, name) for name in WRITE_ARGUMENTS}
        given["tags"] = parse_tags(given["tags"])
        given["kms_encryption_context"] = parse_json_object("kms_encryption_context", given["kms_encryption_context"])
        options = WriteOptions(**call).overridden(**given)
        if context is not None and not options.overwrite:
            options = dataclasses.replace(options, writer=self.task_tag(context))
        return options

    def manifest_options(self) -> dict[str, Any]:
        """The operator's write options for the objects it writes about its work (manifests,
        catalogs): the encryption, ACL, tags and storage the bucket asks for, not the
        attributes given for the data (content type, metadata)."""
        attributes = ("cache_control", "content_disposition", "content_encoding", "content_language", "metadata")
        options = self.write_options()
        return {name: getattr(options, name) for name in WRITE_ARGUMENTS if name not in attributes}

    def transfer_config(self) -> TransferConfig:
        return self.hook.transfer_config(chunk_size=self.chunk_size, multipart_threshold=self.multipart_threshold)

    # -- crash safety ----------------------------------------------------------------------
    @staticmethod
    def task_tag(context: Any) -> str:
        """A tag of this task instance, the same for all its tries (temporary file names, the
        writer metadata of uploads), so that a retry recognises what an earlier try left."""
        ti = context["ti"]
        identity = f"{ti.dag_id}\x1f{ti.run_id}\x1f{ti.task_id}\x1f{getattr(ti, 'map_index', -1)}"
        return uuid.uuid5(NAMESPACE, identity).hex[:16]

    @contextlib.contextmanager
    def running(self, transfer: TransferT) -> Iterator[TransferT]:
        """Make ``transfer`` stoppable by :meth:`on_kill` while the block runs (an Uploader
        is entered by its own ``with`` first)."""
        self._transfers.append(transfer)
        try:
            yield transfer
        finally:
            self._transfers.remove(transfer)

    def track_open(self, context: Any, bucket: str) -> Callable[[OpenResources], None] | None:
        """Undo what an earlier try of this task left when it was killed (its open multipart
        uploads are aborted, its key reservations released while they still are its own),
        and return the callback that records this try's open resources in Airflow's task
        state store (Airflow 3.3+; None without one, where a bucket lifecycle rule aborts
        incomplete uploads and a retry takes its reservations over, see the getting-started page of the docs)."""
        store = context.get("task_state_store")
        if store is None:
            return None
        left = store.get(OPEN_STATE) or {}
        if left:
            self.log.info("An earlier try of this task left open: %s", left)
        if uploads := left.get("uploads") or {}:
            try:
                aborted = abort_uploads(self.client, bucket, uploads)
            except S3ConnectError as exc:  # no s3:AbortMultipartUpload: the lifecycle rule's job then
                self.log.warning("Could not abort the multipart uploads an earlier try left (%s): %s", uploads, exc)
            else:
                self.log.warning("Aborted the unfinished multipart uploads an earlier try left: %s", ", ".join(aborted))
        if reservations := left.get("reservations") or {}:
            released = release_reservations(self.client, bucket, reservations, self.task_tag(context))
            self.log.warning("Released the key reservations an earlier try left: %s", ", ".join(released) or "none")
        if left:
            store.set(OPEN_STATE, {})
        return lambda open_now: store.set(OPEN_STATE, open_now)

    def on_kill(self) -> None:
        """SIGTERM, "Mark failed", a timeout: stop the transfers, which abort their multipart
        uploads and remove their temporary files before the task process ends."""
        for transfer in list(self._transfers):
            transfer.cancel("the task was killed (on_kill: stopped, marked failed or timed out)")

    # -- results --------------------------------------------------------------------------
    def open_sink(self, context: Any, *clients: Any) -> ResultSink:
        """The collector of this run's results, in the shape of ``results``; from here to
        :meth:`sink_result` the requests of this operator's client (and ``clients``) count.

        The manifest goes to S3 unless ``manifest_path`` asks for a local file: on Celery
        or Kubernetes the next task runs on another machine, where a worker's file is not.
        Without ``manifest_key`` it is :meth:`default_manifest_key` (needs s3:PutObject there).
        """

        def manifest() -> tuple[IO[str], str]:
            if self.manifest_path:
                path = Path(self.manifest_path)
                path.parent.mkdir(parents=True, exist_ok=True)
                return open(path, "w", encoding="utf-8"), str(path)
            ref = self.hook.resolve(self.manifest_key or self.default_manifest_key(context), self.bucket)
            handle = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8")  # noqa: SIM115
            self._manifest_upload = (Path(handle.name), ref)
            return handle, ref.uri

        self._manifest_upload = None
        if self._meter is not None:
            self._meter.close()
        operation = re.sub(r"^S3|(Objects?)?Operator$", "", type(self).__name__) or type(self).__name__
        self._meter = self.hook.meter(operation, *clients, by=type(self).__name__, interval=self.progress_interval)
        return ResultSink(self.results, self.max_xcom_objects, self.batch_size, manifest)

    @staticmethod
    def default_manifest_key(context: Any) -> str:
        """``.s3connect/manifests/<dag>/<run>/<task>[-<map index>].jsonl`` below path_prefix."""
        ti = context["ti"]
        run = re.sub(r"[^A-Za-z0-9_.=-]", "-", str(ti.run_id))
        index = getattr(ti, "map_index", -1)
        task = ti.task_id if index in (None, -1) else f"{ti.task_id}-{index}"
        return f".s3connect/manifests/{ti.dag_id}/{run}/{task}.jsonl"

    def sink_result(self, context: Any, sink: ResultSink, *, truncated: bool = False) -> Any:
        """Finish the manifest (written like every object we write), push the summary, and
        return the result in the shape of ``results``."""
        sink.close()
        if self._manifest_upload is not None:
            local, ref = self._manifest_upload
            try:
                assert self._meter is not None
                with self._meter.uncounted():  # its requests count in the summary; it is not a result
                    self.hook.upload(ref.uri, path=local, content_type="application/x-ndjson",
                                     **self.manifest_options())  # fmt: skip
            finally:
                os.unlink(local)
            self.log.info("%d results written to the manifest %s", sink.count, sink.location)
        assert self._meter is not None, "open_sink first"
        self._meter.close()
        summary = {"count": sink.count, "bytes": sink.bytes, "truncated": truncated, "requests": self._meter.requests}
        context["ti"].xcom_push(key=SUMMARY_XCOM_KEY, value=summary)
        return sink.result()

    # -- archived objects ---------------------------------------------------------------------
    def readable(
        self, hook: S3ConnectHook, bucket: str, objects: Iterable[T], restore: Mapping[str, Any] | None,
        poll_interval: float,
    ) -> Iterable[T]:  # fmt: skip
        """``objects`` once every archived one (GLACIER, DEEP_ARCHIVE) among them can be read.

        Without ``restore``: streamed, and the first archived object not restored fails the
        task (naming the option) before it is read. With it: read in full first; those not
        restored are asked to be, and the task defers until they are
        (:class:`~airflow_s3connect.triggers.restore.S3RestoreTrigger`), then runs again."""
        plan = Restore.of(restore)
        client = hook.get_conn()
        if plan is None:
            return (
                item
                for item in objects
                if not isinstance(item, ObjectInfo) or not unrestored(client, bucket, [item], None)
            )
        found = list(objects)
        waiting = unrestored(client, bucket, [item for item in found if isinstance(item, ObjectInfo)], plan)
        if not waiting:
            return found
        from airflow_s3connect.triggers.restore import S3RestoreTrigger

        self.log.info("Restoring %d archived objects (%s, %d days); waiting in the triggerer", len(waiting),
                      plan.tier, plan.days)  # fmt: skip
        self.defer(
            trigger=S3RestoreTrigger(
                s3connect_conn_id=hook.s3connect_conn_id,
                prefix_values=hook.prefix_values,
                bucket=bucket,
                objects=[{"key": info.key, "version_id": info.version_id} for info in waiting],
                poll_interval=poll_interval,
            ),
            method_name="resume_after_restore",
        )
        raise AssertionError("defer() raises")  # pragma: no cover

    def resume_after_restore(self, context: Any, event: dict[str, Any]) -> Any:
        """The archived objects are readable now: run the whole task again (a restored
        object stays readable for the restore's days)."""
        if event.get("status") != "success":
            raise ArchivedObjectError(f"Waiting for the restore failed: {event.get('message', event)}")
        self.log.info("Archived objects restored (polled %d times)", event.get("polls", 0))
        return self.execute(context)

    def manifest_entries(
        self, reference: str | Mapping[str, Any], hook: S3ConnectHook, bucket: str | None
    ) -> tuple[str, Iterator[ObjectInfo | str]]:
        """The objects a manifest (or one batch of it) names, read as they are consumed:
        their one bucket, and each object as its listing described it when the entry says
        (size, ETag, LastModified), else its full key. Every key is checked against the
        scope of ``hook``, which also reads the manifest: from S3 (s3:GetObject on it) or,
        for a ``manifest_path`` result, from this machine. Directory entries are left out."""
        location, start, count = manifest_slice(reference)
        entries = read_entries(_manifest_lines(location, hook), start, count)
        named, paired = itertools.tee((name, entry) for entry in entries if (name := entry_location(entry)) is not None)
        found_bucket, keys = hook.scope_settings.scope.resolve_each((name for name, _ in named), bucket)

        def found() -> Iterator[ObjectInfo | str]:
            for key, (_, entry) in zip(keys, paired, strict=True):
                listing = entry_listing(entry)
                yield key if listing is None else ObjectInfo(key, *listing)

        return found_bucket, found()

    # -- console link and lineage -----------------------------------------------------------
    def persist_console_link(self, context: Any, bucket: str, prefix: str) -> None:
        """Remember where we worked for the console link; empty off AWS (a custom endpoint).

        Always pushed: Airflow looks the link up after every task, and logs an error when
        the XCom is missing.
        """
        settings = self.hook.settings
        where = {} if settings.endpoint_url else {"bucket": bucket, "prefix": prefix, "region": settings.region_name}
        context["ti"].xcom_push(key=CONSOLE_XCOM_KEY, value=where)

    def record_lineage(self, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> None:
        """s3:// URIs this run read and wrote (reported to OpenLineage when it is installed)."""
        self._lineage_inputs = list(inputs)
        self._lineage_outputs = list(outputs)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        def datasets(uris: list[str]) -> list[Any]:
            found = []
            for uri in uris:
                bucket, _, name = uri[len("s3://") :].partition("/")
                found.append(Dataset(namespace=f"s3://{bucket}", name=name or "/"))
            return found

        return OperatorLineage(inputs=datasets(self._lineage_inputs), outputs=datasets(self._lineage_outputs))


def _closing_meter(execute: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(execute)
    def run(self: S3ConnectOperator, context: Any) -> Any:
        try:
            return execute(self, context)
        except BaseException as exc:
            if self._meter is not None:  # a deferral or a skip is not a failure of the transfer
                self._meter.close(failed=not isinstance(exc, (TaskDeferred, AirflowSkipException)))
            raise

    return run


def _manifest_lines(location: str, hook: S3ConnectHook) -> Iterator[str]:
    """A manifest's lines, streamed from S3 or from a local file."""
    if location.startswith("s3://"):
        ref = hook.resolve(location)
        with translated("GetObject", ref.bucket, ref.key):
            body = hook.get_conn().get_object(Bucket=ref.bucket, Key=ref.key)["Body"]
        return (line.decode("utf-8") for line in body.iter_lines())
    try:
        handle = open(location, encoding="utf-8")  # noqa: SIM115 - closed by the generator below
    except FileNotFoundError:
        raise SourceNotFoundError(
            f"The manifest {location} is not on this machine: write manifests to S3 (no manifest_path) "
            "when tasks run on several workers."
        ) from None

    def lines() -> Iterator[str]:
        with handle:
            yield from handle

    return lines()


def lineage_uris(uris: list[str], prefix_uri: str) -> list[str]:
    """Each URI while there are few; the common prefix when there are many."""
    return uris if len(uris) <= MAX_LINEAGE_DATASETS else [prefix_uri]
