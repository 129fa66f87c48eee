"""Local paths of downloads: what may be written under a directory, and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.downloads import Downloader, DownloadTask
from airflow_s3connect.errors import LocalPathError
from airflow_s3connect.local import LocalTree
from airflow_s3connect.objects import MiB, TransferConfig
from tests.conftest import BUCKET
from tests.support.moto_server import MotoServer

SMALL = TransferConfig(max_concurrency=4, chunk_size=5 * MiB, multipart_threshold=5 * MiB)


def test_unwritable_target_and_file_in_the_way(moto: MotoServer, client: Any, tmp_path: Path) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="w/a.txt", Body=b"a")
    (tmp_path / "blocker").write_text("I am a file")
    with pytest.raises(LocalPathError, match="remove files that sit where directories must go"):
        list(Downloader(client, BUCKET, SMALL).download([DownloadTask("w/a.txt", tmp_path / "blocker" / "a.txt")]))
    (tmp_path / "a.txt").mkdir()
    with pytest.raises(LocalPathError, match="is a directory"):
        list(Downloader(client, BUCKET, SMALL).download([DownloadTask("w/a.txt", tmp_path / "a.txt")]))
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []


@pytest.mark.parametrize(
    "key",
    ["in/../../etc/passwd", "in//abs", "in/a\\..\\b", "in/./x", "in/"],
)
def test_keys_that_would_escape_local_dir_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(LocalPathError, match="cannot be saved under"):
        LocalTree(tmp_path).path_for(key, "in/")


def test_a_symlinked_directory_leading_outside_local_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link").symlink_to(outside)
    tree = LocalTree(tmp_path / "in")
    with pytest.raises(LocalPathError, match=r"would land outside .* through a symlink"):
        tree.path_for("p/link/file.csv", "p/")
    assert tree.path_for("p/other/file.csv", "p/") == tmp_path / "in" / "other" / "file.csv"


def test_local_path_keeps_structure(tmp_path: Path) -> None:
    assert LocalTree(tmp_path).path_for("in/a/b/c.csv", "in/") == tmp_path / "a" / "b" / "c.csv"
