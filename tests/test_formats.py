"""Record formats written for uploads: round trips and errors."""

from __future__ import annotations

import datetime
import gzip
import json
from pathlib import Path

import pytest

from airflow_s3connect.errors import FormatError
from airflow_s3connect.formats import FORMATS, encode_records, write_parquet

RECORDS = [{"id": 1, "name": "a,b", "when": datetime.date(2025, 4, 14)}, {"id": 2, "name": 'q"uote'}]


def test_text_formats_round_trip() -> None:
    csv_text = b"".join(encode_records(iter(RECORDS), FORMATS["csv"])).decode()
    assert csv_text == 'id,name,when\n1,"a,b",2025-04-14\n2,"q""uote",\n'
    gz = b"".join(encode_records(iter(RECORDS), FORMATS["csv.gz"]))
    assert gzip.decompress(gz).decode() == csv_text
    lines = gzip.decompress(b"".join(encode_records(iter(RECORDS), FORMATS["jsonl.gz"]))).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "name": "a,b", "when": "2025-04-14"},
        {"id": 2, "name": 'q"uote'},
    ]


def test_format_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"Record 2 has fields \['extra'\] that the first record lacks"):
        list(encode_records(iter([{"a": 1}, {"a": 2, "extra": 3}]), FORMATS["csv"]))
    with pytest.raises(FormatError, match="Record 1 is a list, not a dict"):
        list(encode_records(iter([[1, 2]]), FORMATS["jsonl"]))  # type: ignore[list-item]
    with pytest.raises(FormatError, match="parquet needs at least one record"):
        write_parquet(iter([]), tmp_path / "x.parquet")


def test_parquet_batches_into_row_groups(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = write_parquet(({"id": i, "v": f"r{i}"} for i in range(25)), tmp_path / "x.parquet", batch_rows=10)
    assert rows == 25
    meta = pq.ParquetFile(tmp_path / "x.parquet").metadata
    assert (meta.num_rows, meta.num_row_groups) == (25, 3)
