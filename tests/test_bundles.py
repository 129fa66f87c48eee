"""S3ConnectDagBundle: the prefix synced whole, ETag-exact and versioned, on a real moto server.

What a DAG processor sees (``refresh``, ``path``, ``get_current_version``) and what a worker
asked for one version rebuilds, each in its own bundle storage folder (two machines).
Request counts come from moto's recording.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.bundles import S3ConnectDagBundle
from airflow_s3connect.errors import S3ConnectError, ScopeError
from airflow_s3connect.snapshots import MANIFEST_FOLDER, Snapshots
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer

PREFIX = "teams/acme/"


@pytest.fixture
def bundle_conn(moto: MotoServer, make_conn: Callable[..., str]) -> str:
    return make_conn("dags", "AKIAEXAMPLE", "secret", endpoint_url=moto.url, region_name=REGION, bucket=BUCKET,
                     path_prefix=PREFIX, addressing_style="path")  # fmt: skip


def _machine(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine's bundle storage folder (Airflow's ``[dag_processor] dag_bundle_storage_path``)."""
    folder = tmp_path / name
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH", str(folder))
    return folder


def _bundle(conn: str, version: str | None = None) -> S3ConnectDagBundle:
    return S3ConnectDagBundle(name="acme-dags", s3connect_conn_id=conn, prefix="dags/", version=version)


def _put(moto: MotoServer, relative: str, body: bytes) -> dict[str, Any]:
    return dict(moto.admin_client("s3").put_object(Bucket=BUCKET, Key=f"{PREFIX}dags/{relative}", Body=body))


def _delete(moto: MotoServer, relative: str) -> None:
    moto.admin_client("s3").delete_object(Bucket=BUCKET, Key=f"{PREFIX}dags/{relative}")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _version(bundle: S3ConnectDagBundle) -> str:
    found = bundle.get_current_version()
    return str(getattr(found, "version", found))


def _gets(rec: Any) -> int:
    return sum(1 for r in rec.s3() if r.method == "GET" and "list-type" not in r.query)


def _lists(rec: Any) -> int:
    return sum(1 for r in rec.s3() if r.method == "GET" and "list-type" in r.query)


