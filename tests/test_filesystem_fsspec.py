"""``s3connect://`` as fsspec users meet it: URLs that name the connection (fsspec.open,
pandas, pyarrow, polars, DuckDB), and the cases fsspec's own suite does not cover: reads past
the end, transactions, folders and their markers, the scope's root, create-only opens,
out-of-scope walks, missing buckets and batched deletes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_s3connect.errors import S3ConnectError, ScopeError
from airflow_s3connect.hooks.fs import S3ConnectConnectionFileSystem
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer

ROWS = 50_000


@pytest.fixture
def conn(moto: MotoServer, make_conn: Callable[..., str]) -> str:
    """A connection scoped to ``team/`` of the tests' bucket."""
    return make_conn("fsconn", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION, bucket=BUCKET,
                     path_prefix="team")  # fmt: skip


@pytest.fixture
def fs(conn: str) -> S3ConnectConnectionFileSystem:
    return S3ConnectConnectionFileSystem(conn)


def _frame() -> Any:
    import pandas as pd

    return pd.DataFrame(
        {"id": range(ROWS), "name": [f"row {i}" for i in range(ROWS)], "x": [i / 7 for i in range(ROWS)]}
    )


def test_readers_open_urls_that_name_the_connection(conn: str, moto: MotoServer) -> None:
    import duckdb
    import fsspec
    import pandas as pd
    import polars as pl
    import pyarrow.parquet as pq
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    frame = _frame()
    base = f"s3connect://{conn}@{BUCKET}/team/readers"
    with fsspec.open(f"{base}/hello.txt", "wb") as f:
        f.write(b"hello")
    with fsspec.open(f"{base}/hello.txt", "rb") as f:
        assert f.read() == b"hello"
    frame.to_csv(f"{base}/rows.csv", index=False)
    frame.to_parquet(f"{base}/rows.parquet", index=False)
    admin = moto.admin_client("s3")
    assert admin.head_object(Bucket=BUCKET, Key="team/readers/rows.parquet")["ContentLength"] > 0

    pd.testing.assert_frame_equal(pd.read_csv(f"{base}/rows.csv"), frame)
    pd.testing.assert_frame_equal(pd.read_parquet(f"{base}/rows.parquet"), frame)
    arrow = PyFileSystem(FSSpecHandler(S3ConnectConnectionFileSystem(conn)))
    assert pq.read_table(f"{BUCKET}/team/readers/rows.parquet", filesystem=arrow).to_pandas().equals(frame)
    # polars' own readers know only their built-in schemes: through pyarrow it opens the URL
    # with fsspec, or it reads a file fsspec opened.
    polars = pl.read_parquet(f"{base}/rows.parquet", use_pyarrow=True)
    assert polars["name"].to_list() == frame["name"].to_list()
    with fsspec.open(f"{base}/rows.csv", "rb") as f:
        assert pl.read_csv(f)["x"].to_list() == frame["x"].to_list()
    db = duckdb.connect()
    db.register_filesystem(S3ConnectConnectionFileSystem(conn))
    total = db.sql(f"select count(*), sum(id) from read_parquet('s3connect://{BUCKET}/team/readers/rows.parquet')")
    assert total.fetchall() == [(ROWS, sum(range(ROWS)))]
    with pytest.raises(ScopeError):  # the URL's connection is scoped to team/
        pd.read_csv(f"s3connect://{conn}@{BUCKET}/other/rows.csv")


