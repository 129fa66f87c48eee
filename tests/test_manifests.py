"""Result shapes and manifests, without S3: one shape per ``results`` whatever the count."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO, Any

import pytest

from airflow_s3connect.errors import ArgumentError, S3ConnectError
from airflow_s3connect.manifests import (
    ResultSink,
    TooManyResultsError,
    check_results,
    entry_location,
    manifest_slice,
    read_entries,
)


def sink(tmp_path: Path, results: Any, cap: int = 3, batch_size: int = 2) -> ResultSink:
    path = tmp_path / "m.jsonl"

    def opener() -> tuple[IO[str], str]:
        return open(path, "w"), str(path)

    return ResultSink(results, cap, batch_size, opener)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_list_returns_the_results_themselves_at_any_count_up_to_the_cap(tmp_path: Path, count: int) -> None:
    collected = sink(tmp_path, "list")
    for i in range(count):
        collected.add(f"k{i}", 10)
    collected.close()
    assert collected.result() == [f"k{i}" for i in range(count)]
    assert (collected.count, collected.bytes) == (count, 10 * count)
    assert not (tmp_path / "m.jsonl").exists()


def test_list_refuses_one_result_past_the_cap_with_what_to_do(tmp_path: Path) -> None:
    collected = sink(tmp_path, "list")
    for i in range(3):
        collected.add(i)
    with pytest.raises(TooManyResultsError, match=r"max_xcom_objects=3.*results='manifest'.*results='batches'"):
        collected.add(3)
    assert issubclass(TooManyResultsError, S3ConnectError)


def test_bounded_plans_in_full_or_refuses_before_anything_is_done(tmp_path: Path) -> None:
    assert sink(tmp_path, "list").bounded(iter(range(3)), "objects") == [0, 1, 2]
    pulled: list[int] = []

    def planned() -> Any:
        for i in range(10**6):
            pulled.append(i)
            yield i

    with pytest.raises(
        TooManyResultsError,
        match=r"More than 3 objects to download, and results=.list. returns at most max_xcom_objects=3",
    ):
        sink(tmp_path, "list").bounded(planned(), "objects to download")
    assert len(pulled) == 4  # the plan is read one past the cap, not to its end
    assert list(sink(tmp_path, "manifest").bounded(iter(range(10)), "x")) == list(range(10))


@pytest.mark.parametrize("count", [0, 1, 5])
def test_manifest_always_writes_a_file_and_returns_one_dict(tmp_path: Path, count: int) -> None:
    collected = sink(tmp_path, "manifest")
    for i in range(count):
        collected.add({"key": f"k{i}"}, 7)
    collected.close()
    assert collected.result() == {"manifest": str(tmp_path / "m.jsonl"), "count": count, "bytes": 7 * count}
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [f"k{i}" for i in range(count)]


def test_batches_slice_one_manifest_and_read_back_exactly_their_lines(tmp_path: Path) -> None:
    collected = sink(tmp_path, "batches", batch_size=2)
    for i in range(5):
        collected.add(f"k{i}", i)
    collected.close()
    where = str(tmp_path / "m.jsonl")
    batches = collected.result()
    assert batches == [
        {"manifest": where, "start": 0, "count": 2, "bytes": 1},
        {"manifest": where, "start": 2, "count": 2, "bytes": 5},
        {"manifest": where, "start": 4, "count": 1, "bytes": 4},
    ]
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    read = [list(read_entries(iter(lines), *manifest_slice(batch)[1:])) for batch in batches]
    assert read == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    empty = sink(tmp_path, "batches")
    empty.close()
    assert empty.result() == []


def test_a_whole_manifest_reference_or_a_location_reads_every_line() -> None:
    assert manifest_slice({"manifest": "s3://b/m.jsonl", "count": 9, "bytes": 1}) == ("s3://b/m.jsonl", 0, None)
    assert manifest_slice("s3://b/m.jsonl") == ("s3://b/m.jsonl", 0, None)
    assert list(read_entries(io.StringIO('"a"\n"b"\n'), 0, None)) == ["a", "b"]
    with pytest.raises(ArgumentError, match=r"manifest=.*results='manifest'"):
        manifest_slice({"count": 1})
    with pytest.raises(ArgumentError, match="Line 2 of the manifest is not JSON"):
        list(read_entries(io.StringIO('"a"\nnot json\n'), 0, None))


def test_entries_name_objects_by_uri_or_key_and_directories_are_left_out() -> None:
    assert entry_location("tree/a.csv") == "tree/a.csv"
    assert entry_location({"key": "a", "uri": "s3://b/p/a"}) == "s3://b/p/a"
    assert entry_location("tree/") is None
    assert entry_location({"prefix": "tree/", "uri": "s3://b/tree/"}) is None
    with pytest.raises(ArgumentError, match="names no object"):
        entry_location({"key": "a"})


def test_results_and_batch_size_are_checked() -> None:
    assert check_results("batches", 10) == "batches"
    with pytest.raises(ArgumentError, match="results='all'"):
        check_results("all", 10)
    with pytest.raises(ArgumentError, match="batch_size=0"):
        check_results("list", 0)
