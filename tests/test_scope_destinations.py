"""Where objects go is never narrowed: a destination above the scope, or onto its own
source, is refused before anything is read or written.

A listing prefix above the scope is narrowed to the scope (listing less than asked is
harmless); a destination cannot be, since the keys it would produce are not the ones the
caller asked for: an archive under ``tenants/`` narrowed to ``tenants/acme/`` once
overwrote an in-scope object with the archived one and deleted the source.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_s3connect.errors import ArgumentError, ScopeError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.scope import Scope
from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.moto_server import MotoServer

SCOPE = Scope(BUCKET, "tenants/acme/")


@pytest.mark.parametrize(
    "prefix",
    [
        "s3://s3connect-test/tenants",
        "s3://s3connect-test/",
        "s3://s3connect-test/tenants/acme",
        "s3://other-bucket/tenants/acme/a",
    ],
)
def test_a_destination_above_or_beside_the_scope_is_refused(prefix: str) -> None:
    with pytest.raises(ScopeError):
        SCOPE.resolve_destination(prefix)
    assert SCOPE.resolve_prefix("s3://s3connect-test/tenants/acme/x").key == "tenants/acme/x"
    assert SCOPE.resolve_destination("archive").key == "tenants/acme/archive"
    assert SCOPE.resolve_destination("s3://s3connect-test/tenants/acme/done/").key == "tenants/acme/done/"


GET_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_s3connect.operators import S3GetObjectOperator

with DAG("dest_archive", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    S3GetObjectOperator(task_id="get", s3connect_conn_id="dest", prefix="in/", local_dir="LOCAL",
                        after="archive", archive_prefix=ARCHIVE)
"""


@pytest.fixture
def dest(moto: MotoServer, make_conn: Callable[..., str], airflow_db: Path) -> MotoServer:
    make_conn("dest", "AKIA1", "s", bucket=BUCKET, path_prefix="tenants/acme", region_name=REGION,
              endpoint_url=moto.url)  # fmt: skip
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="tenants/acme/in/a.csv", Body=b"new")
    admin.put_object(Bucket=BUCKET, Key="tenants/acme/a.csv", Body=b"in-scope object, not to be overwritten")
    return moto


@pytest.mark.parametrize(
    ("archive", "words"),
    [
        ("s3://s3connect-test/tenants", "outside the connection's scope"),
        ("s3://s3connect-test/tenants/acme/in", "archived onto itself"),
        ("in/", "archived onto itself"),
    ],
)
def test_get_refuses_an_archive_outside_the_scope_or_onto_its_source(
    dest: MotoServer, tmp_path: Path, archive: str, words: str
) -> None:
    path = write_dag("dest_archive", GET_DAG.replace("LOCAL", str(tmp_path)).replace("ARCHIVE", repr(archive)))
    with dest.recording() as rec:
        result = run_dag(path, "dest_archive", datetime.datetime(2025, 1, 2, tzinfo=datetime.timezone.utc))
    assert result.state == "failed"
    assert [r.method for r in rec.s3() if r.method != "GET" or "list-type" not in r.query] == []  # listing at most
    admin = dest.admin_client("s3")
    assert admin.get_object(Bucket=BUCKET, Key="tenants/acme/a.csv")["Body"].read().startswith(b"in-scope")
    assert admin.get_object(Bucket=BUCKET, Key="tenants/acme/in/a.csv")["Body"].read() == b"new"
    assert list(tmp_path.iterdir()) == []


def _hook(moto: MotoServer, make_conn: Callable[..., str]) -> S3ConnectHook:
    make_conn("dest_hook", "AKIA1", "s", bucket=BUCKET, path_prefix="tenants/acme", region_name=REGION,
              endpoint_url=moto.url)  # fmt: skip
    return S3ConnectHook(s3connect_conn_id="dest_hook")


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda h: h.copy(source_prefix="in/", target_prefix="in/"), ArgumentError, "copied onto itself"),
        (lambda h: h.copy(source_key="in/a.csv", target_prefix="in/"), ArgumentError, "copied onto itself"),
        (lambda h: h.copy(source_key="in/a.csv", target_prefix="s3://s3connect-test/tenants/"), ScopeError, "scope"),
        (lambda h: h.upload("s3://s3connect-test/tenants/globex/x", data=b"x"), ScopeError, "scope"),
        (lambda h: h.upload("s3://s3connect-test/tenants/acme", data=b"x"), ScopeError, "scope"),
    ],
)
def test_hook_writes_are_refused_outside_the_scope_or_onto_their_source(
    moto: MotoServer, make_conn: Callable[..., str], call: Callable[[Any], Any], error: type, words: str
) -> None:
    hook = _hook(moto, make_conn)
    admin = moto.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="tenants/acme/in/a.csv", Body=b"new")
    with moto.recording() as rec, pytest.raises(error, match=words):
        call(hook)
    writes = [r for r in rec.s3() if r.method in ("PUT", "POST", "DELETE")]
    assert writes == []
    assert admin.get_object(Bucket=BUCKET, Key="tenants/acme/in/a.csv")["Body"].read() == b"new"
