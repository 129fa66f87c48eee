"""Macro errors, format specs, and the safety properties (hypothesis)."""

from __future__ import annotations

import datetime
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_s3connect.errors import MacroError, PatternError
from airflow_s3connect.macros import render_key
from airflow_s3connect.patterns import compile_pattern, escape_literal

START = datetime.datetime(2025, 4, 14, 11, 23, 45, tzinfo=datetime.timezone.utc)
CONTEXT = {
    "dag": {"dag_id": "orders_export"},
    "ti": {"task_id": "load", "map_index": -1, "try_number": 1, "start_date": START},
    "dag_run": {"run_id": "scheduled__2025-04-13T00:00:00+00:00"},
    "data_interval_start": datetime.datetime(2025, 4, 13, tzinfo=datetime.timezone.utc),
    "logical_date": datetime.datetime(2025, 4, 13, tzinfo=datetime.timezone.utc),
    "params": {},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{date:%Y%m}", "202504"),  # hotglue's {date}
        ("{date}", "2025_04_14"),
        ("{date:%Y/%m/%d}/x", "2025/04/14/x"),
        ("{cursor_date_time:%Y%m%d%H}", "2025041300"),
        ("{epoch}", "1744629825"),
        ("{iso_date_time}", "2025-04-14T11:23:45Z"),
        ("{run_id}", "scheduled__2025-04-13T00-00-00-00-00"),
        ("{{literal}}/{ds}", "{literal}/2025-04-13"),
        ("exports/{tenant}/{stream_name}/{date}.{extension}", "exports/acme-corp/load/2025_04_14.csv.gz"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render_key(template, CONTEXT, tenant="acme-corp", extension="csv.gz") == expected


def test_load_time_override() -> None:
    assert render_key("{date_time}", CONTEXT, load_time=datetime.datetime(2020, 1, 2, 3, 4, 5)) == "2020_01_02_03_04_05"


@pytest.mark.parametrize(
    ("template", "values", "message"),
    [
        ("{tenat}", {}, r"Unknown macro \{tenat\}\. Did you mean \{tenant\}\? Valid macros: date_time, "),
        ("{nothing_like_it}", {}, r"Unknown macro \{nothing_like_it\}\. Valid macros:"),
        ("{tenant}", {}, r"No value for \{tenant\}: pass tenant=.*DAG param 'tenant'.*connection's Tenant"),
        ("{extension}", {}, r"No value for \{extension\}"),
        ("{tenant}", {"tenant": "a/b"}, r"Value 'a/b' of \{tenant\} is not safe in a key"),
        ("{tenant}", {"tenant": ".."}, r"Value '\.\.' of \{tenant\} is not safe"),
        ("{stream_name}", {"stream_name": "x\ny"}, r"is not safe in a key"),
        ("{relative_path}", {"relative_path": "a/../b"}, r"relative_path.*not safe"),
        ("{tenant:%Y}", {"tenant": "a"}, r"only date macros take a format spec"),
        ("{tenant!r}", {"tenant": "a"}, r"conversions are not supported"),
        ("{tenant", {"tenant": "a"}, r"Malformed template"),
        ("{date}", {"colour": "red"}, r"Unknown macro value \{colour\}"),
    ],
)
def test_errors(template: str, values: dict[str, str], message: str) -> None:
    with pytest.raises(MacroError, match=message):
        render_key(template, CONTEXT, **values)


def test_cursor_without_interval_is_explained() -> None:
    context = {k: v for k, v in CONTEXT.items() if k not in ("data_interval_start", "logical_date")}
    with pytest.raises(MacroError, match="data interval or logical date"):
        render_key("{cursor_year}", context)


def test_relative_path_keeps_directories() -> None:
    assert render_key("in/{relative_path}", CONTEXT, relative_path="a/b/c.csv") == "in/a/b/c.csv"


@pytest.mark.parametrize(
    ("pattern", "prefix", "yes", "no"),
    [
        (
            "datasource/{YYYYMMDD}/file_{YYYYMM}_{zz}.csv",
            "datasource/",
            "datasource/20250414/file_202504_x.csv",
            "datasource/2025041/file_202504_x.csv",
        ),
        ("logs/*.gz", "logs/", "logs/a.gz", "logs/sub/a.gz"),
        ("logs/**.gz", "logs/", "logs/sub/a.gz", "logs/a.gz.txt"),
        ("a/**/b.csv", "a/", "a/b.csv", "a/xb.csv"),
        ("in/file?.csv", "in/file", "in/file1.csv", "in/file12.csv"),
        ("in/[!x]*.csv", "in/", "in/a.csv", "in/x.csv"),
        ("in/[ab].csv", "in/", "in/b.csv", "in/c.csv"),
        ("{YYYY}/{MM}/{DD}/{HH}", "", "2025/04/14/11", "2025/4/14/11"),
        ("plain/key.csv", "plain/key.csv", "plain/key.csv", "plain/key.csvx"),
    ],
)
def test_patterns(pattern: str, prefix: str, yes: str, no: str) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.prefix == prefix
    assert compiled.matches(yes)
    assert not compiled.matches(no)


def test_date_parts() -> None:
    found = compile_pattern("datasource/{YYYYMMDD}/file_{YYYYMM}_{zz}.csv").match(
        "datasource/20250414/file_202504_eu.csv"
    )
    assert found is not None
    assert found.date_parts == {"YYYYMMDD": "20250414", "YYYYMM": "202504"}
    assert found.groups["zz"] == "eu"


@pytest.mark.parametrize(
    ("pattern", "start_after"),
    [
        ("landing/{YYYY}/{MM}/{DD}/*.csv", "landing/2026/11/03"),
        ("{YYYY}-{MM}-{DD}T{HH}.json", "2026-11-03T07"),
        ("datasource/{YYYYMMDD}/file_{YYYYMM}_{zz}.csv", "datasource/20261103"),  # the second date is not the order
        ("d{YYYYMM}{DD}/x", "d20261103"),
        ("{YYYY}/{DD}/x", "2026"),  # a day without its month does not sort
        ("{MM}/{YYYY}/x", None),  # months before years: keys do not sort by date
        ("a/{tenant}/{YYYY}/x", None),
        ("x/*.csv", None),
        ("plain.csv", None),
    ],
)
def test_patterns_that_start_with_dates_skip_older_keys(pattern: str, start_after: str | None) -> None:
    compiled = compile_pattern(pattern)
    moment = datetime.datetime(2026, 11, 3, 7, 30)
    assert compiled.start_after(moment) == start_after
    if start_after is not None:  # every key of that date or later sorts after it, every older one before
        older = moment - datetime.timedelta(days=400)
        assert moment.strftime(compiled.date_order or "") > older.strftime(compiled.date_order or "")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("a/[bc", "never closed"), ("a/{YYYY", "never closed"), ("a/}x", "no opening"), ("a/{1x}", "not a mask name")],
)
def test_pattern_errors(pattern: str, message: str) -> None:
    with pytest.raises(PatternError, match=message):
        compile_pattern(pattern)


