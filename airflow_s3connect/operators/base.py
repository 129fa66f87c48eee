"""What the Put, Get and List operators share: connection, transfer settings, XCom results,
the console link and OpenLineage datasets."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator

from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.links import CONSOLE_XCOM_KEY, S3ConsoleLink
from airflow_s3connect.macros import NAMESPACE
from airflow_s3connect.operators.macro_fields import MacroFieldsMixin
from airflow_s3connect.scope import ObjectRef
from airflow_s3connect.transfer import Downloader, PutOptions, ResultSink, TransferConfig, Uploader

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

TransferT = TypeVar("TransferT", Uploader, Downloader)
#: Results kept in XCom before they go to a JSONL manifest instead.
MAX_XCOM_OBJECTS = 10_000
#: Datasets reported to OpenLineage one by one; beyond this, the prefix stands for them.
MAX_LINEAGE_DATASETS = 100


class S3ConnectOperator(MacroFieldsMixin, BaseOperator):
    """Base of the s3connect operators (not used directly).

    :param s3connect_conn_id: the ``s3connect`` connection.
    :param bucket: the bucket; default: the connection's bucket.
    :param tenant: value of ``{tenant}`` (over the DAG param and the connection field).
    :param tap: value of ``{tap}``.
    :param stream_name: value of ``{stream_name}`` (default: the task id).
    :param chunk_size: bytes per ranged GET / multipart part (at least 5 MiB).
    :param multipart_threshold: objects above this size are transferred in parts.
    :param max_xcom_objects: results returned through XCom at most; beyond, a JSONL
        manifest holds them all and XCom gets ``{"manifest", "count", "bytes"}``.
    :param manifest_path: local path of that manifest (default: none, the manifest goes to S3).
    :param manifest_key: S3 key of that manifest (relative to path_prefix; needs
        s3:PutObject); default ``.s3connect/manifests/<dag>/<run>/<task>.jsonl``.
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
        max_xcom_objects: int = MAX_XCOM_OBJECTS,
        manifest_path: str | None = None,
        manifest_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3connect_conn_id = s3connect_conn_id
        self.bucket = bucket
        self.tenant, self.tap, self.stream_name = tenant, tap, stream_name
        self.chunk_size = chunk_size
        self.multipart_threshold = multipart_threshold
        self.max_xcom_objects = max_xcom_objects
        self.manifest_path = manifest_path
        self.manifest_key = manifest_key
        self._lineage_inputs: list[str] = []
        self._lineage_outputs: list[str] = []
        self._manifest_upload: tuple[Path, ObjectRef] | None = None
        self._transfers: list[Uploader | Downloader] = []

    # -- wiring -------------------------------------------------------------------------
    @property
    def client(self) -> S3Client:
        return self.hook.get_conn()

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

    def on_kill(self) -> None:
        """SIGTERM, "Mark failed", a timeout: stop the transfers, which abort their multipart
        uploads and remove their temporary files before the task process ends."""
        for transfer in list(self._transfers):
            transfer.cancel("the task was killed (on_kill: stopped, marked failed or timed out)")

    # -- results --------------------------------------------------------------------------
    def open_sink(self, context: Any) -> ResultSink:
        """A result collector that spills to the manifest past ``max_xcom_objects``.

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
        return ResultSink(self.max_xcom_objects, manifest)

    @staticmethod
    def default_manifest_key(context: Any) -> str:
        """``.s3connect/manifests/<dag>/<run>/<task>[-<map index>].jsonl`` below path_prefix."""
        ti = context["ti"]
        run = re.sub(r"[^A-Za-z0-9_.=-]", "-", str(ti.run_id))
        index = getattr(ti, "map_index", -1)
        task = ti.task_id if index in (None, -1) else f"{ti.task_id}-{index}"
        return f".s3connect/manifests/{ti.dag_id}/{run}/{task}.jsonl"

    def sink_result(self, sink: ResultSink, **summary: Any) -> Any:
        """What goes to XCom: the items, or where the manifest is and the counts."""
        sink.close()
        if not sink.spilled:
            return sink.items
        if self._manifest_upload is not None:
            local, ref = self._manifest_upload
            try:
                # Through the uploader, like every object we write: checksums, multipart.
                scope_prefix = self.hook.scope_settings.scope.prefix
                with Uploader(self.client, ref.bucket, self.transfer_config(), PutOptions(), scope_prefix) as uploader:
                    uploader.put_file(local, ref.key, "application/x-ndjson")
                    list(uploader.results())
            finally:
                os.unlink(local)
        self.log.info("%d results written to the manifest %s", sink.count, sink.location)
        return {"manifest": sink.location, "count": sink.count, "bytes": sink.bytes, **summary}

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


def lineage_uris(uris: list[str], prefix_uri: str) -> list[str]:
    """Each URI while there are few; the common prefix when there are many."""
    return uris if len(uris) <= MAX_LINEAGE_DATASETS else [prefix_uri]


def require_one_target(key: str | None, prefix: str | None, pattern: str | None) -> None:
    """One object (``key``) or many (``prefix`` / ``pattern``): exactly one of the two."""
    if (key is None) == (prefix is None and pattern is None):
        raise ArgumentError("Give either key=... (one object) or prefix=... / pattern=... (many), not both.")


def parse_moment(value: datetime.datetime | str | None, name: str) -> datetime.datetime | None:
    """A datetime argument (templated fields arrive as ISO strings); naive means UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ArgumentError(f"{name}={value!r} is not an ISO 8601 date-time, e.g. 2025-04-14T00:00:00Z.") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value
