"""What ``records=`` writes is read back exactly by the readers people use: pyarrow, DuckDB,
polars and pandas, for csv, jsonl and parquet, under the type mapping of formats.py.

A hypothesis property generates records (every type of the mapping, None anywhere, the
awkward strings: CR, LF, quotes, commas, empty) and compares what each reader returns
with what the mapping promises. Files are written by the same encoder the operator
uploads with; one end-to-end case goes through S3.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_s3connect.errors import FormatError
from airflow_s3connect.formats import content_type_for, encode_records, get_format, write_parquet

UTC = datetime.timezone.utc
EXAMPLES = 500

# -- generated records: each field one kind, None anywhere -------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12) | (
    st.sampled_from(["", "a\rb", "a\nb", "a\r\nb", '"', '""', "a,b", " lead", "trail ", "NaN", "null", "1", "true"])
)
ZONES = [
    UTC,
    datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
    datetime.timezone(datetime.timedelta(hours=-8)),
]
# Subnormal floats (below 2.2e-308) are written exactly, but pyarrow's JSON reader refuses them.
FINITE = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)
KINDS: dict[str, st.SearchStrategy[Any]] = {
    "str": TEXT,
    "int": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "float": FINITE | st.sampled_from([math.nan, math.inf, -math.inf, 0.1, -0.0, 1e300]),
    "bool": st.booleans(),
    "date": st.dates(min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2200, 1, 1)),
    "naive": st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2200, 1, 1)),
    "aware": st.datetimes(
        min_value=datetime.datetime(1900, 1, 2),
        max_value=datetime.datetime(2199, 12, 30),
        timezones=st.sampled_from(
            [
                UTC,
                datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
                datetime.timezone(datetime.timedelta(hours=-8)),
            ]
        ),
    ),
    "bytes": st.binary(max_size=12),
    "list": st.lists(st.integers(min_value=-(2**31), max_value=2**31), max_size=4),
}


@st.composite
def record_sets(draw: st.DrawFn, kinds: tuple[str, ...]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    count = draw(st.integers(min_value=1, max_value=5))
    chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=5))
    columns = {f"c{i}_{kind}": kind for i, kind in enumerate(chosen)}
    rows = [
        {name: draw(st.none() | KINDS[kind]) for name, kind in columns.items()}
        for _ in range(count)
    ]  # fmt: skip
    return columns, rows


# -- what each cell must read back as, per format --------------------------------------------


def expected_text(kind: str, value: Any) -> Any:
    """csv and jsonl: the mapping's value, with dates, datetimes, bytes and lists as text."""
    if value is None:
        return None
    if kind == "aware":
        return value.astimezone(UTC).replace(tzinfo=None)
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind == "list":
        return json.dumps(value, separators=(",", ":"))
    return value


def canon(value: Any) -> Any:
    """One Python shape for what any reader returns (numpy and pandas scalars, NaN, tz)."""
    if value is None or value is pd.NaT or (not isinstance(value, list | bytes | str) and pd.isna(value) is True):
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        return None
    if hasattr(value, "item") and not isinstance(value, bytes | str):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and value == 0.0:
        return 0.0
    return value


def compare(reader: str, got: list[dict[str, Any]], want: list[dict[str, Any]], loose: bool = False) -> None:
    """``loose``: pandas, whose defaults cannot tell None from "" nor from NaN."""
    assert len(got) == len(want), reader
    for number, (row, expected) in enumerate(zip(got, want, strict=True), start=1):
        for name, value in expected.items():
            have, value = canon(row[name]), canon(value)
            if loose and have in (None, "", "NaN") and value in (None, "", "NaN"):
                continue
            if loose and isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                continue  # pandas reads JSON numbers beyond 2**53 as floats
            assert have == value, f"{reader}: record {number}, field {name}: read {have!r}, wrote {value!r}"


# -- csv ----------------------------------------------------------------------------------------

