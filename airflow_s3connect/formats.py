"""Record formats for S3PutObjectOperator(records=...): csv, csv.gz, jsonl, jsonl.gz, parquet.

No Airflow, no S3. Text formats are encoded as a stream of byte chunks, so an iterator
of millions of records is uploaded in bounded memory; parquet is written batch by batch
(one row group per batch) to a local file, because its footer comes last.

Every value is written by one table (:data:`TYPE_MAPPING`, mirrored in the docs' operators page), so
that pyarrow, DuckDB, polars and pandas read back what was written; a value a format
cannot hold fails with :class:`FormatError` naming the record and the field, never
silently changed:

============================  =====================  =====================  ======================
Python                        csv                    jsonl                  parquet
============================  =====================  =====================  ======================
str                           text; quoted if empty  string                 string
                              or holding , " CR LF
int                           digits (any size)      number (any size)      int64 (beyond: error)
float                         shortest repr; NaN,    number; NaN and        double
                              inf, -inf              infinities: error
bool                          true / false           true / false           bool
None                          empty, unquoted        null                   null
decimal.Decimal               digits, no exponent    string (every digit)   decimal128
datetime.date                 2025-01-14             "2025-01-14"           date32
datetime.datetime, naive      2025-01-14T08:00:00    ISO 8601 string        timestamp[us]
datetime.datetime, aware      UTC, +00:00 offset     ISO 8601 string, UTC   timestamp[us, UTC]
bytes                         base64                 base64 string          binary
dict / list                   compact JSON           object / array         struct / list
uuid.UUID, enum.Enum          str / the value        str / the value        string / the value
============================  =====================  =====================  ======================

Parquet keeps one schema per file: a field that first appears later is added as a
nullable column, ints and floats mixed in one field become double only with
``widen_ints=True``, and any other mix of types in a field fails.
"""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import enum
import gzip
import io
import json
import math
import mimetypes
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from airflow_s3connect.errors import FormatError


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


def content_type_for(key: str, fmt: RecordFormat | None = None) -> str:
    """The one Content-Type rule of every put path: the format's when there is one, else the
    key's suffix (our formats first, compound ``.csv.gz`` included), else octet-stream."""
    if fmt is not None:
        return fmt.content_type
    if (known := _suffix_format(key)) is not None:
        return known.content_type
    guessed, encoding = mimetypes.guess_type(key.rpartition("/")[2].lower())
    if guessed and encoding is None:
        return guessed
    return "application/gzip" if encoding == "gzip" else "application/octet-stream"


def _unsupported(value: Any, number: int, field: str, fmt: str) -> FormatError:
    return FormatError(
        f"Record {number}, field {field!r}: a {type(value).__name__} cannot be written to {fmt}; "
        "convert it to one of str, int, float, bool, None, Decimal, date, datetime, bytes, dict or list."
    )


def _plain(value: Any, number: int, field: str, fmt: str) -> Any:
    """A value as JSON would hold it (the jsonl mapping; also nested values in csv)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FormatError(
                f"Record {number}, field {field!r}: {value} is not a JSON number (RFC 8259): write None, "
                "or a string, or use csv or parquet, which hold NaN and infinities."
            )
        return value
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, datetime.datetime):
        return _iso(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, number, field, fmt)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise FormatError(f"Record {number}, field {field!r}: nested dicts need string keys for {fmt}.")
        return {k: _plain(v, number, f"{field}.{k}", fmt) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, number, f"{field}[{i}]", fmt) for i, v in enumerate(value)]
    raise _unsupported(value, number, field, fmt)


def _iso(moment: datetime.datetime) -> str:
    """ISO 8601; an aware datetime in UTC (one offset, whatever zones the records used)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.isoformat()


_QUOTE = str.maketrans({",": None, '"': None, "\r": None, "\n": None})


def _csv_field(value: Any, number: int, field: str) -> str:
    """One CSV field: the csv column of the mapping, quoted as RFC 4180 says."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)  # repr: the shortest text that reads back equal
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(_plain(value, number, field, "csv"), ensure_ascii=False, separators=(",", ":"))
    else:
        plain = _plain(value, number, field, "csv")
        text = plain if isinstance(plain, str) else str(plain)
    if text == "" or text.translate(_QUOTE) != text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _numbered(records: Iterable[Mapping[str, Any]]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for number, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise FormatError(f"Record {number} is a {type(record).__name__}, not a dict: records must be dicts.")
        yield number, record


def _csv_lines(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """CSV lines, header from the first record's keys; a later record with other keys is refused."""
    columns: list[str] | None = None
    known: set[str] = set()
    for number, record in _numbered(records):
        if columns is None:
            columns = [str(name) for name in record]
            known = set(columns)
            yield ",".join(_csv_field(name, 0, name) for name in columns) + "\n"
        extra = [name for name in record if name not in known]
        if extra:
            raise FormatError(
                f"Record {number} has fields {sorted(extra)} that the first record lacks: CSV columns come from the "
                "first record; give every record the same fields (missing ones may be left out), or use jsonl "
                "or parquet."
            )
        line = ",".join(_csv_field(record.get(name), number, name) for name in columns) + "\n"
        if line == "\n":
            raise FormatError(
                f"Record {number}: its only field {columns[0]!r} is None, which makes a blank CSV line that every "
                "reader skips. Write '' for it, add a field, or use jsonl or parquet."
            )
        yield line


