"""The admin's path is safe and honest: the Test button answers quickly, tests the store it
is given, names the connection the user typed, and agrees with the setup page's policy and
with ``s3connect check``."""

from __future__ import annotations

import fnmatch
import html
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from airflow_s3connect import client as client_module
from airflow_s3connect.hooks.s3connect import PROBE_SEGMENT, S3ConnectHook
from tests.conftest import BUCKET, REGION
from tests.support.api_server import api, request
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.moto_server import IamFactory, MotoServer
from tests.support.stores import Store
from tests.test_setup_cli import run


class BlackHole:
    """A TCP port that accepts connections and never answers, as a firewalled store does."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for held in self.accepted:
            held.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def test_test_button_gives_up_on_a_black_holed_endpoint_within_15_seconds(
    black_hole: BlackHole, make_conn: Callable[..., str]
) -> None:
    """Defaults of 60 s read timeout and 5 attempts would hold the UI's request for 300 s."""
    conn_id = make_conn("hole", "AKIA1", "s", bucket=BUCKET, region_name=REGION, endpoint_url=black_hole.url)
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    assert (hook.settings.read_timeout, hook.settings.max_attempts) == (60, 5)
    started = time.monotonic()
    ok, message = hook.test_connection()
    elapsed = time.monotonic() - started
    assert not ok
    assert message.startswith(f"ListObjectsV2 got no answer from {black_hole.url}")
    assert elapsed < 15, elapsed
    assert len(black_hole.accepted) == 2  # two attempts, each waited 5 s


