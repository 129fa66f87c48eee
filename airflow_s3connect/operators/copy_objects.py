"""S3CopyObjectsOperator: objects from one connection's scope into another's (or the same)."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from airflow_s3connect.copies import Copier, CopyTask
from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.macros import MacroValues
from airflow_s3connect.mixins import CONNECTION_FIELDS, require_one_target
from airflow_s3connect.objects import result_entry
from airflow_s3connect.operators.base import RESULT_FIELDS, S3ConnectOperator, lineage_uris
from airflow_s3connect.restores import Restore
from airflow_s3connect.selection import Selection, head

#: Default cap on how many objects one task copies.
MAX_COPY = 10_000


class S3CopyObjectsOperator(S3ConnectOperator):
    """Copy one object or everything a prefix + pattern matches, keeping relative paths.

    The target is this operator's connection (``s3connect_conn_id``, ``bucket``); the
    source is ``source_conn_id`` (default: the same connection) and ``source_bucket``.
    Each side's scope holds: the source is read through the source connection's client
    and written through the target's.

    * Same connection: **server-side** (CopyObject; UploadPartCopy parts above
      ``multipart_threshold``, so objects of any size up to 5 TiB). No byte passes
      through the worker.
    * Two connections (a partner's role with an external ID on one side, ours on the
      other): **streamed**, one GET per object into a multipart upload, parallel parts,
      memory bounded by ``max_concurrency`` times ``chunk_size``. Bytes are counted and, for a
      single-part source, checked against its ETag before the upload completes.

    Either way a reader sees the whole object or none, every request is pinned to the
    ETag the source was listed with, and ``overwrite=False`` makes each write create-only
    (where a store cannot keep that, it is refused before writing, as for Put).

    :param source_key: one object, relative to the source connection's path_prefix.
    :param source_prefix: / ``source_pattern``: what to copy, as for List.
    :param manifest: what a manifest names, in the source's scope (an upstream
        ``results="manifest"`` result, one batch of ``results="batches"``, or its location);
        ``{relative_path}`` is then the key below the source's path_prefix.
    :param source_conn_id: the source's ``s3connect`` connection (default: this one).
    :param source_bucket: the source's bucket (default: its connection's).
    :param target_key: where each object goes, relative to the target's path_prefix;
        macros, and per object ``{relative_path}`` (the key below ``source_prefix``, or the
        file name for ``source_key``) and ``{filename}``. Default ``{relative_path}``.
    :param skip_unchanged: skip objects whose copy exists with the same size and ETag (or
        the source ETag the copy recorded in its metadata).
    :param overwrite: False: never replace an existing object (create-only writes).
    :param max_objects: refuse, before copying anything, more than this many (10,000).
    :param version_id: with ``source_key``: copy that version of it (s3:GetObjectVersion).
    :param restore: ``{"days": N, "tier": ...}``: restore sources in GLACIER or DEEP_ARCHIVE
        first, waiting in the triggerer (see :class:`S3GetObjectOperator`); without it such a
        source fails the task before anything is copied, naming this option.

    Returns (``results="list"``) ``[{source_uri, uri, key, size, etag, method}]`` with ``key``
    relative to the target's path_prefix and ``method`` ``"server"``, ``"stream"`` or
    ``"unchanged"``; more than ``max_xcom_objects`` is refused before the first copy (see
    ``results`` in :class:`S3ConnectOperator`).
    Needs s3:ListBucket (for a prefix) and s3:GetObject on the source, s3:PutObject on
    the target; ``skip_unchanged`` adds s3:GetObject on the target (HeadObject).
    """

    template_fields: Sequence[str] = (
        "source_key",
        "version_id",
        "source_prefix",
        "source_pattern",
        "source_bucket",
        "target_key",
        "manifest",
        *RESULT_FIELDS,
        *CONNECTION_FIELDS,
    )
    macro_fields = ("source_key", "source_prefix", "target_key", "manifest_key")
    pattern_fields = ("source_pattern",)
    deferred_macros = ("relative_path", "filename")

    def __init__(
        self,
        *,
        source_key: str | None = None,
        source_prefix: str | None = None,
        source_pattern: str | None = None,
        source_conn_id: str | None = None,
        source_bucket: str | None = None,
        target_key: str = "{relative_path}",
        skip_unchanged: bool = False,
        overwrite: bool = True,
        max_objects: int = MAX_COPY,
        manifest: str | Mapping[str, Any] | None = None,
        version_id: str | None = None,
        restore: Mapping[str, Any] | None = None,
        restore_poll_interval: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        require_one_target(source_key, source_prefix, source_pattern, manifest, names="source_key")
        if version_id is not None and source_key is None:
            raise ArgumentError("version_id names a version of one object: give it with source_key=... .")
        Restore.of(restore)  # a wrong restore= is refused when the DAG is parsed
        self.version_id, self.restore, self.restore_poll_interval = version_id, restore, restore_poll_interval
        if max_objects < 1:
            raise ArgumentError(f"max_objects={max_objects}: give at least 1.")
        self.source_key = source_key
        self.source_prefix = source_prefix
        self.source_pattern = source_pattern
        self.source_conn_id = source_conn_id or self.s3connect_conn_id
        self.source_bucket = source_bucket
        self.manifest = manifest
        self.target_key = target_key
        self.skip_unchanged = skip_unchanged
        self.overwrite = overwrite
        self.max_objects = max_objects

    @cached_property
    def source_hook(self) -> S3ConnectHook:
        if self.source_conn_id == self.s3connect_conn_id:
            return self.hook
        return self.connection_hook(self.source_conn_id)

    def _render_macros(self, context: Any) -> None:
        super()._render_macros(context)
        if self.source_hook is not self.hook:
            values = MacroValues(context, self.macro_overrides(), self.source_hook.macro_fallbacks())
            self.source_hook.render_path_prefix(values)

    def execute(self, context: Any) -> Any:
        source_scope = self.source_hook.scope_settings.scope
        target_scope = self.hook.scope_settings.scope
        source_client = self.source_hook.get_conn()
        sink = self.open_sink(context, source_client)
        if self.manifest is not None:
            manifest = self.manifest_entries(self.manifest, self.source_hook, self.source_bucket)
            selection = Selection.of(source_scope, manifest=manifest)
        else:
            selection = Selection.of(source_scope, key=self.source_key, prefix=self.source_prefix,
                                     pattern=self.source_pattern, bucket=self.source_bucket,
                                     version_id=self.version_id)  # fmt: skip
        source_bucket, base, where = selection.bucket, selection.base, selection.where
        self.persist_console_link(context, target_scope.bucket_for(self.bucket), target_scope.prefix)
        listed = selection.at_most(source_client, self.max_objects, "copy", "copied")
        # Every copy request pins the source's ETag: a named source is looked up once.
        found = [head(source_client, source_bucket, item) if isinstance(item, str) else item for item in listed]
        found = list(self.readable(self.source_hook, source_bucket, found, self.restore, self.restore_poll_interval))
        sink.check_count(len(found), "objects to copy")
        target_bucket = target_scope.bucket_for(self.bucket)
        tasks = []
        for info in found:
            relative = info.key[len(base) :] if info.key.startswith(base) else posixpath.basename(info.key)
            rendered = self.render_deferred(
                self.target_key, context, relative_path=relative, filename=posixpath.basename(info.key)
            )
            tasks.append(CopyTask(info, self.hook.resolve(rendered, target_bucket).key))
        server_side = self.source_hook is self.hook
        copier = Copier(
            source_client, source_bucket, self.client, target_bucket, self.transfer_config(),
            self.write_options(context, overwrite=self.overwrite),
            server_side=server_side, skip_unchanged=self.skip_unchanged, prefix=target_scope.prefix,
            on_open=self.track_open(context, target_bucket),
        )  # fmt: skip
        uris = []
        with self.running(copier):
            for done in copier.run(tasks):
                sink.add(result_entry(target_scope, target_bucket, done), done.size)
                uris.append(f"s3://{done.bucket}/{done.key}")
        self.log.info(
            "Copied %d objects (%d bytes) from %s to s3://%s/ %s",
            sink.count,
            sink.bytes,
            where,
            target_bucket,
            "server-side" if copier.server_side else "streamed through this worker",
        )
        self.record_lineage(inputs=[where], outputs=lineage_uris(uris, f"s3://{target_bucket}/{target_scope.prefix}"))
        return self.sink_result(context, sink)