#: Characters some readers take for line breaks (Python's splitlines, older JavaScript):
#: escaped, so that one record is one line for every reader.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _jsonl_lines(records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for number, record in _numbered(records):
        plain = {str(k): _plain(v, number, str(k), "jsonl") for k, v in record.items()}
        yield json.dumps(plain, ensure_ascii=False, allow_nan=False).translate(_LINE_BREAKS) + "\n"


def _chunked(lines: Iterator[str]) -> Iterator[str]:
    """Lines gathered into texts of about CHUNK_BYTES (fewer, larger writes)."""
    parts: list[str] = []
    size = 0
    for line in lines:
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
    lines = _chunked(_csv_lines(records) if fmt.name.startswith("csv") else _jsonl_lines(records))
    if not fmt.gzip:
        for text in lines:
            yield text.encode("utf-8")
        return
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    for text in lines:
        if out := compressor.compress(text.encode("utf-8")):
            yield out
    yield compressor.flush()


# --------------------------------------------------------------------------- parquet
def _kind(value: Any) -> str:
    """The mapping's row for a value (what must agree within one parquet column)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime.datetime):
        return "timestamp_tz" if value.tzinfo is not None else "timestamp"
    if isinstance(value, enum.Enum):
        return _kind(value.value)
    for kind, types in _KINDS:
        if isinstance(value, types):
            return kind
    return type(value).__name__


_KINDS: tuple[tuple[str, Any], ...] = (
    ("string", (str, uuid.UUID)),
    ("decimal", decimal.Decimal),
    ("date", datetime.date),
    ("binary", (bytes, bytearray, memoryview)),
    ("struct", Mapping),
    ("list", (list, tuple)),
)
_PARQUET_KINDS = ("bool", "int", "float", "timestamp", "timestamp_tz", *(kind for kind, _ in _KINDS))
_INT64 = (-(2**63), 2**63 - 1)


class _Columns:
    """Types of each field across every batch so far; refuses a lossy mix, first where it occurs."""

    def __init__(self, widen_ints: bool) -> None:
        self.widen_ints = widen_ints
        self.kinds: dict[str, str] = {}

    def batch(self, batch: list[Mapping[str, Any]], first: int) -> dict[str, list[Any]]:
        names: dict[str, None] = dict.fromkeys(self.kinds)
        for record in batch:
            names.update(dict.fromkeys(str(k) for k in record))
        columns: dict[str, list[Any]] = {name: [] for name in names}
        for offset, record in enumerate(batch):
            number = first + offset
            if not isinstance(record, Mapping):
                raise FormatError(f"Record {number} is a {type(record).__name__}, not a dict: records must be dicts.")
            for name, column in columns.items():
                value = record.get(name)
                if value is not None:
                    value = self._admit(name, value, number)
                column.append(value)
        return columns

    def _admit(self, name: str, value: Any, number: int) -> Any:
        kind = _kind(value)
        if kind not in _PARQUET_KINDS:
            raise _unsupported(value, number, name, "parquet")
        if kind == "int" and not _INT64[0] <= value <= _INT64[1]:
            raise FormatError(
                f"Record {number}, field {name!r}: {value} does not fit parquet's int64: write it as a str or a "
                "Decimal, or use csv or jsonl, which keep every digit."
            )
        known = self.kinds.get(name)
        if known is None or known == kind:
            self.kinds[name] = kind
        elif {known, kind} == {"int", "float"} and self.widen_ints:
            self.kinds[name] = "float"
        else:
            hint = " (pass widen_ints=True to store them all as double)" if {known, kind} == {"int", "float"} else ""
            raise FormatError(
                f"Record {number}, field {name!r}: a {kind} value where earlier records have {known} values; a parquet "
                f"column has one type{hint}. Give the field one type in every record."
            )
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, uuid.UUID):
            value = str(value)
        if kind == "timestamp_tz":
            value = value.astimezone(datetime.timezone.utc)
        return value


def _arrow_type(pa: Any, kind: str) -> Any:
    return {
        "bool": pa.bool_(),
        "int": pa.int64(),
        "float": pa.float64(),
        "string": pa.string(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamp_tz": pa.timestamp("us", tz="UTC"),
        "binary": pa.binary(),
    }.get(kind)


def write_parquet(
    records: Iterable[Mapping[str, Any]],
    path: Path,
    batch_rows: int = PARQUET_BATCH_ROWS,
    widen_ints: bool = False,
) -> int:
    """Write ``records`` to ``path`` as parquet, one row group per batch; returns the row count.

    A parquet file has one schema, known before its first row group, while records may
    gain fields and widen types late. Each batch is spooled to a local Arrow IPC file as it
    comes (memory holds one batch), the schema of all of them is unified, and the spooled
    batches are then written in that schema.
    """
    try:
        import pyarrow as pa
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq
    except ImportError:
        raise FormatError(
            "format='parquet' needs pyarrow: install airflow-s3connect[parquet] (or pyarrow) on the workers."
        ) from None
    columns = _Columns(widen_ints)
    iterator = iter(records)
    rows = 0
    schemas: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="s3connect-parquet-", dir=path.parent) as spool:
        spooled: list[Path] = []
        while batch := list(islice(iterator, batch_rows)):
            values = columns.batch(batch, rows + 1)
            arrays = {}
            for name, column in values.items():
                try:
                    arrays[name] = pa.array(column, type=_arrow_type(pa, columns.kinds.get(name, "")))
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                    raise FormatError(
                        f"Records {rows + 1}-{rows + len(batch)}, field {name!r}: {exc}. Give nested values "
                        "one shape in every record."
                    ) from None
            table = pa.table(arrays)
            schemas.append(table.schema)
            spooled.append(Path(spool) / f"{len(spooled):06d}.arrow")
            with ipc.new_file(str(spooled[-1]), table.schema) as sink:
                sink.write_table(table)
            rows += len(batch)
        if not rows:
            raise FormatError("No records to write: parquet needs at least one record to know its schema.")
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise FormatError(f"Records do not share one parquet schema: {exc}.") from None
        with pq.ParquetWriter(str(path), schema) as writer:
            for part in spooled:
                table = ipc.open_file(str(part)).read_all()
                for field in schema:
                    if field.name not in table.column_names:
                        table = table.append_column(field, pa.nulls(len(table), field.type))
                writer.write_table(table.select(schema.names).cast(schema))
                part.unlink()
    return rows


def _suffix_format(key: str) -> RecordFormat | None:
    """The format a key's suffix names (``.csv.gz`` before ``.gz``)."""
    name = key.rpartition("/")[2].lower()
    return next((FORMATS[s] for s in sorted(FORMATS, key=len, reverse=True) if name.endswith("." + s)), None)