def test_writers_write_through_the_filesystem(conn: str) -> None:
    """pyarrow, polars and DuckDB write parquet and CSV through ``s3connect://``; pandas
    reads each back."""
    import duckdb
    import fsspec
    import pandas as pd
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    frame = _frame()
    fs = S3ConnectConnectionFileSystem(conn)
    base = f"s3connect://{conn}@{BUCKET}/team/writers"
    arrow = PyFileSystem(FSSpecHandler(fs))
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), f"{BUCKET}/team/writers/arrow.parquet",
                   filesystem=arrow)  # fmt: skip
    polars = pl.from_pandas(frame)
    with fsspec.open(f"{base}/polars.parquet", "wb") as f:
        polars.write_parquet(f)
    with fsspec.open(f"{base}/polars.csv", "wb") as f:
        polars.write_csv(f)
    db = duckdb.connect()
    db.register_filesystem(fs)
    db.register("frame", frame)
    db.sql(f"copy frame to 's3connect://{BUCKET}/team/writers/duck.parquet' (format parquet)")
    db.sql(f"copy frame to 's3connect://{BUCKET}/team/writers/duck.csv' (format csv, header)")
    for name in ("arrow.parquet", "polars.parquet", "duck.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(f"{base}/{name}"), frame, check_dtype=False)
    for name in ("polars.csv", "duck.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(f"{base}/{name}"), frame, check_dtype=False)


def test_a_partial_column_read_of_parquet_reads_ranges(conn: str, moto: MotoServer) -> None:
    """One column of a 50,000-row file (6 row groups): ranged GETs of the footer and that
    column's pages, counted at the server (pandas builds its own filesystem from the URL)."""
    import pandas as pd

    url = f"s3connect://{conn}@{BUCKET}/team/cols/rows.parquet"
    _frame().to_parquet(url, index=False, row_group_size=10_000)
    with moto.recording() as recording:
        names = pd.read_parquet(url, columns=["id"])
    assert names["id"].tolist() == list(range(ROWS))
    gets = [r for r in recording.s3() if r.method == "GET" and "list-type" not in r.url]
    assert gets
    assert all("range" in {h.lower() for h in r.headers} for r in gets)  # never the whole object
    assert len(recording.s3()) <= 8, [(r.method, r.url) for r in recording.s3()]


@pytest.mark.parametrize("cache_type", ["none", "bytes", "readahead", "blockcache", "background", "all"])
def test_a_read_past_the_end_ends_at_it(fs: S3ConnectConnectionFileSystem, cache_type: str) -> None:
    fs.pipe_file(f"{BUCKET}/team/end.bin", b"0123456789")
    with fs.open(f"{BUCKET}/team/end.bin", "rb", cache_type=cache_type, block_size=4) as f:
        f.seek(6)
        assert f.read(100) == b"6789"
        assert f.read(1) == b""


def test_transactions_upload_at_commit_and_nothing_when_discarded(fs: S3ConnectConnectionFileSystem) -> None:
    with fs.transaction:
        with fs.open(f"{BUCKET}/team/tx/kept.txt", "wb") as f:
            f.write(b"kept")
        assert not fs.exists(f"{BUCKET}/team/tx/kept.txt")  # not before the transaction completes
    assert fs.cat_file(f"{BUCKET}/team/tx/kept.txt") == b"kept"

    def abandoned() -> None:
        with fs.transaction:
            with fs.open(f"{BUCKET}/team/tx/dropped.txt", "wb") as f:
                f.write(b"dropped")
            raise RuntimeError("abandoned")

    with pytest.raises(RuntimeError, match="abandoned"):
        abandoned()
    assert not fs.exists(f"{BUCKET}/team/tx/dropped.txt")


def test_recursive_rm_removes_folder_markers_in_one_batch(fs: S3ConnectConnectionFileSystem, moto: MotoServer) -> None:
    """300 files and the ``dir/`` markers a console creates: one listing and one
    DeleteObjects, no request per path, and the folder is gone (its marker was the phantom
    that kept it)."""
    admin = moto.admin_client("s3")
    for name in ("team/batch/", "team/batch/sub/"):
        admin.put_object(Bucket=BUCKET, Key=name, Body=b"")
    for i in range(300):
        admin.put_object(Bucket=BUCKET, Key=f"team/batch/{'sub/' if i % 2 else ''}{i:03d}.txt", Body=b"x")
    operations: list[str] = []
    fs.client.meta.events.register("before-call.s3", lambda model, **_: operations.append(model.name))
    fs.rm(f"{BUCKET}/team/batch", recursive=True)
    assert operations == ["ListObjectsV2", "DeleteObjects"]
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="team/batch").get("KeyCount", 0) == 0
    assert not fs.exists(f"{BUCKET}/team/batch")


def test_rm_of_the_scope_root_empties_it_without_leaving_the_scope(
    fs: S3ConnectConnectionFileSystem, moto: MotoServer
) -> None:
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="outside.txt", Body=b"not ours")
    for key in ("team/a.txt", "team/sub/b.txt"):
        admin.put_object(Bucket=BUCKET, Key=key, Body=b"ours")
    fs.rm(f"{BUCKET}/team", recursive=True)
    keys = [o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == ["outside.txt"]


def test_folders_have_no_times_and_rmdir_refuses_a_full_one(fs: S3ConnectConnectionFileSystem) -> None:
    fs.pipe_file(f"{BUCKET}/team/d/f.txt", b"f")
    with pytest.raises(IsADirectoryError, match="no modification time"):
        fs.modified(f"{BUCKET}/team/d")
    with pytest.raises(IsADirectoryError):
        fs.created(f"{BUCKET}/team/d")
    assert fs.modified(f"{BUCKET}/team/d/f.txt") is not None
    with pytest.raises(OSError, match="not empty"):
        fs.rmdir(f"{BUCKET}/team/d")


def test_create_only_open(fs: S3ConnectConnectionFileSystem) -> None:
    with fs.open(f"{BUCKET}/team/x/once.txt", "xb") as f:
        f.write(b"first")
    with pytest.raises(FileExistsError, match="creates only new objects"):
        fs.open(f"{BUCKET}/team/x/once.txt", "xb")
    assert fs.cat_file(f"{BUCKET}/team/x/once.txt") == b"first"


def test_out_of_scope_is_an_error_for_walks_and_folders(fs: S3ConnectConnectionFileSystem) -> None:
    """fsspec's walk reads any OSError as "no such folder": a refused path looked empty."""
    for call in (
        lambda: list(fs.walk(f"{BUCKET}/other")),
        lambda: fs.find(f"{BUCKET}/other"),
        lambda: fs.mkdir(f"{BUCKET}/other/new"),
        lambda: fs.makedirs(f"{BUCKET}/other/new", exist_ok=True),
        lambda: fs.ls("another-bucket/team"),
    ):
        with pytest.raises(ScopeError):
            call()


def test_exists_of_a_missing_bucket_is_false(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("anybucket", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION)
    fs = S3ConnectConnectionFileSystem(conn_id)
    assert fs.exists("no-such-bucket-s3c/key.txt") is False
    assert fs.exists("no-such-bucket-s3c") is False


def test_storage_options_other_than_ours_are_refused(conn: str) -> None:
    import fsspec

    with pytest.raises(ValueError, match="takes 'conn_id' and 'overwrite'"):
        fsspec.filesystem("s3connect", conn_id=conn, key="AKIA…", secret="…")

    def write(data: bytes) -> None:
        with fsspec.open(f"s3connect://{conn}@{BUCKET}/team/o.txt", "wb", overwrite=False) as f:
            f.write(data)

    write(b"1")
    with pytest.raises(FileExistsError):
        write(b"2")


def test_find_lists_flat_and_keeps_keys_that_are_not_tidy_paths(
    fs: S3ConnectConnectionFileSystem, moto: MotoServer
) -> None:
    """A key with ``//`` was a phantom folder entry in find, and the real key was missing."""
    admin = moto.admin_client("s3")
    for key in ("team/f/a.txt", "team/f//double.txt", "team/f/sub/b.txt", "team/f/empty/"):
        admin.put_object(Bucket=BUCKET, Key=key, Body=b"" if key.endswith("/") else b"x")
    operations: list[str] = []
    fs.client.meta.events.register("before-call.s3", lambda model, **_: operations.append(model.name))
    assert fs.find(f"{BUCKET}/team/f") == [f"{BUCKET}/team/f//double.txt", f"{BUCKET}/team/f/a.txt",
                                          f"{BUCKET}/team/f/sub/b.txt"]  # fmt: skip
    assert operations == ["ListObjectsV2"]
    assert fs.cat_file(f"{BUCKET}/team/f//double.txt") == b"x"
    folders = [
        n for n, e in fs.find(f"{BUCKET}/team/f", withdirs=True, detail=True).items() if e["type"] == "directory"
    ]
    assert folders == [f"{BUCKET}/team/f", f"{BUCKET}/team/f/", f"{BUCKET}/team/f/empty", f"{BUCKET}/team/f/sub"]
    fs.rm(f"{BUCKET}/team/f", recursive=True)
    assert admin.list_objects_v2(Bucket=BUCKET, Prefix="team/f").get("KeyCount", 0) == 0


def test_mv_moves_exactly_what_it_copied(fs: S3ConnectConnectionFileSystem, moto: MotoServer) -> None:
    """fsspec's mv deleted the whole source after copying it: into its own subfolder that
    lost everything, and with maxdepth it lost what lay deeper."""
    admin = moto.admin_client("s3")
    for key in ("team/mv/b.txt", "team/mv/deep/c.txt"):
        admin.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    with pytest.raises(S3ConnectError, match="into itself"):
        fs.mv(f"{BUCKET}/team/mv", f"{BUCKET}/team/mv/inner", recursive=True)
    with pytest.raises(IsADirectoryError, match="recursive=True"):
        fs.mv(f"{BUCKET}/team/mv", f"{BUCKET}/team/moved")
    fs.mv(f"{BUCKET}/team/mv", f"{BUCKET}/team/moved", recursive=True, maxdepth=1)
    left = {o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET, Prefix="team/").get("Contents", [])}
    assert "team/mv/deep/c.txt" in left  # deeper than maxdepth: not copied, so not deleted
    assert "team/mv/b.txt" not in left
    bodies = {admin.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in left}
    assert bodies == {b"team/mv/b.txt", b"team/mv/deep/c.txt"}  # nothing lost


def test_rm_of_a_glob_and_of_single_files_asks_nothing_per_match(
    fs: S3ConnectConnectionFileSystem, moto: MotoServer
) -> None:
    admin = moto.admin_client("s3")
    for i in range(20):
        admin.put_object(Bucket=BUCKET, Key=f"team/glob/{i:02d}.{'csv' if i % 2 else 'txt'}", Body=b"x")
    admin.put_object(Bucket=BUCKET, Key="team/glob/sub/deep.csv", Body=b"x")
    operations: list[str] = []
    fs.client.meta.events.register("before-call.s3", lambda model, **_: operations.append(model.name))
    fs.rm(f"{BUCKET}/team/glob/*.csv")
    # fsspec's glob looks at its root (a HEAD and a listing, twice); nothing per match of ten
    assert len(operations) <= 6
    assert operations.count("DeleteObjects") == 1
    left = {o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET, Prefix="team/glob/")["Contents"]}
    assert left == {f"team/glob/{i:02d}.txt" for i in range(0, 20, 2)} | {"team/glob/sub/deep.csv"}
    operations.clear()
    fs.rm([f"{BUCKET}/team/glob/00.txt", f"{BUCKET}/team/glob/02.txt"])
    assert operations.count("DeleteObjects") == 1
    assert operations.count("HeadObject") == 2
    with pytest.raises(FileNotFoundError, match="missing"):
        fs.rm(f"{BUCKET}/team/glob/missing.txt")


