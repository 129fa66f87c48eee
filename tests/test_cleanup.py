"""The cleanup coordinator: one place that knows what a transfer opened, reports it, names
temporary files, and carries the one reason a transfer was cancelled for."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_s3connect.cleanup import Cleanup, OpenResources, temp_path
from airflow_s3connect.errors import TransferInterrupted


def test_open_uploads_and_reservations_are_reported_as_they_start_and_end() -> None:
    reported: list[OpenResources] = []
    cleanup = Cleanup(on_open=reported.append)
    cleanup.upload_started("u1", "a.bin")
    cleanup.upload_started("u2", "b.bin")
    cleanup.upload_ended("u1")
    cleanup.upload_ended("unknown")  # nothing to report
    assert [r["uploads"] for r in reported] == [{"u1": "a.bin"}, {"u1": "a.bin", "u2": "b.bin"}, {"u2": "b.bin"}]
    assert cleanup.take_uploads() == {"u2": "b.bin"}
    assert reported[-1] == {"uploads": {}, "reservations": {}}
    assert cleanup.open_uploads == {}
    cleanup.reservation_made("c.bin", '"e"')
    assert reported[-1] == {"uploads": {}, "reservations": {"c.bin": '"e"'}}
    cleanup.reservation_ended("other.bin")  # nothing to report
    assert len(reported) == 5
    assert cleanup.take_reservations() == {"c.bin": '"e"'}
    assert reported[-1] == {"uploads": {}, "reservations": {}}


def test_one_cancel_with_its_reason() -> None:
    cleanup = Cleanup()
    cleanup.check("Copy")
    cleanup.cancel("the task was killed")
    assert cleanup.cancelled
    with pytest.raises(TransferInterrupted, match="Copy cancelled: the task was killed"):
        cleanup.check("Copy")


def test_temporary_files_are_named_for_their_owner_and_removed_by_a_retry(tmp_path: Path) -> None:
    owned = Cleanup(owner="dag.run.get.-1")
    left = owned.temp_path(tmp_path / "sub" / "a.csv")
    assert left == tmp_path / "sub" / ".a.csv.s3connect-dag.run.get.-1.part"
    left.parent.mkdir()
    left.write_bytes(b"partial")
    other = temp_path(tmp_path / "sub" / "b.csv", "other.run.get.-1")
    other.write_bytes(b"someone else's")
    assert owned.remove_left_files(tmp_path) == [left]
    assert not left.exists()
    assert other.exists()
    assert temp_path(tmp_path / "x", None) != temp_path(tmp_path / "x", None)  # unique without an owner
    assert Cleanup().remove_left_files(tmp_path) == []
