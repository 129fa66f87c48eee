"""S3DeleteObjectsOperator: delete named keys or what a listing matches, in batches."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_s3connect.connection import is_aws_endpoint
from airflow_s3connect.deletes import BatchDelete
from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.mixins import CONNECTION_FIELDS, parse_moment
from airflow_s3connect.objects import ObjectInfo, result_entry
from airflow_s3connect.operators.base import RESULT_FIELDS, S3ConnectOperator, lineage_uris
from airflow_s3connect.scope import Scope
from airflow_s3connect.selection import Selection

#: Default cap on how many objects one task deletes.
MAX_DELETE = 10_000


class S3DeleteObjectsOperator(S3ConnectOperator):
    """Delete one key, a list of keys, or what a prefix + pattern matches.

    Everything is decided before the first delete: a prefix is listed in full, and more
    matches than ``max_objects`` fail the task with nothing deleted. Deletes go out as
    DeleteObjects requests of 1,000 keys. On AWS each key carries the ETag it was listed
    with, so an object replaced since the listing is kept (other stores may not know that
    field: there the delete is unconditional).

    :param key: one key, relative to the connection's path_prefix (macros allowed).
    :param keys: several keys (a list, or an upstream task's output of keys).
    :param manifest: what a manifest names (an upstream ``results="manifest"`` result, one
        batch of ``results="batches"``, or its location).
    :param prefix: / ``pattern``: what to list and delete, as for List.
    :param modified_before: with ``prefix``, only objects last modified before this
        (datetime or ISO string, e.g. ``"{{ data_interval_start }}"``).
    :param dry_run: list and report what would be deleted; delete nothing.
    :param max_objects: refuse to delete more than this many (default 10,000).
    :param version_id: with ``key``: delete that version of it, for good
        (s3:DeleteObjectVersion); without it a versioned bucket keeps the old versions
        behind a delete marker.

    Returns (``results="list"``) the deleted objects, each ``{key, uri, size, etag,
    last_modified, storage_class}`` (``size`` and the rest are None for ``key``/``keys``/
    ``manifest``, which are not listed); more than ``max_xcom_objects`` is refused before
    the first delete (see ``results`` in :class:`S3ConnectOperator`). Needs s3:DeleteObject,
    and s3:ListBucket for ``prefix``.
    """

    template_fields: Sequence[str] = (
        "key", "version_id", "keys", "prefix", "pattern", "modified_before", "manifest", *RESULT_FIELDS,
        *CONNECTION_FIELDS,
    )  # fmt: skip
    macro_fields = ("key", "keys", "prefix", "manifest_key")
    pattern_fields = ("pattern",)

    def __init__(
        self,
        *,
        key: str | None = None,
        keys: list[str] | None = None,
        prefix: str | None = None,
        pattern: str | None = None,
        modified_before: datetime.datetime | str | None = None,
        dry_run: bool = False,
        max_objects: int = MAX_DELETE,
        manifest: str | Mapping[str, Any] | None = None,
        version_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if version_id is not None and key is None:
            raise ArgumentError("version_id names a version of one object: give it with key=... .")
        self.version_id = version_id
        named = (key is not None) + (keys is not None) + (manifest is not None)
        if named + (prefix is not None or pattern is not None) != 1:
            raise ArgumentError("Give exactly one of key=..., keys=[...], manifest=... or prefix=... / pattern=... .")
        if named and modified_before is not None:
            raise ArgumentError("modified_before=... filters a listing: use it with prefix=..., not key/keys.")
        if max_objects < 1:
            raise ArgumentError(f"max_objects={max_objects}: give at least 1.")
        self.key = key
        self.keys = keys
        self.manifest = manifest
        self.prefix = prefix
        self.pattern = pattern
        self.modified_before = modified_before
        self.report_only = dry_run  # not self.dry_run: BaseOperator.dry_run() is a method
        self.max_objects = max_objects

    def execute(self, context: Any) -> Any:
        scope = self.hook.scope_settings.scope
        sink = self.open_sink(context)
        manifest = self.manifest_entries(self.manifest, self.hook, self.bucket) if self.manifest is not None else None
        window = (
            {"modified_until": parse_moment(self.modified_before, "modified_before")} if self.modified_before else {}
        )
        selection = Selection.of(scope, key=self.key, keys=self.keys, prefix=self.prefix, pattern=self.pattern,
                                 manifest=manifest, bucket=self.bucket, window=window,
                                 version_id=self.version_id)  # fmt: skip
        bucket, where = selection.bucket, selection.where
        self.persist_console_link(context, bucket, selection.base)
        found = selection.at_most(self.client, self.max_objects, "delete", "deleted", lookup=False)
        sink.check_count(len(found), "objects to delete")
        if self.report_only:
            for info in found:
                sink.add(self._entry(scope, bucket, info))
            self.log.info("Dry run: %d objects under %s would be deleted", len(found), where)
            return self.sink_result(context, sink)
        delete = BatchDelete(self.client, bucket, if_match=is_aws_endpoint(self.hook.settings.endpoint_url))
        deleted = [info for info in delete.run(found)]
        for info in deleted:
            sink.add(self._entry(scope, bucket, info))
        self.log.info("Deleted %d objects under %s in %d DeleteObjects requests", len(deleted), where, delete.requests)
        self.record_lineage(outputs=lineage_uris([f"s3://{bucket}/{_key(i)}" for i in deleted], where))
        delete.check(len(deleted))
        return self.sink_result(context, sink)

    @staticmethod
    def _entry(scope: Scope, bucket: str, found: ObjectInfo | str) -> dict[str, Any]:
        return result_entry(scope, bucket, found)  # a named key (not listed) is only where it was


def _key(found: ObjectInfo | str) -> str:
    return found.key if isinstance(found, ObjectInfo) else found