def test_keys_that_are_not_paths_never_break_a_folder(fs: S3ConnectConnectionFileSystem, moto: MotoServer) -> None:
    """``team//x`` listed the folder as its own child; ``team/../y`` made walk, du and get
    of the whole scope fail. They are skipped by folder listings and found by find."""
    admin = moto.admin_client("s3")
    for key in ("team/w/a.txt", "team/w//dbl", "team/w/../y"):
        admin.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    assert fs.ls(f"{BUCKET}/team/w", detail=False) == [f"{BUCKET}/team/w/a.txt"]
    assert [files for _, _, files in fs.walk(f"{BUCKET}/team/w")] == [["a.txt"]]
    assert fs.du(f"{BUCKET}/team/w") == 2  # a.txt and //dbl (one flat listing)
    assert f"{BUCKET}/team/w//dbl" in fs.find(f"{BUCKET}/team/w")


def test_walk_of_the_bucket_above_the_scope_is_refused(fs: S3ConnectConnectionFileSystem) -> None:
    fs.pipe_file(f"{BUCKET}/team/k.txt", b"k")
    for path in (BUCKET, f"{BUCKET}/"):
        with pytest.raises(ScopeError):
            list(fs.walk(path))


def test_create_only_copies_probe_inside_the_scope(conn: str, moto: MotoServer) -> None:
    from airflow_s3connect import conditional

    conditional._cache.clear()
    fs = S3ConnectConnectionFileSystem(conn, overwrite=False)
    fs.pipe_file(f"{BUCKET}/team/c/a.txt", b"a")
    conditional._cache.clear()  # the copy probes again, under the connection's prefix
    fs.cp(f"{BUCKET}/team/c/a.txt", f"{BUCKET}/team/c/copy.txt")
    assert fs.cat_file(f"{BUCKET}/team/c/copy.txt") == b"a"
    with pytest.raises(FileExistsError):
        fs.cp(f"{BUCKET}/team/c/a.txt", f"{BUCKET}/team/c/copy.txt")


