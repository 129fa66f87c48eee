"""Record formats for S3PutObjectOperator(records=...): csv, csv.gz, jsonl, jsonl.gz, parquet.

No Airflow, no S3. Text formats are encoded as a stream of byte chunks, so an iterator
of millions of records is uploaded in bounded memory; parquet is written batch by batch
(one row group per batch) to a local file, because its footer comes last.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from airflow_s3connect.errors import S3ConnectError


class FormatError(S3ConnectError, ValueError):
    """Records cannot be written in the requested format."""


@dataclass(frozen=True)
class RecordFormat:
    name: str
    content_type: str
    gzip: bool = False

    @property
    def extension(self) -> str:
        """The ``{extension}`` macro's value for this format."""
        return self.name


FORMATS: Mapping[str, RecordFormat] = {
    "csv": RecordFormat("csv", "text/csv"),
    "csv.gz": RecordFormat("csv.gz", "application/gzip", gzip=True),
    "jsonl": RecordFormat("jsonl", "application/x-ndjson"),
    "jsonl.gz": RecordFormat("jsonl.gz", "application/gzip", gzip=True),
    "parquet": RecordFormat("parquet", "application/vnd.apache.parquet"),
}

#: Bytes of encoded text gathered before a chunk is handed to the upload.
CHUNK_BYTES = 1024 * 1024
#: Rows per parquet row group (and per batch held in memory).
PARQUET_BATCH_ROWS = 10_000


def get_format(name: str) -> RecordFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"Unknown format {name!r}: choose one of {', '.join(FORMATS)}.") from None


def _csv_lines(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """CSV text, header from the first record's keys; a later record with other keys is refused."""
    buffer = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for number, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise FormatError(f"Record {number} is a {type(record).__name__}, not a dict: records must be dicts.")
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(record), extrasaction="raise", lineterminator="\n")
            writer.writeheader()
        try:
            writer.writerow(record)
        except ValueError:
            extra = sorted(set(record) - set(writer.fieldnames))
            raise FormatError(
                f"Record {number} has fields {extra} that the first record lacks: CSV columns come from the "
                "first record; give every record the same fields (missing ones may be left out)."
            ) from None
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def _jsonl_lines(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    parts: list[str] = []
    size = 0
    for number, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise FormatError(f"Record {number} is a {type(record).__name__}, not a dict: records must be dicts.")
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        parts.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(parts)
            parts, size = [], 0
    if parts:
        yield "".join(parts)


def encode_records(records: Iterable[Mapping[str, Any]], fmt: RecordFormat) -> Iterator[bytes]:
    """Byte chunks of ``records`` in a text format (csv, jsonl, optionally gzipped)."""
    if fmt.name == "parquet":
        raise FormatError("parquet is not a streamed format: use write_parquet().")
    lines = _csv_lines(records) if fmt.name.startswith("csv") else _jsonl_lines(records)
    if not fmt.gzip:
        for text in lines:
            yield text.encode("utf-8")
        return
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    for text in lines:
        if out := compressor.compress(text.encode("utf-8")):
            yield out
    yield compressor.flush()


def write_parquet(records: Iterable[Mapping[str, Any]], path: Path, batch_rows: int = PARQUET_BATCH_ROWS) -> int:
    """Write ``records`` to ``path`` as parquet, one row group per batch; returns the row count.

    The schema is inferred from the first batch; later batches must fit it.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise FormatError(
            "format='parquet' needs pyarrow: install airflow-s3connect[parquet] (or pyarrow) on the workers."
        ) from None
    iterator = iter(records)
    writer: Any = None
    rows = 0
    try:
        while batch := list(islice(iterator, batch_rows)):
            try:
                table = pa.Table.from_pylist(batch, schema=writer.schema if writer else None)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise FormatError(
                    f"Records {rows + 1}-{rows + len(batch)} do not fit the parquet schema inferred from "
                    f"the first batch: {exc}. Give every record the same fields and types."
                ) from None
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table)
            rows += len(batch)
        if writer is None:
            raise FormatError("No records to write: parquet needs at least one record to know its schema.")
    finally:
        if writer is not None:
            writer.close()
    return rows