def format_of(key: str) -> RecordFormat:
    """The format to read ``key`` back as, from its suffix."""
    if (known := _suffix_format(key)) is not None:
        return known
    raise FormatError(f"{key!r} has no suffix of a record format ({', '.join(FORMATS)}): pass format=... .")


def read_records(stream: IO[bytes], fmt: RecordFormat) -> Iterator[dict[str, Any]]:
    """Records from ``stream``, the reading twin of :func:`encode_records`, streamed.

    CSV values come back as the strings the file holds (CSV has no types; an empty field
    is ``""``). JSON lines keep JSON's types. Parquet is spooled to a temporary file
    (its footer is at the end) and read a row group at a time.
    """
    if fmt.name == "parquet":
        yield from _read_parquet(stream)
        return
    raw: IO[bytes] = gzip.GzipFile(fileobj=stream, mode="rb") if fmt.gzip else stream  # type: ignore[assignment]
    text = io.TextIOWrapper(io.BufferedReader(_Readable(raw)), encoding="utf-8", newline="")
    if fmt.name.startswith("csv"):
        yield from csv.DictReader(text)
        return
    for number, line in enumerate(text, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"Line {number} is not JSON ({exc.msg}): not a JSON lines file?") from None
            if not isinstance(record, dict):
                raise FormatError(f"Line {number} is a JSON {type(record).__name__}, not an object.")
            yield record


class _Readable(io.RawIOBase):
    """Any object with ``read(n)`` (an HTTP body) as the raw stream text decoding needs."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _read_parquet(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FormatError("Reading parquet needs pyarrow: install airflow-s3connect[parquet].") from None
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, CHUNK_BYTES)
        spool.seek(0)
        for batch in pq.ParquetFile(spool).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield from batch.to_pylist()
