"""A metadata catalog of a bucket/prefix: its directories, its files grouped into datasets,
and each dataset's fields, read from byte ranges only (never whole objects).

No Airflow. Datasets follow the date masks of key patterns: with ``datasource/{YYYYMMDD}/file_{zz}.csv``
the files ``datasource/20250114/file_a.csv`` and ``datasource/20250115/file_a.csv`` are one
dataset (``datasource/{YYYYMMDD}/file_a.csv``): masks of dates stay masks, other masks take
the file's value. Without patterns, date-shaped digit runs are masked the same way.

Fields come from the newest file of each dataset:
- CSV: the header line of the first ``head_bytes``, delimiter sniffed among ``,`` ``;``
  tab and ``|``; for ``.csv.gz`` the first ``head_bytes`` of the compressed file are
  inflated (a gzip stream decompresses from its start, so no more is fetched);
- JSONL (and ``.jsonl.gz``, likewise): the keys of the complete lines in the first ``head_bytes``;
- Parquet: the schema in the footer (two ranged reads at most: the tail, then the footer if
  it is longer than the tail).
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_s3connect.errors import translated
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.objects import ObjectInfo
from airflow_s3connect.patterns import DATE_MASKS, KeyPattern, compile_pattern

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HEAD_BYTES = 64 * 1024
_AUTO_MASKS = [
    (re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)"), "{YYYY}-{MM}-{DD}"),
    (re.compile(r"(?<!\d)(?:19|20)\d{6}(?!\d)"), "{YYYYMMDD}"),
    (re.compile(r"(?<!\d)(?:19|20)\d{4}(?!\d)"), "{YYYYMM}"),
    (re.compile(r"(?<!\d)(?:19|20)\d{2}(?!\d)"), "{YYYY}"),
]


def file_format(key: str) -> str | None:
    """csv, jsonl or parquet by the key's suffix, gzipped text formats included."""
    name = key.rsplit("/", 1)[-1].lower().removesuffix(".gz")
    for suffix, kind in ((".csv", "csv"), (".tsv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                         (".parquet", "parquet")):  # fmt: skip
        if name.endswith(suffix):
            return kind
    return None


def gunzip_head(head: bytes, complete: bool) -> tuple[bytes, bool]:
    """The text at the start of a gzip file from its first bytes only: (text, truncated).

    A range of compressed bytes decompresses to a prefix of the text; unless the whole
    file was fetched, that prefix is cut somewhere, so its last line is not trusted.
    """
    inflater = zlib.decompressobj(wbits=31)
    try:
        text = inflater.decompress(head, HEAD_BYTES * 16)
    except zlib.error as exc:
        raise ValueError(f"not gzip data: {exc}") from None
    return text, not (complete and inflater.eof)


def _keep_date_masks(source: str, values: Mapping[str, str]) -> str:
    """``source`` with its date masks kept and its other masks replaced by their values."""
    return re.sub(
        r"\{([A-Za-z_][A-Za-z0-9_]*)\}",
        lambda m: m.group(0) if m.group(1) in DATE_MASKS else values[m.group(1)],
        source,
    )


def dataset_of(key: str, patterns: Iterable[KeyPattern]) -> str:
    """The dataset ``key`` belongs to (relative key in, masked name out)."""
    for pattern in patterns:
        match = pattern.match(key)
        if match is not None:
            return _keep_date_masks(pattern.source, match.groups)
    masked = key
    for regex, mask in _AUTO_MASKS:
        masked = regex.sub(mask, masked)
    return masked


def csv_fields(head: bytes, truncated: bool) -> tuple[list[str], str]:
    """Header fields and delimiter of a CSV head (``truncated``: the range cut its last line)."""
    text = head.decode("utf-8-sig", errors="replace")
    lines = text.splitlines()
    complete = lines[:-1] if truncated and len(lines) > 1 else lines
    sample = "\n".join(complete[:20]) or text
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = max(",;\t|", key=lambda d: sample.split("\n", 1)[0].count(d))
    header = next(csv.reader(io.StringIO(sample), delimiter=delimiter), [])
    return [h.strip() for h in header], delimiter


def jsonl_fields(head: bytes, truncated: bool) -> list[str]:
    """Keys of the JSON objects on the complete lines of a JSONL head, in first-seen order."""
    lines = head.split(b"\n")
    if truncated:
        lines = lines[:-1]  # cut by the range
    seen: dict[str, None] = {}
    for line in lines:
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                seen.update(dict.fromkeys(record))
    return list(seen)


class _TailFile(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only the tail is known: what pyarrow reads
    of a Parquet file to get its schema. Reading before the tail fails loudly."""

    def __init__(self, size: int, tail: bytes) -> None:
        self.size, self.tail, self.pos = size, tail, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = offset + (0, self.pos, self.size)[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        start = self.pos - (self.size - len(self.tail))
        if start < 0:
            raise OSError("outside the fetched footer")
        chunk = self.tail[start : start + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def read_range(client: S3Client, bucket: str, key: str, first: int, last: int) -> bytes:
    with translated("GetObject", bucket, key):
        return client.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")["Body"].read()


def parquet_fields(client: S3Client, bucket: str, key: str, size: int) -> list[dict[str, str]]:
    """The schema from the footer: ``[{name, type}]``."""
    import pyarrow.parquet as pq

    tail = read_range(client, bucket, key, max(0, size - HEAD_BYTES), size - 1)
    if tail[-4:] != b"PAR1":
        raise ValueError(f"s3://{bucket}/{key} does not end like a Parquet file")
    footer = struct.unpack("<I", tail[-8:-4])[0] + 8
    if footer > len(tail):
        tail = read_range(client, bucket, key, size - footer, size - 1)
    schema = pq.read_schema(_TailFile(size, tail))
    return [{"name": f.name, "type": str(f.type)} for f in schema]


@dataclass
class Dataset:
    name: str
    format: str | None
    files: int = 0
    bytes: int = 0
    first_modified: str = ""
    last_modified: str = ""
    newest_key: str = ""
    newest_size: int = 0
    fields: list[dict[str, str]] = field(default_factory=list)
    delimiter: str | None = None
    error: str | None = None


def build_catalog(
    client: S3Client,
    bucket: str,
    base: str,
    patterns: Iterable[str] = (),
    head_bytes: int = HEAD_BYTES,
    max_objects: int = 100_000,
) -> dict[str, Any]:
    """List ``base`` once, group into datasets, read each dataset's fields from ranges."""
    compiled = [compile_pattern(p) for p in patterns]
    directories: set[str] = set()
    datasets: dict[str, Dataset] = {}
    scanned = 0
    for entry in Lister(client, bucket, ListQuery(base=base, max_objects=max_objects)):
        if not isinstance(entry, ObjectInfo):  # no delimiter: only folder markers' prefixes
            continue
        scanned += 1
        relative = entry.key[len(base) :]
        parts = relative.split("/")[:-1]
        directories.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
        name = dataset_of(relative, compiled)
        group = datasets.setdefault(name, Dataset(name, file_format(relative)))
        group.files += 1
        group.bytes += entry.size
        modified = entry.last_modified.isoformat() if entry.last_modified else ""
        group.first_modified = min(group.first_modified or modified, modified)
        if modified >= group.last_modified:
            group.last_modified, group.newest_key, group.newest_size = modified, entry.key, entry.size
    for group in datasets.values():
        _read_fields(client, bucket, group, head_bytes)
    return {
        "bucket": bucket,
        "prefix": base,
        "objects": scanned,
        "directories": sorted(directories),
        "datasets": [vars(d) for d in sorted(datasets.values(), key=lambda d: d.name)],
    }


def _read_fields(client: S3Client, bucket: str, group: Dataset, head_bytes: int) -> None:
    try:
        if group.format == "parquet":
            group.fields = parquet_fields(client, bucket, group.newest_key, group.newest_size)
        elif group.format in ("csv", "jsonl") and group.newest_size:
            head = read_range(client, bucket, group.newest_key, 0, min(head_bytes, group.newest_size) - 1)
            truncated = group.newest_size > head_bytes
            if group.newest_key.lower().endswith(".gz"):
                head, truncated = gunzip_head(head, complete=not truncated)
            if group.format == "csv":
                names, group.delimiter = csv_fields(head, truncated)
                group.fields = [{"name": n} for n in names]
            else:
                group.fields = [{"name": n} for n in jsonl_fields(head, truncated)]
    except Exception as exc:
        group.error = f"{type(exc).__name__}: {exc}"
