"""The hook's calls for ``@task`` functions: one call each into the engine the operators use.

Every key is relative to the connection's ``path_prefix`` and checked against its scope
before any request, as for the operators. A ``path_prefix`` with macros must be rendered
first (``hook.render_path_prefix(...)``), since a ``@task`` body has no operator to do it.
The engine modules are imported inside each call: importing the hook stays cheap for
every DAG file that only names it.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from airflow_s3connect.errors import S3ConnectError, translated
from airflow_s3connect.objects import result_entry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from airflow_s3connect.connection import ConnectionSettings
    from airflow_s3connect.objects import ObjectInfo, TransferConfig
    from airflow_s3connect.progress import Meter
    from airflow_s3connect.scope import ObjectRef

#: Longest presigned URL SigV4 allows (7 days).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: Default cap of :meth:`TaskFlowMixin.read`.
READ_LIMIT = 16 * 1024 * 1024


class TaskFlowMixin:
    """Mixed into :class:`~airflow_s3connect.hooks.s3connect.S3ConnectHook`."""

    if TYPE_CHECKING:  # provided by the hook

        @property
        def settings(self) -> ConnectionSettings: ...
        @property
        def scope_settings(self) -> ConnectionSettings: ...
        def get_conn(self) -> S3Client: ...
        def resolve(self, key: str, bucket: str | None = None) -> ObjectRef: ...

        s3connect_conn_id: str

    def transfer_config(self, **sizes: int) -> TransferConfig:
        """The connection's parallelism and attempts, with ``chunk_size`` /
        ``multipart_threshold`` when given: what every transfer of this connection uses."""
        from airflow_s3connect.objects import TransferConfig

        settings = self.settings
        return TransferConfig(max_concurrency=settings.max_concurrency, max_attempts=settings.max_attempts, **sizes)

    def meter(
        self, operation: str, *clients: Any, by: str, interval: float | None = None, open_ended: bool = False
    ) -> Meter:
        """A progress meter of one transfer on this connection's client (and ``clients``):
        a line every ``interval`` seconds (default: ``[s3connect] progress_interval``, 30 s)
        and the same figures as Airflow metrics tagged with this connection, the operation
        and ``by`` (the operator's class, or the hook call). Use it with ``with``; a transfer
        inside another's meter (a manifest written by an operator) adds to that one.
        ``open_ended``: a loop of calls, each planning its own objects (the total is not known)."""
        from airflow_s3connect._compat import conf
        from airflow_s3connect.hooks.metrics import StatsMetrics
        from airflow_s3connect.progress import DEFAULT_INTERVAL, Meter

        if interval is None:
            interval = conf.getfloat("s3connect", "progress_interval", fallback=DEFAULT_INTERVAL)
        metrics = StatsMetrics(conn_id=self.s3connect_conn_id, operation=operation, operator=by)
        meter = Meter(operation, interval=interval, metrics=metrics, open_ended=open_ended)
        return meter.attached(self.get_conn(), *clients)

    # -- reading ---------------------------------------------------------------------------
    def read(
        self, key: str, *, bucket: str | None = None, max_bytes: int = READ_LIMIT, version_id: str | None = None
    ) -> bytes:
        """The content of one object (or one version of it), in one request; refused above ``max_bytes``."""
        from airflow_s3connect.downloads import read_object

        ref = self.resolve(key, bucket)
        return read_object(self.get_conn(), ref.bucket, ref.key, max_bytes, version_id)[0]

    def open(self, key: str, *, bucket: str | None = None, version_id: str | None = None) -> IO[bytes]:
        """A streaming reader of one object (or one version of it; use it in a ``with``):
        nothing is held in memory but what you read. A body that ends early raises instead
        of looking complete."""
        ref = self.resolve(key, bucket)
        return self._body(ref.bucket, ref.key, version_id)

    def _body(self, bucket: str, key: str, version_id: str | None = None) -> IO[bytes]:
        from airflow_s3connect.objects import version_args

        with translated("GetObject", bucket, key, version_id=version_id):
            answer = self.get_conn().get_object(Bucket=bucket, Key=key, **version_args(version_id))
            return answer["Body"]  # type: ignore[return-value]

    def iter_objects(
        self,
        prefix: str = "",
        pattern: str | None = None,
        *,
        bucket: str | None = None,
        modified_since: datetime.datetime | None = None,
        modified_until: datetime.datetime | None = None,
    ) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` matching ``pattern``, streamed page by page (full keys)."""
        from airflow_s3connect.listing import Lister, ListQuery
        from airflow_s3connect.objects import ObjectInfo
        from airflow_s3connect.patterns import compile_pattern

        ref = self.scope_settings.scope.resolve_prefix(prefix, bucket)
        query = ListQuery(
            base=ref.key,
            pattern=compile_pattern(pattern) if pattern else None,
            modified_since=modified_since,
            modified_until=modified_until,
        )
        for entry in Lister(self.get_conn(), ref.bucket, query):
            if isinstance(entry, ObjectInfo):
                yield entry

    def iter_records(
        self,
        key: str | None = None,
        *,
        prefix: str | None = None,
        pattern: str | None = None,
        format: str | None = None,
        bucket: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Records of one object or of every match, streamed (csv, jsonl, parquet, .gz).

        The reading twin of Put's ``records=``: the format comes from each key's suffix
        unless ``format`` is given. CSV values are the strings the file holds.
        """
        from airflow_s3connect.formats import format_of, get_format, read_records

        if (key is None) == (prefix is None and pattern is None):
            raise S3ConnectError("Give either key=... or prefix=... / pattern=... .")
        if key is not None:
            ref = self.resolve(key, bucket)
            where: Iterable[tuple[str, str]] = [(ref.bucket, ref.key)]
        else:
            target = self.scope_settings.scope.resolve_prefix(prefix or "", bucket).bucket
            where = ((target, i.key) for i in self.iter_objects(prefix or "", pattern, bucket=bucket))
        for in_bucket, full_key in where:
            fmt = get_format(format) if format else format_of(full_key)
            with self._body(in_bucket, full_key) as body:
                yield from read_records(body, fmt)

    def download(
        self,
        local_dir: str | Path,
        key: str | None = None,
        *,
        prefix: str | None = None,
        pattern: str | None = None,
        bucket: str | None = None,
        version_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Download one object (with ``version_id``, that version of it) or every match into
        ``local_dir`` (paths kept below the prefix), in parallel ranged GETs, each file
        complete or absent. Returns Get's shape."""
        from airflow_s3connect.downloads import Downloader, DownloadTask
        from airflow_s3connect.local import LocalTree
        from airflow_s3connect.selection import Selection

        if (key is None) == (prefix is None and pattern is None):
            raise S3ConnectError("Give either key=... or prefix=... / pattern=... .")
        scope = self.scope_settings.scope
        tree = LocalTree(Path(local_dir).expanduser())
        selection = Selection.of(scope, key=key, prefix=prefix, pattern=pattern, bucket=bucket, version_id=version_id)
        target = selection.bucket
        # One key keeps its path below the connection's prefix; a listing's, below its base.
        under = scope.prefix if key is not None else selection.base
        with self.meter("Get", by="hook.download"):  # the listing too: a long one is the first minutes
            if selection.key is not None:  # no HEAD: the GET (of the version, if one is named) tells
                tasks = [DownloadTask(selection.key, tree.path_for(selection.key, under), version_id=version_id)]
            else:
                tasks = [
                    DownloadTask.of(item, tree.path_for(item if isinstance(item, str) else item.key, under))
                    for item in selection.objects(self.get_conn(), lookup=False)
                ]
            downloader = Downloader(self.get_conn(), target, self.transfer_config())
            return [result_entry(scope, target, done) for done in downloader.download(tasks)]

    # -- writing ---------------------------------------------------------------------------
    def upload(
        self,
        key: str,
        *,
        data: Any = None,
        path: str | Path | None = None,
        records: Iterable[Mapping[str, Any]] | None = None,
        format: str | None = None,
        overwrite: bool = True,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        bucket: str | None = None,
        **write_options: Any,
    ) -> dict[str, Any]:
        """Write one object from ``data`` (bytes, str, a binary stream, an iterator of
        bytes), a local file ``path``, or ``records`` in ``format`` (default: the key's
        suffix); multipart above 8 MiB, conditional with ``overwrite=False``. Returns
        Put's shape: ``{bucket, key, uri, size, etag, version_id, checksum}``. The one way
        this package writes one object (manifests, catalogs and task logs too): checksums,
        multipart, conditional writes and the scope hold for each. ``write_options``: any
        of :class:`~airflow_s3connect.writes.WriteOptions` (``acl=``, ``tags=``,
        ``server_side_encryption=``…), over the connection's."""
        from airflow_s3connect.formats import content_type_for, format_of, get_format
        from airflow_s3connect.sources import queue_data, queue_records
        from airflow_s3connect.uploads import Uploader
        from airflow_s3connect.writes import WriteOptions

        given = [name for name, value in (("data", data), ("path", path), ("records", records)) if value is not None]
        if len(given) != 1:
            raise S3ConnectError(f"Give exactly one of data=, path= or records= (got {', '.join(given) or 'none'}).")
        ref = self.resolve(key, bucket)
        options = WriteOptions(overwrite=overwrite, content_type=content_type, metadata=dict(metadata or {}))
        options = options.overridden(**write_options)
        prefix = self.scope_settings.scope.prefix
        with (
            self.meter("Put", by="hook.upload"),
            tempfile.TemporaryDirectory(prefix="s3connect-upload-") as scratch,
            Uploader(self.get_conn(), ref.bucket, self.transfer_config(), options, prefix) as uploader,
        ):
            if path is not None:
                uploader.put_file(Path(path), ref.key, content_type_for(ref.key))
            elif records is not None:
                fmt = get_format(format) if format else format_of(ref.key)
                queue_records(uploader, records, ref.key, fmt, Path(scratch))
            else:
                queue_data(uploader, data, ref.key, get_format(format) if format else None)
            (done,) = list(uploader.results())
        return result_entry(self.scope_settings.scope, done.bucket, done)

    def delete(
        self,
        keys: Iterable[str] | None = None,
        *,
        prefix: str | None = None,
        pattern: str | None = None,
        bucket: str | None = None,
        max_objects: int = 10_000,
        version_id: str | None = None,
    ) -> list[str]:
        """Delete ``keys``, or every match of ``prefix``/``pattern`` (refused, before any
        delete, above ``max_objects``), 1,000 per request; with ``version_id``, that version
        of the one key given, for good. Returns the deleted keys."""
        from airflow_s3connect.connection import is_aws_endpoint
        from airflow_s3connect.deletes import BatchDelete
        from airflow_s3connect.objects import ObjectInfo
        from airflow_s3connect.selection import Selection

        if (keys is None) == (prefix is None and pattern is None):
            raise S3ConnectError("Give either keys=[...] or prefix=... / pattern=... .")
        if version_id is not None:
            named = [keys] if isinstance(keys, str) else list(keys or [])
            if len(named) != 1:
                raise S3ConnectError("version_id names a version of one object: give keys=[that key].")
            selection = Selection.of(self.scope_settings.scope, key=named[0], bucket=bucket, version_id=version_id)
        else:
            selection = Selection.of(
                self.scope_settings.scope, keys=keys, prefix=prefix, pattern=pattern, bucket=bucket
            )
        target = selection.bucket
        delete = BatchDelete(self.get_conn(), target, if_match=is_aws_endpoint(self.settings.endpoint_url))
        with self.meter("Delete", by="hook.delete"):
            found = selection.at_most(self.get_conn(), max_objects, "delete", "deleted", lookup=False)
            deleted = [item.key if isinstance(item, ObjectInfo) else item for item in delete.run(found)]
        delete.check(len(deleted))
        return [self.scope_settings.scope.relative(k) for k in deleted]

    def copy(
        self,
        source_key: str | None = None,
        *,
        source_prefix: str | None = None,
        source_pattern: str | None = None,
        target_prefix: str = "",
        source: Any = None,
        source_bucket: str | None = None,
        bucket: str | None = None,
        overwrite: bool = True,
        skip_unchanged: bool = False,
        version_id: str | None = None,
        **write_options: Any,
    ) -> list[dict[str, Any]]:
        """Copy from ``source`` (another S3ConnectHook; default this one) into this
        connection below ``target_prefix``, keeping paths relative to ``source_prefix``.
        Server-side within one connection, streamed between two (see the Copy operator).
        Returns ``[{source_uri, uri, key, size, etag, method}]``."""

        from airflow_s3connect.copies import Copier, CopyTask
        from airflow_s3connect.objects import ObjectInfo
        from airflow_s3connect.selection import Selection
        from airflow_s3connect.writes import WriteOptions

        origin = source if source is not None else self
        if (source_key is None) == (source_prefix is None and source_pattern is None):
            raise S3ConnectError("Give either source_key=... or source_prefix=... / source_pattern=... .")
        selection = Selection.of(origin.scope_settings.scope, key=source_key, prefix=source_prefix,
                                 pattern=source_pattern, bucket=source_bucket, version_id=version_id)  # fmt: skip
        with self.meter("Copy", origin.get_conn(), by="hook.copy"):  # the listing too
            origin_bucket, base = selection.bucket, selection.base
            listed = [item for item in selection.objects(origin.get_conn()) if isinstance(item, ObjectInfo)]
            scope = self.scope_settings.scope
            target_bucket = scope.bucket_for(bucket)
            prefix = target_prefix if not target_prefix or target_prefix.endswith("/") else target_prefix + "/"
            tasks = [CopyTask(i, self.resolve(prefix + i.key[len(base) :], target_bucket).key) for i in listed]
            copier = Copier(
                origin.get_conn(), origin_bucket, self.get_conn(), target_bucket, self.transfer_config(),
                WriteOptions(overwrite=overwrite).overridden(**write_options), server_side=origin is self,
                skip_unchanged=skip_unchanged,
                prefix=scope.prefix,
            )  # fmt: skip
            return [result_entry(scope, target_bucket, done) for done in copier.run(tasks)]

    def presign(
        self,
        key: str,
        *,
        method: Literal["get", "put"] = "get",
        expires_in: int = 3600,
        bucket: str | None = None,
    ) -> str:
        """A URL anyone can GET (or PUT) ``key`` with, for ``expires_in`` seconds (at most
        7 days). The URL is signed with the connection's credentials: with ``assume_role``
        it stops working when that session ends (at most the role's session duration),
        whatever ``expires_in`` says."""
        if method not in ("get", "put"):
            raise S3ConnectError(f"method={method!r}: use 'get' or 'put'.")
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise S3ConnectError(f"expires_in={expires_in}: give 1 to {MAX_PRESIGN_SECONDS} seconds (7 days).")
        ref = self.resolve(key, bucket)
        operation = "get_object" if method == "get" else "put_object"
        with translated("GeneratePresignedUrl", ref.bucket, ref.key):
            return self.get_conn().generate_presigned_url(
                operation, Params={"Bucket": ref.bucket, "Key": ref.key}, ExpiresIn=expires_in
            )

    # -- buckets (connections without a bucket) ------------------------------------------------
    def create_bucket(self, name: str, region: str | None = None) -> None:
        """Create a bucket in ``region`` (default: the connection's). A connection scoped
        to a bucket refuses it."""
        region = region or self.settings.region_name
        params: dict[str, Any] = {"Bucket": name}
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with translated("CreateBucket", name):
            self.get_conn().create_bucket(**params)

    def bucket_region(self, name: str) -> str:
        """The region ``name`` lives in (``us-east-1`` for AWS's legacy empty answer; a
        store answers its own name for it: Ceph RGW its zonegroup, e.g. ``default``)."""
        with translated("GetBucketLocation", name):
            answer = self.get_conn().get_bucket_location(Bucket=name)
        return str(answer.get("LocationConstraint") or "us-east-1")