def test_sync_is_exact_atomic_and_costs_one_listing_when_idle(
    moto: MotoServer, bundle_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(tmp_path, "processor", monkeypatch)
    _put(moto, "a.py", b"A = 1\n")
    _put(moto, "team/b.py", b"B = 1\n")
    _put(moto, "team/deep/c.py", b"C = 1\n")
    bundle = _bundle(bundle_conn)
    bundle.initialize()
    first = _version(bundle)
    assert _tree(bundle.path) == {"a.py": b"A = 1\n", "team/b.py": b"B = 1\n", "team/deep/c.py": b"C = 1\n"}
    assert bundle.path.is_symlink()
    old_tree = bundle.path.resolve()

    with moto.recording() as idle:
        bundle.refresh()
        bundle.refresh()
    assert (_lists(idle), _gets(idle), len(idle.s3())) == (2, 0, 2)  # one listing per idle refresh, nothing else
    assert _version(bundle) == first

    _put(moto, "team/b.py", b"B = 2\n")  # the same size: a new ETag
    _delete(moto, "team/deep/c.py")  # removed at depth
    with moto.recording() as changed:
        bundle.refresh()
    assert _gets(changed) == 1  # only the changed file; a.py is linked from the version before
    assert [r.method for r in changed.s3()].count("PUT") == 1  # the new version's manifest
    second = _version(bundle)
    assert second != first
    assert _tree(bundle.path) == {"a.py": b"A = 1\n", "team/b.py": b"B = 2\n"}
    assert (bundle.path / "team" / "deep").exists() is False
    # The old version's folder is untouched: a parse or a task that opened it reads it whole.
    assert _tree(old_tree) == {"a.py": b"A = 1\n", "team/b.py": b"B = 1\n", "team/deep/c.py": b"C = 1\n"}
    manifest = json.loads(
        moto.admin_client("s3")
        .get_object(Bucket=BUCKET, Key=f"{PREFIX}dags/{MANIFEST_FOLDER}{second}.json")["Body"]
        .read()
    )
    assert sorted(manifest["files"]) == ["a.py", "team/b.py"]
    assert MANIFEST_FOLDER.rstrip("/") not in {p.name for p in bundle.path.iterdir()}  # never part of the tree


def test_a_worker_rebuilds_the_version_of_its_run_after_s3_changed(
    moto: MotoServer, bundle_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a versioned bucket: the worker (another machine) asked for the first version gets
    exactly its files, by version id, after the DAG processor moved to a second one."""
    moto.admin_client("s3").put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    _machine(tmp_path, "processor", monkeypatch)
    _put(moto, "flow.py", b"STEP = 'old'\n")
    _put(moto, "nested/lib.py", b"X = 1\n")
    processor = _bundle(bundle_conn)
    processor.initialize()
    first = _version(processor)
    _put(moto, "flow.py", b"STEP = 'new'\n")
    _delete(moto, "nested/lib.py")
    processor.refresh()
    assert _version(processor) != first

    _machine(tmp_path, "worker", monkeypatch)
    worker = _bundle(bundle_conn, version=first)
    worker.initialize()
    assert worker.path == Path(worker.versions_dir) / first
    assert _tree(worker.path) == {"flow.py": b"STEP = 'old'\n", "nested/lib.py": b"X = 1\n"}
    assert _version(worker) == first
    with pytest.raises(S3ConnectError, match="pinned to version"):
        worker.refresh()
    again = _bundle(bundle_conn, version=first)
    with moto.recording() as rec:
        again.initialize()  # already on this machine: no request
    assert rec.s3() == []


def test_an_old_version_on_an_unversioned_bucket_fails_clearly(
    moto: MotoServer, bundle_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(tmp_path, "processor", monkeypatch)
    _put(moto, "flow.py", b"old")
    processor = _bundle(bundle_conn)
    processor.initialize()
    first = _version(processor)
    _put(moto, "flow.py", b"new")
    _machine(tmp_path, "worker", monkeypatch)
    with pytest.raises(S3ConnectError, match="Turn on versioning on the bucket"):
        _bundle(bundle_conn, version=first).initialize()
    assert not (Path(_bundle(bundle_conn, version=first).versions_dir) / first).exists()  # nothing half-built
    with pytest.raises(S3ConnectError, match="has no manifest in S3"):
        _bundle(bundle_conn, version="0" * 20).initialize()


def test_a_file_replaced_during_a_sync_starts_it_again(
    moto: MotoServer, bundle_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing saw one ETag, the GET finds another: the pin fails, the sync lists again
    and the tree holds the newer bytes; no half-applied version."""
    _machine(tmp_path, "processor", monkeypatch)
    _put(moto, "flow.py", b"v1")
    listed = Snapshots.list
    calls = {"n": 0}

    def racing(self: Snapshots) -> Any:
        manifest = listed(self)
        calls["n"] += 1
        if calls["n"] == 1:
            _put(moto, "flow.py", b"v2, longer")  # replaced between the listing and the GET
        return manifest

    monkeypatch.setattr(Snapshots, "list", racing)
    bundle = _bundle(bundle_conn)
    bundle.initialize()
    assert calls["n"] == 2
    assert _tree(bundle.path) == {"flow.py": b"v2, longer"}
    assert [p.name for p in Path(bundle.versions_dir).iterdir() if p.name.startswith(".staging")] == []


def test_keys_that_cannot_be_paths_are_left_out_and_named(
    moto: MotoServer,
    bundle_conn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _machine(tmp_path, "processor", monkeypatch)
    _put(moto, "good.py", b"ok")
    _put(moto, "bad//double.py", b"no")
    _put(moto, "../escape.py", b"no")
    _put(moto, "folder/", b"")
    bundle = _bundle(bundle_conn)
    with caplog.at_level(logging.WARNING, logger="airflow_s3connect.snapshots"):
        bundle.initialize()
    assert _tree(bundle.path) == {"good.py": b"ok"}
    left = [r.getMessage() for r in caplog.records if "Left out of the bundle" in r.getMessage()]
    assert len(left) == 2
    assert any("bad//double.py" in m for m in left)
    assert not (tmp_path / "processor" / "escape.py").exists()


def test_the_scope_holds_for_the_bundle(
    moto: MotoServer, bundle_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(tmp_path, "processor", monkeypatch)
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="teams/globex/dags/theirs.py", Body=b"x")
    outside = S3ConnectDagBundle(name="b", s3connect_conn_id=bundle_conn, prefix="s3://other-bucket/dags/")
    with pytest.raises(ScopeError):
        outside.initialize()
    _put(moto, "mine.py", b"y")
    # A prefix above the connection's is narrowed to it: another team's files are never read.
    above = S3ConnectDagBundle(name="c", s3connect_conn_id=bundle_conn, prefix="s3://" + BUCKET + "/teams/")
    with moto.recording() as rec:
        above.initialize()
    assert _tree(above.path) == {"dags/mine.py": b"y"}
    assert all("globex" not in r.url for r in rec.s3())
    mine = _bundle(bundle_conn)
    mine.initialize()
    assert _tree(mine.path) == {"mine.py": b"y"}
    assert "secret" not in repr(mine)


def test_the_bundle_policy_is_exactly_enough(iam: Any, make_conn: Callable[..., str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """``s3connect policy --operations bundle``, IAM enforced: the DAG processor syncs and
    publishes, a worker rebuilds a version by its ids; without s3:PutObject the sync names it."""
    from airflow_s3connect.errors import AccessDeniedError
    from airflow_s3connect.iam import least_privilege_policy

    admin = iam.server.admin_client("s3")
    admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    admin.put_object(Bucket=BUCKET, Key="dags/flow.py", Body=b"old")
    users = iam.server.admin_client("iam")

    def connection(name: str, drop: str | None = None) -> str:
        policy = least_privilege_policy(BUCKET, "dags/", ["bundle"])
        for statement in policy["Statement"]:
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            statement["Action"] = [a for a in actions if a != drop] or ["s3:GetBucketTagging"]
        users.create_user(UserName=name)
        users.put_user_policy(UserName=name, PolicyName="bundle", PolicyDocument=json.dumps(policy))
        key = users.create_access_key(UserName=name)["AccessKey"]
        return make_conn(name, key["AccessKeyId"], key["SecretAccessKey"], endpoint_url=iam.server.url,
                         region_name=REGION, bucket=BUCKET, addressing_style="path")  # fmt: skip

    good, unpublishing = connection("bundler"), connection("no_put", drop="s3:PutObject")
    iam.enforce()
    _machine(tmp_path, "processor", monkeypatch)
    processor = _bundle(good)
    processor.initialize()
    first = _version(processor)
    iam.server.set_auth(enforced=False)
    admin.put_object(Bucket=BUCKET, Key="dags/flow.py", Body=b"new")
    iam.enforce()
    processor.refresh()
    _machine(tmp_path, "worker", monkeypatch)
    worker = _bundle(good, version=first)
    worker.initialize()
    assert _tree(worker.path) == {"flow.py": b"old"}
    _machine(tmp_path, "other", monkeypatch)
    with pytest.raises(AccessDeniedError, match="s3:PutObject"):
        _bundle(unpublishing).initialize()
