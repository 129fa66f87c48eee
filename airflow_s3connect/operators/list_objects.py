"""S3ListObjectsOperator: keys (or metadata) under a prefix, filtered while streaming."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from airflow_s3connect import progress
from airflow_s3connect.listing import Lister, listing_query
from airflow_s3connect.mixins import CONNECTION_FIELDS, parse_moment
from airflow_s3connect.objects import CommonPrefix, result_entry
from airflow_s3connect.operators.base import RESULT_FIELDS, S3ConnectOperator

#: Default cap on one listing: enough for a day's drop of most feeds, small enough that a
#: runaway prefix fails clearly instead of listing a whole bucket.
MAX_OBJECTS = 100_000


class S3ListObjectsOperator(S3ConnectOperator):
    """List objects under a prefix, optionally filtered by pattern and modification time.

    Pages are streamed (memory: one page plus what is kept), the pattern's literal part is
    sent to S3 as the Prefix, and requests = ceil(listed / 1,000). Needs s3:ListBucket only.

    :param prefix: where to list, relative to the connection's path_prefix (macros allowed);
        ``s3://bucket/prefix`` for a full location.
    :param pattern: glob / date-mask pattern matched against keys relative to ``prefix``
        (``*.csv``, ``{YYYYMMDD}/part-*.parquet``, ``**/*.json``).
    :param delimiter: e.g. ``/``: list one level; directories are returned as keys ending
        with the delimiter (``{"prefix": ...}`` with include_metadata).
    :param modified_since: keep objects modified at or after (datetime or ISO string).
    :param modified_until: keep objects modified before (exclusive).
    :param start_after: list keys after this one (relative to path_prefix).
    :param max_objects: stop after this many results (default 100,000; 0 or None: no limit).
    :param include_metadata: return dicts (key, uri, size, etag, last_modified,
        storage_class) instead of keys.

    Returns (``results="list"``) keys relative to the connection's path_prefix, so
    ``S3GetObjectOperator.partial(...).expand(key=list_task.output)`` fetches them; for more
    than ``max_xcom_objects``, ``results="manifest"`` (one Get with ``manifest=``) or
    ``results="batches"`` (``.expand(manifest=list_task.output)``). See :class:`S3ConnectOperator`.
    """

    template_fields: Sequence[str] = (
        "prefix",
        "pattern",
        "start_after",
        "modified_since",
        "modified_until",
        *RESULT_FIELDS,
        *CONNECTION_FIELDS,
    )
    macro_fields = ("prefix", "start_after", "manifest_key")
    pattern_fields = ("pattern",)

    def __init__(
        self,
        *,
        prefix: str = "",
        pattern: str | None = None,
        delimiter: str | None = None,
        modified_since: datetime.datetime | str | None = None,
        modified_until: datetime.datetime | str | None = None,
        start_after: str | None = None,
        max_objects: int | None = MAX_OBJECTS,
        include_metadata: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        self.pattern = pattern
        self.delimiter = delimiter
        self.modified_since = modified_since
        self.modified_until = modified_until
        self.start_after = start_after
        self.max_objects = max_objects
        self.include_metadata = include_metadata

    def execute(self, context: Any) -> Any:
        scope = self.hook.scope_settings.scope
        bucket, query = listing_query(
            scope,
            self.prefix,
            self.pattern,
            self.bucket,
            delimiter=self.delimiter,
            start_after=scope.resolve(self.start_after, self.bucket).key if self.start_after else None,
            modified_since=parse_moment(self.modified_since, "modified_since"),
            modified_until=parse_moment(self.modified_until, "modified_until"),
            max_objects=self.max_objects or None,
        )
        sink = self.open_sink(context)
        lister = Lister(self.client, bucket, query)
        meter = progress.of(self.client)
        for entry in lister:
            if isinstance(entry, CommonPrefix):
                relative = scope.relative(entry.prefix)
                sink.add(
                    {"prefix": relative, "uri": f"s3://{bucket}/{entry.prefix}"} if self.include_metadata else relative
                )
            else:
                sink.add(
                    result_entry(scope, bucket, entry) if self.include_metadata else scope.relative(entry.key),
                    entry.size,
                )
            meter.finished()
        self.log.info(
            "Listed s3://%s/%s: %d results of %d objects scanned in %d requests%s",
            bucket,
            query.prefix,
            sink.count,
            lister.scanned,
            lister.requests,
            f"; stopped at max_objects={self.max_objects}" if lister.truncated else "",
        )
        self.persist_console_link(context, bucket, query.prefix)
        self.record_lineage(inputs=[f"s3://{bucket}/{query.prefix}"])
        return self.sink_result(context, sink, truncated=lister.truncated)
