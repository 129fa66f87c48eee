"""S3CatalogOperator: directories, datasets and fields under a prefix, as one JSON catalog."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow_s3connect.catalog import HEAD_BYTES, build_catalog
from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.mixins import CONNECTION_FIELDS
from airflow_s3connect.operators.base import S3ConnectOperator
from airflow_s3connect.operators.list_objects import MAX_OBJECTS


class S3CatalogOperator(S3ConnectOperator):
    """Catalog a landing zone for a data catalog: its directories, its files grouped
    into datasets by date masks, and each dataset's fields (CSV headers with the delimiter
    sniffed, JSONL keys, Parquet schemas).

    Reads byte ranges only: ``head_bytes`` of the newest CSV/JSONL file per dataset, the
    footer of the newest Parquet file (one or two ranges). One listing, then at most two
    ranged GETs per dataset. Needs s3:ListBucket and s3:GetObject (+ s3:PutObject with
    ``catalog_key``).

    :param prefix: what to catalog, relative to the connection's path_prefix (macros allowed).
    :param patterns: date-mask patterns relative to ``prefix``, e.g.
        ``["{YYYYMMDD}/orders_{zz}.csv"]``: files differing only in their date masks are one
        dataset. Files no pattern matches are grouped with their date-shaped digits masked.
    :param head_bytes: bytes read from the start of a CSV/JSONL file (default 64 KiB).
    :param catalog_key: also write the catalog as JSON to this key (macros allowed).

    Returns the catalog: ``{bucket, prefix, objects, directories, datasets: [{name, format,
    files, bytes, first_modified, last_modified, newest_key, fields, delimiter, error}]}``.
    """

    template_fields: Sequence[str] = ("prefix", "patterns", "catalog_key", *CONNECTION_FIELDS)
    macro_fields = ("prefix", "catalog_key")

    def __init__(
        self,
        *,
        prefix: str = "",
        patterns: Sequence[str] = (),
        head_bytes: int = HEAD_BYTES,
        max_objects: int = MAX_OBJECTS,
        catalog_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 1024 <= head_bytes <= 16 * 1024 * 1024:
            raise ArgumentError(f"head_bytes={head_bytes}: use 1,024 to 16,777,216 bytes.")
        self.prefix = prefix
        self.patterns = list(patterns)
        self.head_bytes = head_bytes
        self.max_objects = max_objects
        self.catalog_key = catalog_key

    def execute(self, context: Any) -> Any:
        scope = self.hook.scope_settings.scope
        ref = scope.resolve_prefix(self.prefix or "", self.bucket)
        catalog = build_catalog(self.client, ref.bucket, ref.key, self.patterns, self.head_bytes, self.max_objects)
        self.log.info(
            "Catalogued s3://%s/%s: %d objects, %d directories, %d datasets",
            ref.bucket,
            ref.key,
            catalog["objects"],
            len(catalog["directories"]),
            len(catalog["datasets"]),
        )
        outputs = []
        if self.catalog_key:
            written = self.hook.upload(
                self.catalog_key,
                data=json.dumps(catalog, indent=2),
                content_type="application/json",
                bucket=self.bucket,
                **self.manifest_options(),
            )
            outputs.append(written["uri"])
        self.persist_console_link(context, ref.bucket, ref.key)
        self.record_lineage(inputs=[f"s3://{ref.bucket}/{ref.key}"], outputs=outputs)
        return catalog
