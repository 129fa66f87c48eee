"""What Put writes, queued on an :class:`~airflow_s3connect.uploads.Uploader`: data
(bytes, text, a binary stream or an iterator of bytes) or records in a format.

No Airflow here: the Put operator and the hook's ``upload`` both queue through these, so
one object written either way has the same bytes, Content-Type and checksums.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.formats import RecordFormat, content_type_for, encode_records, write_parquet
from airflow_s3connect.uploads import ChunkStream, Uploader


def queue_data(uploader: Uploader, data: Any, key: str, fmt: RecordFormat | None = None) -> None:
    """Queue ``data`` as the object ``key``."""
    stream: IO[bytes] | ChunkStream
    if isinstance(data, str):
        stream = io.BytesIO(data.encode("utf-8"))
    elif isinstance(data, bytes | bytearray | memoryview):
        stream = io.BytesIO(bytes(data))
    elif hasattr(data, "read"):
        stream = data
    elif isinstance(data, Iterable):
        stream = ChunkStream(data)
    else:
        raise ArgumentError(
            f"data is a {type(data).__name__}: give str, bytes, a binary file object or an iterator of bytes."
        )
    uploader.put_stream(stream, key, content_type_for(key, fmt))


def queue_records(
    uploader: Uploader,
    records: Iterable[Mapping[str, Any]],
    key: str,
    fmt: RecordFormat,
    scratch: Path,
    *,
    widen_ints: bool = False,
) -> None:
    """Queue ``records`` encoded as ``fmt``: streamed for text formats; Parquet is written
    to ``scratch`` first (its footer describes the whole file)."""
    if fmt.name == "parquet":
        path = scratch / f"records-{len(list(scratch.iterdir()))}.parquet"
        write_parquet(records, path, widen_ints=widen_ints)
        uploader.put_file(path, key, content_type_for(key, fmt))
    else:
        uploader.put_stream(ChunkStream(encode_records(records, fmt)), key, content_type_for(key, fmt))