def test_test_button_without_bucket_tests_the_custom_endpoint_never_aws_sts(
    iam: IamFactory, make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sts(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("STS must not be called for a custom endpoint")

    monkeypatch.setattr(client_module, "build_sts_client", no_sts)
    user = iam.user("no-perms", [])
    conn_id = make_conn("store_only", user.key, user.secret, region_name=REGION, endpoint_url=iam.server.url)
    wrong = make_conn("store_wrong", user.key, "not-the-secret", region_name=REGION, endpoint_url=iam.server.url)
    iam.enforce()
    with iam.server.recording() as rec:
        ok, message = S3ConnectHook(s3connect_conn_id=conn_id).test_connection()
    assert ok, message
    assert message.startswith(f"Connected: 127.0.0.1:{iam.server.url.rsplit(':', 1)[1]} accepted the credentials")
    assert "ListBuckets is denied, which no operator needs" in message
    assert [(r.method, r.path) for r in rec.requests] == [("GET", "/")]
    ok, message = S3ConnectHook(s3connect_conn_id=wrong).test_connection()
    assert not ok
    assert "Secret Access Key does not match" in message


def test_test_button_route_names_the_connection_id_the_user_typed(api_server: str) -> None:
    """Airflow tests under a random transient id; the message names the typed one."""
    body = {
        "connection_id": "partner_dropbox",
        "conn_type": "s3connect",
        "login": "AKIA1",
        "password": "s",
        "extra": json.dumps({"region_name": "Not A Region"}),
    }
    answer = api(api_server, "/api/v2/connections/test", body)
    assert answer["status"] is False
    assert answer["message"].startswith("Connection 'partner_dropbox', field 'region_name'"), answer["message"]


# -- the setup page, the Test button and s3connect check agree -----------------------------------


def _page_policy(api_server: str, conn_id: str, operations: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    query = f"?conn_id={quote(conn_id)}" + "".join(f"&operations={op}" for op in operations)
    status, body = request(api_server, "/s3connect/" + query)
    assert status == 200
    page = body.decode()
    found = re.search(r"<pre id='policy'>(.*?)</pre>", page, re.S)
    assert found, page
    return json.loads(html.unescape(found.group(1))), page


def _string_like(patterns: list[str], value: str) -> bool:
    """IAM's StringLike: ``*`` any run of characters (``/`` included), ``?`` one character."""
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def test_setup_page_offers_environment_connections_with_their_own_values(api_server: str) -> None:
    _, body = request(api_server, "/s3connect/")
    assert "<option value='env_partner'>" in body.decode()
    policy, page = _page_policy(api_server, "env_partner")
    listing, objects = policy["Statement"]
    # exports/{tenant}/{date} with the connection's tenant=acme: acme only, not every tenant.
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["exports/acme/*/*"]}}
    assert objects["Resource"] == "arn:aws:s3:::env-dropbox/exports/acme/*/*"
    assert "s3:DeleteObject" not in objects["Action"]  # nothing destructive unless ticked
    assert "value='delete'>" in page
    assert "value='delete' checked" not in page


@pytest.mark.parametrize(
    ("path_prefix", "tenant", "listed"),
    [("deliveries/{tenant}", None, f"deliveries/{PROBE_SEGMENT}/"), ("exports/{tenant}/{date}", "acme", None)],
)
def test_a_role_built_from_the_setup_page_passes_the_test_button(
    api_server: str,
    iam: IamFactory,
    make_conn: Callable[..., str],
    path_prefix: str,
    tenant: str | None,
    listed: str | None,
) -> None:
    extra: dict[str, Any] = {"bucket": BUCKET, "path_prefix": path_prefix, "region_name": REGION}
    if tenant:
        extra["tenant"] = tenant
    conn_id = f"page_role_{len(path_prefix)}"
    api(api_server, "/api/v2/connections", {"connection_id": conn_id, "conn_type": "s3connect",
                                             "extra": json.dumps(extra)})  # fmt: skip
    policy, _ = _page_policy(api_server, conn_id, ("get", "list"))
    base = iam.user("worker", ["sts:AssumeRole"])
    role = iam.role("from-page", [], trusted=base.arn)
    iam.server.admin_client("iam").put_role_policy(
        RoleName="from-page", PolicyName="page", PolicyDocument=json.dumps(policy)
    )
    make_conn(conn_id, base.key, base.secret, auth_type="assume_role", role_arn=role,
              endpoint_url=iam.server.url, sts_endpoint_url=iam.server.url, **extra)  # fmt: skip
    iam.enforce()
    with iam.server.recording() as rec:
        ok, message = S3ConnectHook(s3connect_conn_id=conn_id).test_connection()
    assert ok, message
    (listing,) = [r for r in rec.s3()]
    prefix = listing.query["prefix"][0]
    if listed:
        assert prefix == listed
    else:
        assert prefix == f"exports/acme/{PROBE_SEGMENT}/"
    # moto does not evaluate s3:prefix conditions: check the listing against the policy here.
    granted = policy["Statement"][0]["Condition"]["StringLike"]["s3:prefix"]
    assert _string_like(granted, prefix)
    operator_listing = prefix.replace(PROBE_SEGMENT, "2025_01_14" if tenant else "acme")
    assert _string_like(granted, operator_listing)


def test_check_probes_a_macro_prefix_like_the_test_button(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    extra = {"region_name": REGION, "endpoint_url": iam.server.url, "bucket": BUCKET, "path_prefix": "in/{tenant}"}
    conn_id = make_conn("macro_check", iam.admin.key, iam.admin.secret, **extra)
    iam.enforce()
    with iam.server.recording() as rec:
        code, report, _ = run("check", "--conn-id", conn_id)
    assert code == 0, report
    assert {e["result"] for e in report["actions"].values()} == {"allowed"}
    keys = {r.path.split("/", 2)[2] for r in rec.s3() if r.path.count("/") > 1}
    assert keys
    assert all(k.startswith(f"in/{PROBE_SEGMENT}/.s3connect-check/") for k in keys), keys


def test_check_reports_a_store_refusing_a_probe_as_a_failure(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    proxy = FaultProxy(moto.url).start()
    try:
        conn_id = make_conn("refusing", "AKIA1", "s", bucket=BUCKET, region_name=REGION, endpoint_url=proxy.url,
                            addressing_style="path", max_attempts=1)  # fmt: skip
        proxy.schedule(Fault("501", "PutObject", times=None))
        _, report, table = run("check", "--conn-id", conn_id)
    finally:
        proxy.stop()
    put = report["actions"]["s3:PutObject"]
    assert put["result"] == "error"
    assert put["detail"] == "the store answered 501 NotImplemented; operations needing s3:PutObject fail too"
    assert report["operations"]["put"] is False
    assert report["operations"]["list"] is True
    assert "s3:PutObject     error" in table


def test_check_probes_deletes_with_the_batch_request_delete_sends(
    moto: MotoServer, make_conn: Callable[..., str]
) -> None:
    """A store refusing DeleteObjects (Swift without Content-MD5) was reported "delete works":
    the probe was one DeleteObject, a request Delete never sends."""
    proxy = FaultProxy(moto.url).start()
    try:
        conn_id = make_conn("no_batch", "AKIA1", "s", bucket=BUCKET, region_name=REGION, endpoint_url=proxy.url,
                            addressing_style="path", max_attempts=1)  # fmt: skip
        proxy.schedule(Fault("501", "DeleteObjects", times=None))
        _, report, table = run("check", "--conn-id", conn_id)
    finally:
        proxy.stop()
    assert report["actions"]["s3:DeleteObject"]["result"] == "error"
    assert report["operations"]["delete"] is False
    assert report["operations"]["archive"] is False
    assert report["operations"]["put"] is True
    assert "delete           does not work" in table


_VERSIONS = {"s3:GetObjectVersion": "allowed", "s3:DeleteObjectVersion": "allowed"}
#: What ``check`` finds of versions and restores per store: RGW 16 has no archive tier to
#: restore from. Swift's s3api answers version "null" (the probe's: every object's version in
#: an unversioned bucket) as the current object; a named version it refuses (tested in
#: tests/test_versions_and_archives.py).
VERSIONS_AND_RESTORES = {
    "moto": {**_VERSIONS, "s3:RestoreObject": "allowed"},
    "rgw-http": {**_VERSIONS, "s3:RestoreObject": "error"},
    "rgw-https": {**_VERSIONS, "s3:RestoreObject": "error"},
    "swift": {**_VERSIONS, "s3:RestoreObject": "error"},
}


def test_check_of_a_store_refusing_conditional_puts(store: Store, make_conn: Callable[..., str]) -> None:
    """Swift answers 501 to any conditional PUT: the probe was reported "put does not work"
    though Put works. There the plain PutObject Put sends decides, its object deleted at once."""
    bucket = store.new_bucket("s3c-check")
    fields = store.conn(bucket, path_prefix="team")
    conn_id = make_conn(f"check_{store.name.replace('-', '_')}", fields["login"], fields["password"],
                        **fields["extra"])  # fmt: skip
    code, report, table = run("check", "--conn-id", conn_id)
    assert code == 0, report
    results = {a: e["result"] for a, e in report["actions"].items()}
    assert {a: results.pop(a) for a in ("s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject")} == (
        dict.fromkeys(("s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"), "allowed")
    )
    # Versions and restores are the store's to have: where it has none, what needs them does not work.
    assert results == VERSIONS_AND_RESTORES[store.name], report["actions"]
    unprobed = ("get-version", "delete-version", "restore", "watch-sqs")
    basics = {op: works for op, works in report["operations"].items() if op not in unprobed}
    assert all(works is True for works in basics.values()), table
    assert report["operations"]["watch-sqs"] is None  # SQS is not probed: unknown
    put = report["actions"]["s3:PutObject"]["detail"]
    if store.create_only:
        assert put.startswith("probe answered ")  # 412 or 404: nothing written
    else:
        assert put.startswith("the store refuses conditional PUTs (NotImplemented), so overwrite=False is refused")
        assert put.endswith("wrote an empty probe object, and deleted it")
    assert store.admin.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # nothing left
