"""A real DAG run with a secret key and a session token: neither may appear anywhere the run
leaves text (task logs and console output, rendered template fields, XCom, the deferred
sensor's serialized trigger kwargs, exception texts, OpenLineage events)."""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUCKET, REGION
from tests.support.dag_runner import run_dag, write_dag
from tests.support.moto_server import MotoServer

SECRET = "wJalrXUtnFEMI-s3connect-SECRET-do-not-log"
TOKEN = "IQoJb3JpZ2luX2VjE-s3connect-TOKEN-do-not-log"

DAG_SOURCE = """
import pendulum
from pathlib import Path
from airflow.sdk import DAG
from airflow_s3connect.operators import S3GetObjectOperator, S3ListObjectsOperator, S3PutObjectOperator
from airflow_s3connect.sensors import S3ObjectSensor

def remember(context):
    Path("OUT/errors").mkdir(parents=True, exist_ok=True)
    Path("OUT/errors", context["ti"].task_id).write_text(repr(context["exception"]) + str(context["exception"]))

with DAG("s3c_secrets", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
         default_args={"on_failure_callback": remember}) as dag:
    put = S3PutObjectOperator(task_id="put", s3connect_conn_id="sec", data="hello {{ ds }}",
                              key="sec/{tenant}/hello.txt", tenant="acme")
    listing = S3ListObjectsOperator(task_id="list", s3connect_conn_id="sec", prefix="sec/")
    get = S3GetObjectOperator(task_id="get", s3connect_conn_id="sec", prefix="sec/", local_dir="OUT/files")
    missing = S3GetObjectOperator(task_id="get_missing", s3connect_conn_id="sec", key="sec/missing.csv",
                                  local_dir="OUT/files")
    wait = S3ObjectSensor(task_id="wait_deferred", s3connect_conn_id="sec", key="sec/late.csv", deferrable=True,
                          poke_interval=1, timeout=120)
    put >> listing >> get >> [missing, wait]
"""


def _rows_text(model: Any, run_id: str) -> str:
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(model).filter_by(dag_id="s3c_secrets", run_id=run_id).all()
        return json.dumps([{k: str(v) for k, v in vars(r).items() if not k.startswith("_")} for r in rows])


