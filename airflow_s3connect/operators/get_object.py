"""S3GetObjectOperator: one key or every match under a prefix, to local files, atomically."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from airflow_s3connect.cleanup import Cleanup
from airflow_s3connect.deletes import archive_object, delete_object
from airflow_s3connect.downloads import Downloader, DownloadTask, read_object
from airflow_s3connect.errors import ArgumentError, EmptyMatchError, LocalPathError
from airflow_s3connect.local import LocalTree
from airflow_s3connect.mixins import CONNECTION_FIELDS, require_one_target
from airflow_s3connect.objects import Downloaded, ObjectInfo, result_entry
from airflow_s3connect.operators.base import RESULT_FIELDS, S3ConnectOperator, lineage_uris
from airflow_s3connect.restores import Restore
from airflow_s3connect.scope import Scope
from airflow_s3connect.selection import Selection, head
from airflow_s3connect.watermark import DEFAULT_LOOKBACK, Watermark
from airflow_s3connect.writes import WriteOptions

#: XCom key of the watermark state of ``incremental="watermark"``.
WATERMARK_XCOM_KEY = "s3connect_watermark"
#: Default size cap of ``read_into_xcom``.
MAX_XCOM_BYTES = 1024 * 1024

Incremental = Literal["interval", "watermark"] | None
After = Literal["keep", "delete", "archive"]


class S3GetObjectOperator(S3ConnectOperator):
    """Download one object, or every object under a prefix matching a pattern, to ``local_dir``.

    Files are written to a temporary file beside the target and renamed when complete:
    a failure leaves no partial file. ``max_concurrency`` (from the connection) workers
    share one client; a small object costs one GET (no HEAD), a large one is fetched in
    parallel byte ranges, and memory stays O(concurrency x 256 KiB) whatever the size.

    :param key: one object (relative to path_prefix, macros allowed; ``s3://`` for a full
        location). Lands as ``local_dir/<key relative to path_prefix>``: ``20250114/a.csv`` and
        ``20250115/a.csv`` stay two files. Needs s3:GetObject only.
    :param prefix: download every object under this prefix (structure relative to it kept).
        Needs s3:ListBucket + s3:GetObject.
    :param pattern: only keys (relative to ``prefix``) matching this glob / date-mask pattern.
    :param manifest: download what a manifest names: an upstream ``results="manifest"``
        result, one batch of ``results="batches"`` (``.expand(manifest=list_task.output)``),
        or the manifest's location. Files land as for ``key``. Needs s3:GetObject (also on
        the manifest).
    :param local_dir: where files go (created if missing).
    :param incremental: ``None`` (everything), ``"interval"`` (LastModified within the
        run's data interval, widened by ``lookback``: idempotent and backfill-safe) or
        ``"watermark"`` (what the last successful run of this task had not seen; its state
        is that run's XCom ``s3connect_watermark``).
    :param lookback: how far before the interval start ``"interval"`` also looks, and how
        far back ``"watermark"`` keeps what it has seen (default 15 minutes): a multipart
        object's LastModified is its upload's start, so an object can become visible after
        newer ones; the watermark fetches it once if its upload took less than this.
        timedelta or seconds.
    :param skip_unchanged: do not refetch a file that holds the object's current version:
        the ETag each download records (an extended attribute) must match, or where none is
        recorded, size and LastModified (stamped as mtime); for one key, a conditional GET.
    :param after: ``"keep"``, ``"delete"`` or ``"archive"`` (move under ``archive_prefix``),
        each only once the local file is complete. Needs s3:DeleteObject (archive also
        s3:PutObject on the archive prefix).
    :param archive_prefix: where ``after="archive"`` moves objects (relative to path_prefix),
        keeping their path relative to ``prefix``.
    :param read_into_xcom: return the content of ``key`` (text) instead of writing a file.
    :param max_xcom_bytes: size limit of ``read_into_xcom`` (default 1 MiB).
    :param encoding: text encoding for ``read_into_xcom``.
    :param fail_on_empty: fail when nothing matched (default: succeed with an empty list).
    :param on_invalid_key: with ``prefix``, what to do with a listed key that cannot be a local
        path (backslashes, ``.``/``..`` or empty segments): ``"fail"`` (default, before any
        download) or ``"skip"`` it with a warning and fetch the rest.
    :param version_id: with ``key``: that version of it (s3:GetObjectVersion), not the current one.
    :param restore: ``{"days": N, "tier": "Bulk" | "Standard" | "Expedited"}``: objects in
        GLACIER or DEEP_ARCHIVE are restored first (s3:RestoreObject) while the task waits in
        the triggerer, polling every ``restore_poll_interval`` seconds. Without it such an
        object fails the task before it is read, with an error naming this option.

    Returns (``results="list"``) ``[{key, uri, local_path, size, etag, last_modified,
    skipped}]`` with keys relative to path_prefix (``read_into_xcom``: the text); a listing
    of more than ``max_xcom_objects`` is refused before the first download, see ``results``
    in :class:`S3ConnectOperator`.
    """

    template_fields: Sequence[str] = (
        "key",
        "version_id",
        "prefix",
        "pattern",
        "local_dir",
        "archive_prefix",
        "manifest",
        *RESULT_FIELDS,
        *CONNECTION_FIELDS,
    )
    macro_fields = ("key", "prefix", "archive_prefix", "manifest_key")
    pattern_fields = ("pattern",)

    def __init__(
        self,
        *,
        key: str | None = None,
        prefix: str | None = None,
        pattern: str | None = None,
        local_dir: str | None = None,
        incremental: Incremental = None,
        lookback: datetime.timedelta | int = 0,
        skip_unchanged: bool = False,
        after: After = "keep",
        archive_prefix: str | None = None,
        read_into_xcom: bool = False,
        max_xcom_bytes: int = MAX_XCOM_BYTES,
        encoding: str = "utf-8",
        fail_on_empty: bool = False,
        on_invalid_key: Literal["fail", "skip"] = "fail",
        manifest: str | Mapping[str, Any] | None = None,
        version_id: str | None = None,
        restore: Mapping[str, Any] | None = None,
        restore_poll_interval: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        require_one_target(key, prefix, pattern, manifest)
        if version_id is not None and key is None:
            raise ArgumentError("version_id names a version of one object: give it with key=... .")
        if version_id is not None and after != "keep":
            raise ArgumentError(f"after={after!r} acts on the current object, not on version_id: use after='keep'.")
        Restore.of(restore)  # a wrong restore= is refused when the DAG is parsed
        self.version_id, self.restore, self.restore_poll_interval = version_id, restore, restore_poll_interval
        if incremental not in (None, "interval", "watermark"):
            raise ArgumentError(f"incremental={incremental!r}: use None, 'interval' or 'watermark'.")
        if incremental and key is not None:
            raise ArgumentError("incremental applies to prefix/pattern downloads, not to one key.")
        if after not in ("keep", "delete", "archive"):
            raise ArgumentError(f"after={after!r}: use 'keep', 'delete' or 'archive'.")
        if after == "archive" and not archive_prefix:
            raise ArgumentError("after='archive' needs archive_prefix=... (where objects are moved).")
        if read_into_xcom and key is None:
            raise ArgumentError("read_into_xcom=True reads one object: give key=... .")
        if not read_into_xcom and not local_dir:
            raise ArgumentError("Give local_dir=... (where files go), or read_into_xcom=True for one small object.")
        self.key = key
        self.prefix = prefix
        self.pattern = pattern
        self.manifest = manifest
        self.local_dir = local_dir
        self.incremental = incremental
        self.lookback = lookback if isinstance(lookback, datetime.timedelta) else datetime.timedelta(seconds=lookback)
        self.skip_unchanged = skip_unchanged
        self.after = after
        self.archive_prefix = archive_prefix
        self.read_into_xcom = read_into_xcom
        self.max_xcom_bytes = max_xcom_bytes
        self.encoding = encoding
        self.fail_on_empty = fail_on_empty
        if on_invalid_key not in ("fail", "skip"):
            raise ArgumentError(f"on_invalid_key={on_invalid_key!r}: use 'fail' or 'skip'.")
        self.on_invalid_key = on_invalid_key

    def execute(self, context: Any) -> Any:
        scope = self.hook.scope_settings.scope
        if self.read_into_xcom:
            assert self.key is not None
            ref = self.hook.resolve(self.key, self.bucket)
            after = self._after(scope, ref.bucket, ref.key.rpartition("/")[0])  # checked before the read
            self.persist_console_link(context, ref.bucket, ref.key.rpartition("/")[0])
            if self.restore is not None:
                info = head(self.client, ref.bucket, ref.key, self.version_id)
                list(self.readable(self.hook, ref.bucket, [info], self.restore, self.restore_poll_interval))
            content, etag = read_object(self.client, ref.bucket, ref.key, self.max_xcom_bytes, self.version_id)
            try:
                text = content.decode(self.encoding)
            except UnicodeDecodeError:
                raise ArgumentError(
                    f"{ref.uri} is not {self.encoding} text: set encoding=... or download it to local_dir."
                ) from None
            # Only once the text is in hand: a failed read never deletes or moves the object.
            if after is not None:
                after(Downloaded(ref.key, Path(), len(content), etag, None))  # no local file: read into XCom
            self.record_lineage(inputs=[ref.uri])
            return text
        local_dir = Path(str(self.local_dir)).expanduser()
        sink = self.open_sink(context)
        watermark = None
        manifest = self.manifest_entries(self.manifest, self.hook, self.bucket) if self.manifest is not None else None
        window = self._window(context) if manifest is None and self.key is None else {}
        listing = self.key is None and manifest is None
        selection = Selection.of(
            scope, key=self.key, prefix=self.prefix or "" if listing else None, pattern=self.pattern,
            manifest=manifest, bucket=self.bucket, window=window, version_id=self.version_id,
        )  # fmt: skip
        bucket = selection.bucket
        if self.key is not None:
            assert selection.key is not None
            base = selection.key.rpartition("/")[0]
            # The key's path below the connection's prefix, not its last segment: mapped Gets of
            # 20250114/a.csv and 20250115/a.csv into one local_dir must not replace each other.
            local = LocalTree(local_dir).path_for(selection.key, scope.prefix)
            if self.restore is None:  # no HEAD: the GET (of the version, if one is named) tells
                tasks: Iterable[DownloadTask] = [DownloadTask(selection.key, local, version_id=self.version_id)]
            else:
                (info,) = self.readable(self.hook, bucket, [head(self.client, bucket, selection.key, self.version_id)],
                                        self.restore,
                                        self.restore_poll_interval)  # fmt: skip
                tasks = [DownloadTask.of(info, local)]
        else:
            base = selection.base
            if self.incremental == "watermark":
                watermark = self._previous_watermark(context)
            objects = self.readable(self.hook, bucket, selection.objects(self.client, lookup=False), self.restore,
                                    self.restore_poll_interval)  # fmt: skip
            tasks = self._plan(iter(objects), base, LocalTree(local_dir), watermark)
        # For a list, the listing in full first: too many is refused before any download (and
        # the progress lines know the totals from the start).
        tasks = sink.bounded(tasks, "objects to download")

        owner = self.task_tag(context)
        if int(getattr(context["ti"], "try_number", 1) or 1) > 1:
            self._remove_earlier_tries_files(local_dir, owner)
        downloader = Downloader(
            self.client,
            bucket,
            self.transfer_config(),
            skip_unchanged=self.skip_unchanged,
            after=self._after(scope, bucket, base),
            owner=owner,
        )
        uris: list[str] = []
        with self.running(downloader):
            for done in downloader.download(tasks):
                sink.add(result_entry(scope, bucket, done), done.size)
                if len(uris) <= 100:
                    uris.append(f"s3://{bucket}/{done.key}")
        if selection.lister is not None:
            self.log.info("Listed %d objects in %d requests", selection.lister.scanned, selection.lister.requests)
        self.log.info("Downloaded %d objects (%d bytes) to %s", sink.count, sink.bytes, local_dir)
        if self.incremental == "watermark" and self._new_watermark is not None:
            # Advanced once every download is done: what failed is looked for again.
            self._new_watermark.advance(self._admitted, self._watermark_lookback)
            context["ti"].xcom_push(key=WATERMARK_XCOM_KEY, value=self._new_watermark.to_json())
        if sink.count == 0 and self.fail_on_empty:
            matching = f" matches {self.pattern!r}" if self.pattern else ""
            raise EmptyMatchError(
                f"Nothing under s3://{bucket}/{base}{matching} (fail_on_empty=True): check prefix, pattern and the "
                "incremental window, or set fail_on_empty=False to succeed with an empty list."
            )
        self.persist_console_link(context, bucket, base)
        self.record_lineage(inputs=lineage_uris(uris, f"s3://{bucket}/{base}"))
        return self.sink_result(context, sink)

    # -- planning -------------------------------------------------------------------------
    def _window(self, context: Any) -> dict[str, datetime.datetime]:
        """``incremental="interval"``: LastModified in [start - lookback, end)."""
        if self.incremental != "interval":
            return {}
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None or start == end:
            raise ArgumentError(
                "incremental='interval' needs a run with a data interval (a scheduled DAG whose "
                "timetable has intervals, e.g. CronDataIntervalTimetable); this run has none. "
                "Use incremental='watermark' for manual or asset-triggered runs."
            )
        return {"modified_since": start - self.lookback, "modified_until": end}

    def _previous_watermark(self, context: Any) -> Watermark:
        ti = context["ti"]
        previous = ti.get_previous_ti(state="success", map_index=ti.map_index)
        if previous is None:
            return Watermark()
        state = ti.xcom_pull(
            task_ids=self.task_id, key=WATERMARK_XCOM_KEY, run_id=previous.run_id, map_indexes=ti.map_index
        )
        return Watermark.from_json(state) or Watermark()

    @property
    def _watermark_lookback(self) -> float:
        """Seconds the watermark looks back: ``lookback`` when given, else the default."""
        return self.lookback.total_seconds() or DEFAULT_LOOKBACK

    def _plan(
        self, found: Iterator[Any], base: str, tree: LocalTree, watermark: Watermark | None
    ) -> Iterator[DownloadTask]:
        """Listed (or manifest) objects to download tasks; a bare key (a manifest of keys)
        is fetched without a known size."""
        self._new_watermark = watermark
        self._admitted: list[ObjectInfo] = []
        for entry in found:
            if isinstance(entry, str):
                if (local := self._local_path(tree, entry, base)) is not None:
                    yield DownloadTask(entry, local)
                continue
            if not isinstance(entry, ObjectInfo):
                continue
            if watermark is not None:
                if not watermark.is_new(entry, self._watermark_lookback):
                    continue
                self._admitted.append(entry)
            if (local := self._local_path(tree, entry.key, base)) is not None:
                yield DownloadTask(entry.key, local, entry.size, entry.etag, entry.last_modified)

    def _local_path(self, tree: LocalTree, key: str, base: str) -> Path | None:
        """Where ``key`` lands, or None when it cannot be a local path and ``on_invalid_key="skip"``."""
        try:
            return tree.path_for(key, base)
        except LocalPathError as exc:
            if self.on_invalid_key == "fail":
                raise
            self.log.warning("Skipped (on_invalid_key='skip'): %s", exc)
            return None

    _new_watermark: Watermark | None = None

    def _remove_earlier_tries_files(self, local_dir: Path, owner: str) -> None:
        """A killed try leaves its temporary files (named for this task instance): remove them."""
        left = Cleanup(owner=owner).remove_left_files(local_dir)
        if left:
            self.log.warning("Removed %d temporary files an earlier try left in %s", len(left), local_dir)

    def _after(self, scope: Scope, bucket: str, base: str) -> Any:
        if self.after == "keep":
            return None
        client = self.client
        if self.after == "delete":
            return lambda done: delete_object(client, bucket, done.key, done.etag)
        assert self.archive_prefix is not None
        archive = scope.resolve_destination(self.archive_prefix, bucket).key
        archive = archive if archive.endswith("/") else archive + "/"
        if archive == (base if base.endswith("/") else base + "/"):
            raise ArgumentError(
                f"archive_prefix {self.archive_prefix!r} is where the objects are read from: each would be "
                "archived onto itself, then deleted. Give another archive_prefix."
            )

        archive_options = WriteOptions(**self.manifest_options()).args("CopyObject")

        def move(done: Downloaded) -> None:
            relative = done.key[len(base) :].lstrip("/") if done.key.startswith(base) else PurePosixPath(done.key).name
            target = scope.check(bucket, archive + relative).key
            if target == done.key:
                raise ArgumentError(
                    f"s3://{bucket}/{target} would be archived onto itself: give another archive_prefix."
                )
            archive_object(client, bucket, done.key, target, done.etag, done.size, archive_options)

        return move