def test_macro_values_are_literal_inside_patterns() -> None:
    pattern = compile_pattern("in/" + escape_literal("ac*me?[1]") + "/*.csv")
    assert pattern.matches("in/ac*me?[1]/x.csv")
    assert not pattern.matches("in/acXme!1/x.csv")


SEGMENT = st.text(min_size=0, max_size=12)
LITERAL = st.from_regex(r"[a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8}){0,3}/", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(prefix=LITERAL, tenant=SEGMENT, stream=SEGMENT, tail=st.sampled_from(["", "/{date}.csv", "-{uuid}"]))
def test_rendered_key_never_escapes_its_literal_prefix(prefix: str, tenant: str, stream: str, tail: str) -> None:
    template = prefix + "{tenant}/{stream_name}" + tail
    try:
        key = render_key(template, CONTEXT, tenant=tenant, stream_name=stream)
    except MacroError:
        return
    assert key.startswith(prefix)
    rest = key[len(prefix) :].split("/")
    assert ".." not in rest
    assert "." not in rest
    assert "" not in rest
    assert not re.search(r"[\x00-\x1f\x7f]", key)


GLOB_PIECES = st.lists(
    st.sampled_from(["a", "b", "/", "*", "**", "?", "[ab]", "[!a]", "{YYYY}", "{x}", "-", ".csv", "**/"]),
    min_size=1,
    max_size=8,
)
KEYS = st.text(alphabet="ab/-.csv0123456789", min_size=0, max_size=24)


@settings(max_examples=500, deadline=None)
@given(pieces=GLOB_PIECES, key=KEYS)
def test_literal_prefix_never_excludes_a_match(pieces: list[str], key: str) -> None:
    pattern = compile_pattern("".join(pieces))
    if pattern.matches(key):
        assert key.startswith(pattern.prefix)


def test_deferred_per_object_macros_render_in_a_second_pass() -> None:
    from airflow_s3connect.macros import MacroValues, render

    first = render(
        "out/{tenant}/{{raw}}/{relative_path}.{extension}/{date:%Y}/{uuid}",
        MacroValues(CONTEXT, {"tenant": "t{x}"}),
        defer=("relative_path", "extension", "uuid"),
    )
    # Braces of values and literals stay escaped; deferred macros stay as macros.
    assert first == "out/t{{x}}/{{raw}}/{relative_path}.{extension}/2025/{uuid}"
    second = [render(first, MacroValues(CONTEXT, {"relative_path": f"a/b{i}.csv", "extension": "csv"})) for i in (1, 2)]
    assert [s.rsplit("/", 1)[0] for s in second] == [
        "out/t{x}/{raw}/a/b1.csv.csv/2025",
        "out/t{x}/{raw}/a/b2.csv.csv/2025",
    ]
    assert second[0].rsplit("/", 1)[1] != second[1].rsplit("/", 1)[1]  # one {uuid} per object