def test_secret_key_and_session_token_never_leave_the_connection(
    moto: MotoServer, airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    make_conn("sec", "ASIAEXAMPLETEMPORARY", SECRET, aws_session_token=TOKEN, endpoint_url=moto.url,
              region_name=REGION, bucket=BUCKET)  # fmt: skip
    caplog.set_level(logging.DEBUG)
    path = write_dag("s3c_secrets", DAG_SOURCE.replace("OUT", str(tmp_path)))
    # What the deferring sensor hands the triggerer, as dag.test receives it (recorded, then run as is).
    import airflow.sdk.definitions.dag as sdk_dag

    handed: list[str] = []
    run_inline = sdk_dag._run_inline_trigger

    def recording_inline_trigger(trigger: Any, ti: Any) -> Any:
        handed.append(json.dumps(trigger.serialize(), default=str))
        return run_inline(trigger, ti)

    monkeypatch.setattr(sdk_dag, "_run_inline_trigger", recording_inline_trigger)
    # The sensor's file arrives only after the worker's poke missed it: the trigger finds it.
    with moto.recording() as rec, moto.arrival_after_request(BUCKET, "sec/late.csv", b"late"):
        result = run_dag(path, "s3c_secrets", datetime.datetime(2025, 3, 1, tzinfo=datetime.timezone.utc))
    console = capfd.readouterr()

    states = {task: state for (task, _), state in result.task_states.items()}
    assert states == {
        "put": "success",
        "list": "success",
        "get": "success",
        "get_missing": "failed",
        "wait_deferred": "success",  # deferred; its trigger saw the late file
    }
    # The token was really used: every request of the run carried it (the arrival is the admin's).
    ours = [r for r in rec.s3() if "ASIAEXAMPLETEMPORARY" in r.headers.get("Authorization", "")]
    assert len(ours) >= 6
    assert all(r.headers.get("X-Amz-Security-Token") == TOKEN for r in ours)

    texts: dict[str, str] = {"console": console.out + console.err, "log records": caplog.text}
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    texts["log files"] = "".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file())
    texts["rendered fields"] = _rows_text(RenderedTaskInstanceFields, result.run_id)
    texts["xcom"] = _rows_text(XComModel, result.run_id)
    texts["task instances"] = _rows_text(TaskInstance, result.run_id)
    with create_session() as session:
        stored = [str(t.kwargs) for t in session.query(Trigger).all()]
    texts["triggers"] = json.dumps(stored + handed)
    texts["exceptions"] = "".join(p.read_text() for p in (tmp_path / "errors").iterdir())
    lineage = Path(os.environ["AIRFLOW_HOME"]) / "openlineage.jsonl"
    texts["openlineage"] = lineage.read_text() if lineage.exists() else ""

    # Each place was really read (a test that reads nothing cannot fail).
    assert "Listed s3://s3connect-test/sec/" in texts["console"] + texts["log files"] + texts["log records"]
    assert "hello {{ ds }}" in texts["rendered fields"] or "hello 2025-03-01" in texts["rendered fields"]
    assert "sec/acme/hello.txt" in texts["xcom"]
    assert "No object s3://s3connect-test/sec/missing.csv" in texts["exceptions"]
    assert len(handed) == 1
    assert "sec/late.csv" in handed[0]
    assert "ASIAEXAMPLETEMPORARY" not in handed[0]  # not even the key id: the trigger reads the connection
    for place, text in texts.items():
        assert SECRET not in text, f"the secret key leaked into {place}"
        assert TOKEN not in text, f"the session token leaked into {place}"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_botocore_debug_logs_carry_no_token_nor_assumed_credentials(
    moto: MotoServer, make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At DEBUG, botocore logs canonical requests (with the session token) and STS answers
    (with the assumed role's secret key and token): all redacted at the source."""
    from airflow_s3connect.hooks.s3connect import S3ConnectHook
    from airflow_s3connect.redaction import LOGGERS

    # A handler on botocore's own loggers, at DEBUG whatever Airflow's logging config set.
    collect = _Collect()
    loggers = [logging.getLogger(name) for name in LOGGERS if name.startswith("botocore")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        monkeypatch.setattr(logger, "disabled", False)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(collect)
    try:
        make_conn("sec_role", "ASIABASE", SECRET, aws_session_token=TOKEN, auth_type="assume_role",
                  role_arn="arn:aws:iam::210987654321:role/partner-reader", endpoint_url=moto.url,
                  sts_endpoint_url=moto.url, region_name=REGION, bucket=BUCKET)  # fmt: skip
        client = S3ConnectHook(s3connect_conn_id="sec_role").get_conn()
        client.put_object(Bucket=BUCKET, Key="sec/debug.txt", Body=b"x")
        assumed = client._request_signer._credentials.get_frozen_credentials()
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(collect)
            logger.setLevel(level)
    text = "\n".join(collect.lines)
    assert "CanonicalRequest" in text  # botocore did log the requests
    assert "<SessionToken>***</SessionToken>" in text  # and the STS answer, redacted
    for secret in (SECRET, TOKEN, assumed.secret_key, assumed.token):
        assert secret not in text


def test_redaction_ignores_short_values_and_keeps_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_s3connect import redaction

    monkeypatch.setattr(redaction, "_secrets", {})
    redaction.register("s", "b", None, "", "a-real-session-token-value")
    assert redaction.known() == ["a-real-session-token-value"]  # "s" would mangle every line
    record = logging.LogRecord(
        "botocore.auth",
        logging.DEBUG,
        __file__,
        1,
        "token %s in CanonicalRequest",
        ("a-real-session-token-value",),
        None,
    )
    assert redaction.FILTER.filter(record)
    assert record.getMessage() == "token *** in CanonicalRequest"
    for i in range(redaction.KEEP + 5):
        redaction.register(f"rotated-token-{i:06d}")
    assert len(redaction.known()) == redaction.KEEP
    assert "rotated-token-000000" not in redaction.known()
    assert f"rotated-token-{redaction.KEEP + 4:06d}" in redaction.known()


# -- a store that echoes the session token, at every door that reports its errors -----------------


def _echoing(proxy: Any, make_conn: Callable[..., str]) -> str:
    from tests.support.fault_proxy import Fault

    proxy.schedule(*(Fault("echo", op, times=None) for op in ("ListObjectsV2", "GetObject", "PutObject", "HeadObject")))
    return make_conn("echoing", "ASIAECHO", SECRET, aws_session_token=TOKEN, bucket=BUCKET, region_name=REGION,
                     endpoint_url=proxy.url, max_attempts=1)  # fmt: skip


def _clean(text: str) -> None:
    assert SECRET not in text
    assert TOKEN not in text


def test_a_store_message_echoing_the_token_reaches_no_door(
    proxy: Any, make_conn: Callable[..., str], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import traceback

    from airflow_s3connect import cli
    from airflow_s3connect.errors import S3ConnectError
    from airflow_s3connect.hooks.s3connect import S3ConnectHook
    from airflow_s3connect.triggers.object_events import S3ObjectEventTrigger

    conn_id = _echoing(proxy, make_conn)
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        # The hook's calls: the exception, its chain, its traceback.
        with pytest.raises(S3ConnectError) as raised:
            hook.upload("a.csv", data=b"x")
        error = raised.value
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
        context = error.__context__
        texts += [repr(context), str(getattr(context, "response", ""))]
        assert "InvalidArgument" in str(error)  # the code stays; the echoing message does not
        # The Test button.
        ok, message = hook.test_connection()
        assert not ok
        texts.append(message)
        # s3connect check.
        assert cli.main(["check", "--conn-id", conn_id]) == 1
        texts.append(capsys.readouterr().out)

        # The event trigger's error event.
        async def first() -> dict[str, Any]:
            events = S3ObjectEventTrigger(s3connect_conn_id=conn_id, prefix="in/", poll_interval=0.1).run()
            event = await asyncio.wait_for(anext(events), 30)
            await events.aclose()
            return dict(event.payload)

        event = asyncio.run(first())
        assert event["status"] == "error"
        texts.append(json.dumps(event))
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        _clean(text)
    assert any(type(i).__name__ == "Injected" for i in proxy.injected)


def test_every_error_of_ours_is_redacted_whoever_builds_it() -> None:
    from airflow_s3connect import redaction
    from airflow_s3connect.errors import AccessDeniedError, ConnectionSettingsError, S3ConnectError, store_message

    redaction.register(TOKEN)
    assert TOKEN not in str(S3ConnectError(f"failed with {TOKEN}"))
    assert TOKEN not in str(ConnectionSettingsError("c", "f", f"was {TOKEN}", "fix"))
    assert TOKEN not in str(AccessDeniedError("s3:GetObject", f"arn:{TOKEN}"))
    assert store_message(f"value {TOKEN} unsupported") == ""  # dropped whole, not masked
    assert store_message("Unsupported storage class") == ': the store says "Unsupported storage class"'
