"""The hook's and the triggers' ways in: a session, a pinned prefix, a serialized scope.

Each is a door a DAG author's code (or a row in the triggers table) can open without an
operator: all of them keep the connection's scope, and refuse before sending anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from airflow_s3connect.errors import MacroError, ScopeError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.triggers.s3object import S3ObjectTrigger
from airflow_s3connect.watch import WatchSpec
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer
from tests.support.trigger_runner import first_event

SECRET = "tenants/globex/secret.txt"


@pytest.fixture
def hook(moto: MotoServer, make_conn: Callable[..., str]) -> S3ConnectHook:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key=SECRET, Body=b"globex's")
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="tenants/acme/a.csv", Body=b"acme's")
    conn_id = make_conn(
        "doors", "AKIADOORS", "doors-secret", bucket=BUCKET, path_prefix="tenants/{tenant}", tenant="acme",
        region_name=REGION, endpoint_url=moto.url, sts_endpoint_url=moto.url,
    )  # fmt: skip
    return S3ConnectHook(s3connect_conn_id=conn_id)


def test_the_sessions_s3_clients_and_resources_are_scoped(moto: MotoServer, hook: S3ConnectHook) -> None:
    hook.pin_path_prefix("tenants/acme")
    session = hook.get_session()
    client = session.client("s3")
    assert client.get_object(Bucket=BUCKET, Key="tenants/acme/a.csv")["Body"].read() == b"acme's"
    resource = session.resource("s3")
    with moto.recording() as rec:
        with pytest.raises(ScopeError, match="tenants/globex"):
            client.get_object(Bucket=BUCKET, Key=SECRET)
        with pytest.raises(ScopeError, match="tenants/globex"):
            resource.Object(BUCKET, SECRET).get()
        with pytest.raises(ScopeError, match="with no Prefix"):
            list(resource.Bucket(BUCKET).objects.all())
        with pytest.raises(ScopeError, match="whole bucket"):
            resource.Bucket(BUCKET).delete()
        for service in ("sts", "iam", "sqs"):
            with pytest.raises(ScopeError, match=f"A {service} client is refused"):
                session.client(service)
        with pytest.raises(ScopeError, match=r"An S3 client at 'http://elsewhere\.test' is refused"):
            session.client("s3", endpoint_url="http://elsewhere.test")
        with pytest.raises(ScopeError, match="are not handed out"):
            session.get_credentials()
    assert rec.requests == []
    assert [o.key for o in resource.Bucket(BUCKET).objects.filter(Prefix="tenants/acme/")] == ["tenants/acme/a.csv"]


def test_the_session_needs_the_prefix_rendered(hook: S3ConnectHook) -> None:
    with pytest.raises(MacroError, match="has macros in path_prefix"):
        hook.get_session()


@pytest.mark.parametrize(
    ("rendered", "words"),
    [
        ("", "not an instance"),
        ("tenants", "not an instance"),
        ("tenants/globex", "not an instance"),
        ("tenants/acme/../globex", "not an instance"),
        ("tenants/acme/sub", "not an instance"),
        ("other/acme", "not an instance"),
    ],
)
def test_a_pinned_prefix_must_be_an_instance_of_the_connections(
    moto: MotoServer, hook: S3ConnectHook, rendered: str, words: str
) -> None:
    with pytest.raises(ScopeError, match=words):
        hook.pin_path_prefix(rendered)
    assert hook.pin_path_prefix("tenants/acme/") == "tenants/acme"
    assert hook.prefix_values == {}  # the connection fixes the tenant: nothing to serialize


def test_a_static_prefix_pins_only_to_itself(moto: MotoServer, make_conn: Callable[..., str]) -> None:
    conn_id = make_conn("static", "AKIA1", "s", bucket=BUCKET, path_prefix="tenants/acme", endpoint_url=moto.url)
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    for rendered in ("", "tenants", "tenants/acme/deeper", "tenants/globex"):
        with pytest.raises(ScopeError, match="not an instance"):
            hook.pin_path_prefix(rendered)
    assert hook.pin_path_prefix("tenants/acme") == "tenants/acme"


def test_a_macro_is_one_segment_when_no_connection_value_fixes_it(
    moto: MotoServer, make_conn: Callable[..., str]
) -> None:
    conn_id = make_conn("open", "AKIA1", "s", bucket=BUCKET, path_prefix="tenants/{tenant}/{date:%Y/%m}",
                        endpoint_url=moto.url)  # fmt: skip
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    for rendered in ("tenants/a/b/2025/04", "tenants/acme/2025", "tenants/../2025/04", "tenants/acme/2025/04/x"):
        with pytest.raises(ScopeError, match="not an instance"):
            hook.pin_path_prefix(rendered)
    hook.pin_path_prefix("tenants/acme/2025/04")
    assert hook.prefix_values == {"tenant": "acme", "date:%Y/%m": "2025/04"}
    with pytest.raises(ScopeError, match="not an instance"):
        hook.pin_prefix_values({"tenant": "acme/x", "date:%Y/%m": "2025/04"})


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"tenant": "globex"}, "the connection fixes it to 'acme'"),
        ({"tenant": "acme/../globex"}, "the connection fixes it to 'acme'"),
        ({}, "outside the connection's scope"),
    ],
)
def test_a_trigger_serializes_macro_values_and_cannot_widen_the_scope(
    moto: MotoServer, hook: S3ConnectHook, values: dict[str, str], words: str
) -> None:
    spec = WatchSpec(bucket=BUCKET, base="tenants/globex/", pattern="*.txt")
    trigger = S3ObjectTrigger(hook.s3connect_conn_id, values, spec.to_json(), poke_interval=0.1)
    _classpath, kwargs = trigger.serialize()
    assert "path_prefix" not in kwargs
    with moto.recording() as rec:
        event = first_event(S3ObjectTrigger(**kwargs))
    assert event["status"] == "error"
    assert event["type"] == "ScopeError"
    assert re.search(words, event["message"]), event["message"]
    assert rec.requests == []


def test_a_trigger_with_the_tasks_values_watches_inside_the_scope(moto: MotoServer, hook: S3ConnectHook) -> None:
    spec = WatchSpec(bucket=BUCKET, base="tenants/acme/", pattern="*.csv")
    event = first_event(S3ObjectTrigger(hook.s3connect_conn_id, {"tenant": "acme"}, spec.to_json(), 0.1))
    assert event["status"] == "success"
    assert [m["key"] for m in event["matches"]] == ["tenants/acme/a.csv"]
    outside = WatchSpec(bucket=BUCKET, base="tenants/globex/", pattern="*.txt")
    with moto.recording() as rec:
        event = first_event(S3ObjectTrigger(hook.s3connect_conn_id, {"tenant": "acme"}, outside.to_json(), 0.1))
    assert event["status"] == "error"
    assert rec.requests == []