CSV_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "date": pa.date32(),
             "naive": pa.timestamp("us"), "aware": pa.timestamp("us"), "bytes": pa.string(),
             "list": pa.string()}  # fmt: skip
CSV_DUCK = {"str": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN", "date": "DATE",
            "naive": "TIMESTAMP", "aware": "TIMESTAMPTZ", "bytes": "VARCHAR", "list": "VARCHAR"}  # fmt: skip
CSV_POLARS = {"str": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean, "date": pl.Date,
              "naive": pl.Datetime("us"), "aware": pl.String, "bytes": pl.String, "list": pl.String}  # fmt: skip


def write_text(fmt: str, rows: list[dict[str, Any]], path: Path) -> None:
    path.write_bytes(b"".join(encode_records(rows, get_format(fmt))))


def read_csv_all(path: Path, columns: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    arrow_types = {n: CSV_ARROW[k] for n, k in columns.items()}
    aware = [n for n, k in columns.items() if k == "aware"]
    table = pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types={n: (pa.timestamp("us", tz="UTC") if n in aware else t) for n, t in arrow_types.items()},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
            true_values=["true"],
            false_values=["false"],
        ),
    )
    duck_columns = ", ".join(f"'{n}': '{CSV_DUCK[k]}'" for n, k in columns.items())
    duck = duckdb.sql(
        f"SELECT * FROM read_csv('{path}', header=true, auto_detect=false, allow_quoted_nulls=false, "
        f"columns={{{duck_columns}}})"
    )
    duck_rows = [dict(zip(duck.columns, values, strict=True)) for values in duck.fetchall()]
    polars = pl.read_csv(path, schema={n: CSV_POLARS[k] for n, k in columns.items()})
    polars = polars.with_columns([pl.col(n).str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", time_unit="us") for n in aware])
    pandas_types = {"str": "string", "int": "Int64", "float": "Float64", "bool": "boolean"}
    frame = pd.read_csv(path, dtype={n: pandas_types.get(k, "string") for n, k in columns.items()},
                        keep_default_na=False, na_values=["", "NaN"])  # fmt: skip
    return {
        "pyarrow": table.to_pylist(),
        "duckdb": duck_rows,
        "polars": polars.to_dicts(),
        "pandas": frame.astype(object).to_dict("records"),
    }


def csv_expected(columns: dict[str, str], rows: list[dict[str, Any]], reader: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        cell = {}
        for name, kind in columns.items():
            value = row[name]
            if reader == "pandas" and value is not None and kind in ("date", "naive", "aware"):
                text = value.astimezone(UTC).isoformat() if kind == "aware" else value.isoformat()
                cell[name] = text
            else:
                cell[name] = expected_text(kind, value)
        out.append(cell)
    return out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=record_sets(tuple(KINDS)))
def test_csv_round_trips_in_every_reader(tmp_path: Path, data: tuple[dict[str, str], list[dict[str, Any]]]) -> None:
    columns, rows = data
    path = tmp_path / "records.csv"
    if len(columns) == 1 and any(row[name] is None for row in rows for name in columns):
        with pytest.raises(FormatError, match="makes a blank CSV line that every reader skips"):
            write_text("csv", rows, path)
        return
    write_text("csv", rows, path)
    for reader, got in read_csv_all(path, columns).items():
        compare(reader, got, csv_expected(columns, rows, reader), loose=reader == "pandas")


# -- jsonl --------------------------------------------------------------------------------------

JSON_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
              "date": pa.string(), "naive": pa.string(), "aware": pa.string(), "bytes": pa.string(),
              "list": pa.list_(pa.int64())}  # fmt: skip
JSON_DUCK = {"str": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN", "date": "VARCHAR",
             "naive": "VARCHAR", "aware": "VARCHAR", "bytes": "VARCHAR", "list": "BIGINT[]"}  # fmt: skip
JSON_POLARS = {"str": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean, "date": pl.String,
               "naive": pl.String, "aware": pl.String, "bytes": pl.String, "list": pl.List(pl.Int64)}  # fmt: skip


def json_expected(columns: dict[str, str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def one(kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "aware":
            return value.astimezone(UTC).isoformat()
        if kind in ("date", "naive"):
            return value.isoformat()
        if kind == "bytes":
            return base64.b64encode(value).decode()
        return value

    return [{name: one(kind, row[name]) for name, kind in columns.items()} for row in rows]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=record_sets(tuple(KINDS)))
def test_jsonl_round_trips_in_every_reader(tmp_path: Path, data: tuple[dict[str, str], list[dict[str, Any]]]) -> None:
    columns, rows = data
    path = tmp_path / "records.jsonl"
    if any(isinstance(v, float) and not math.isfinite(v) for row in rows for v in row.values()):
        with pytest.raises(FormatError, match="is not a JSON number"):
            write_text("jsonl", rows, path)
        return
    write_text("jsonl", rows, path)
    for line in path.read_text(encoding="utf-8").splitlines():  # splitlines: the strictest about line breaks
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    want = json_expected(columns, rows)
    schema = pa.schema([(n, JSON_ARROW[k]) for n, k in columns.items()])
    table = pa_json.read_json(path, parse_options=pa_json.ParseOptions(explicit_schema=schema))
    compare("pyarrow", table.to_pylist(), want)
    duck_columns = ", ".join(f"'{n}': '{JSON_DUCK[k]}'" for n, k in columns.items())
    duck = duckdb.sql(f"SELECT * FROM read_json('{path}', format='newline_delimited', columns={{{duck_columns}}})")
    compare("duckdb", [dict(zip(duck.columns, v, strict=True)) for v in duck.fetchall()], want)
    frame = pl.read_ndjson(path, schema={n: JSON_POLARS[k] for n, k in columns.items()})
    compare("polars", frame.to_dicts(), want)
    lines = pd.read_json(path, lines=True, dtype=False, convert_dates=False, precise_float=True)
    got = [{n: (r.get(n) if n in r else None) for n in columns} for r in lines.astype(object).to_dict("records")]
    compare("pandas", got, want, loose=True)


# -- parquet ------------------------------------------------------------------------------------


def parquet_expected(columns: dict[str, str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def one(kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "aware":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    return [{name: one(kind, row[name]) for name, kind in columns.items()} for row in rows]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=record_sets(tuple(KINDS)), batch_rows=st.integers(min_value=1, max_value=3))
def test_parquet_round_trips_in_every_reader(
    tmp_path: Path, data: tuple[dict[str, str], list[dict[str, Any]]], batch_rows: int
) -> None:
    columns, rows = data
    path = tmp_path / "records.parquet"
    assert write_parquet(rows, path, batch_rows=batch_rows) == len(rows)
    want = parquet_expected(columns, rows)
    compare("pyarrow", pq.read_table(path).to_pylist(), want)
    duck = duckdb.sql(f"SELECT * FROM read_parquet('{path}')")
    compare("duckdb", [dict(zip(duck.columns, v, strict=True)) for v in duck.fetchall()], want)
    compare("polars", pl.read_parquet(path).to_dicts(), want)
    plain = [n for n, k in columns.items() if k in ("str", "int", "float", "bool")]
    frame = pd.read_parquet(path, columns=plain, dtype_backend="pyarrow")
    compare("pandas", frame.astype(object).to_dict("records"), [{n: r[n] for n in plain} for r in want], loose=True)


# -- what the mapping refuses, and the fixed findings ------------------------------------------


def test_parquet_schema_grows_and_never_drops_or_truncates(tmp_path: Path) -> None:
    rows = [{"x": 1}, {"x": 1.5}, {"x": 2, "y": "kept?"}]
    with pytest.raises(FormatError, match=r"Record 2, field 'x': a float value where earlier records have int"):
        write_parquet(rows, tmp_path / "a.parquet", batch_rows=1)
    write_parquet(rows, tmp_path / "b.parquet", batch_rows=1, widen_ints=True)
    assert pq.read_table(tmp_path / "b.parquet").to_pylist() == [
        {"x": 1.0, "y": None}, {"x": 1.5, "y": None}, {"x": 2.0, "y": "kept?"},
    ]  # fmt: skip
    with pytest.raises(FormatError, match=r"Record 2, field 'n': 18446744073709551616 does not fit parquet's int64"):
        write_parquet([{"n": 1}, {"n": 2**64}], tmp_path / "c.parquet")
    with pytest.raises(FormatError, match=r"Record 3, field 'v': a string value where earlier records have int"):
        write_parquet([{"v": 1}, {"v": None}, {"v": "one"}], tmp_path / "d.parquet")


def test_text_formats_keep_big_ints_and_refuse_what_json_cannot_hold(tmp_path: Path) -> None:
    write_text("csv", [{"n": 2**70}], tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_text() == f"n\n{2**70}\n"
    write_text("jsonl", [{"n": 2**70}], tmp_path / "a.jsonl")
    assert json.loads((tmp_path / "a.jsonl").read_text()) == {"n": 2**70}
    with pytest.raises(FormatError, match=r"Record 2, field 'f': nan is not a JSON number"):
        write_text("jsonl", [{"f": 1.0}, {"f": math.nan}], tmp_path / "b.jsonl")
    with pytest.raises(FormatError, match=r"Record 1, field 'o': a object cannot be written to csv"):
        write_text("csv", [{"o": object()}], tmp_path / "c.csv")


def test_the_findings_read_back_right(tmp_path: Path) -> None:
    when = datetime.datetime(2025, 1, 14, 8, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    rows = [{"text": "a\rb", "nested": {"a": 1}, "flag": True, "none": None, "empty": "", "when": when}]
    write_text("csv", rows, tmp_path / "f.csv")
    assert (tmp_path / "f.csv").read_bytes().decode() == (
        'text,nested,flag,none,empty,when\n"a\rb","{""a"":1}",true,,"",2025-01-14T07:00:00+00:00\n'
    )
    assert pd.read_csv(tmp_path / "f.csv", keep_default_na=False).shape == (1, 6)  # no extra row for the CR
    write_text("jsonl", rows, tmp_path / "f.jsonl")
    assert json.loads((tmp_path / "f.jsonl").read_text())["when"] == "2025-01-14T07:00:00+00:00"


@pytest.mark.parametrize(
    ("key", "fmt", "expected"),
    [
        ("x.csv.gz", "csv.gz", "application/gzip"),
        ("x.csv.gz", None, "application/gzip"),
        ("x.csv", None, "text/csv"),
        ("dir/x.jsonl", None, "application/x-ndjson"),
        ("x.jsonl.gz", None, "application/gzip"),
        ("x.parquet", None, "application/vnd.apache.parquet"),
        ("x.json", None, "application/json"),
        ("x.tar.gz", None, "application/gzip"),
        ("noext", None, "application/octet-stream"),
        ("x.unknown-thing", None, "application/octet-stream"),
    ],
)
def test_one_content_type_rule(key: str, fmt: str | None, expected: str) -> None:
    assert content_type_for(key, get_format(fmt) if fmt else None) == expected


def _gz_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def test_gzip_formats_are_one_gzip_member_readable_by_duckdb(tmp_path: Path) -> None:
    rows = [{"id": i, "name": f"row {i}"} for i in range(1000)]
    write_text("csv.gz", rows, tmp_path / "r.csv.gz")
    assert _gz_lines(tmp_path / "r.csv.gz")[:2] == ["id,name", "0,row 0"]
    count = duckdb.sql(f"SELECT count(*) FROM read_csv('{tmp_path / 'r.csv.gz'}', header=true)").fetchall()
    assert count == [(1000,)]
    write_text("jsonl.gz", rows, tmp_path / "r.jsonl.gz")
    assert pl.read_ndjson(gzip.decompress((tmp_path / "r.jsonl.gz").read_bytes())).height == 1000