def test_rmdir_removes_an_empty_folders_marker(fs: S3ConnectConnectionFileSystem, moto: MotoServer) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="team/empty/", Body=b"")
    assert fs.isdir(f"{BUCKET}/team/empty")
    fs.rmdir(f"{BUCKET}/team/empty")
    assert moto.admin_client("s3").list_objects_v2(Bucket=BUCKET, Prefix="team/empty").get("KeyCount", 0) == 0


def test_a_url_naming_another_connection_or_a_password_is_refused(
    fs: S3ConnectConnectionFileSystem, make_conn: Callable[..., str], moto: MotoServer
) -> None:
    import fsspec

    fs.pipe_file(f"{BUCKET}/team/u.txt", b"u")
    make_conn("other_conn", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION, bucket=BUCKET)
    with pytest.raises(ScopeError, match="names connection 'other_conn'"):
        fs.info(f"s3connect://other_conn@{BUCKET}/team/u.txt")
    assert fs.cat_file(f"s3connect://fsconn@{BUCKET}/team/u.txt") == b"u"
    with pytest.raises(S3ConnectError, match="names the connection only") as refused:
        fsspec.open(f"s3connect://fsconn:hunter2@{BUCKET}/team/u.txt").open()
    assert "hunter2" not in str(refused.value)


def test_an_empty_scope_is_an_empty_folder(fs: S3ConnectConnectionFileSystem) -> None:
    assert fs.ls(f"{BUCKET}/team") == []
    assert fs.isdir(f"{BUCKET}/team")
