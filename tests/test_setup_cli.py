"""The ``s3connect`` console script: what it prints is valid JSON that IAM accepts, and it
grants exactly what it says (checked on moto with IAM enforced)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from airflow_s3connect.cli import main
from airflow_s3connect.connection import EXTERNAL_ID_PATTERN
from airflow_s3connect.errors import AccessDeniedError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.notifications import parse_message
from airflow_s3connect.objects import ObjectInfo
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import IamFactory, MotoServer


def run(*argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, json.loads(out.getvalue()) if out.getvalue() else None, err.getvalue()


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "s3connect"
    done = subprocess.run([str(script), "policy", "--bucket", "acme-data", "--operations", "put"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(done.stdout)["Statement"][0]["Action"] == ["s3:PutObject"]


def test_policy_for_exactly_the_operations() -> None:
    code, policy, _ = run(
        "policy", "--bucket", "acme-data", "--prefix", "exports/acme", "--operations", "put,get,delete"
    )
    assert code == 0
    assert policy == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "S3ConnectList",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::acme-data",
                "Condition": {"StringLike": {"s3:prefix": ["exports/acme/*"]}},
            },
            {
                "Sid": "S3ConnectObjects",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
                "Resource": "arn:aws:s3:::acme-data/exports/acme/*",
            },
        ],
    }
    _, put_only, _ = run("policy", "--bucket", "acme-data", "--operations", "put")
    assert put_only["Statement"] == [
        {
            "Sid": "S3ConnectObjects",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": "arn:aws:s3:::acme-data/*",
        }
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["policy", "--bucket", "Bad_Bucket", "--operations", "put"], "Invalid bucket name 'Bad_Bucket'"),
        (["policy", "--bucket", "acme-data", "--operations", "put,move"], "Unknown operations ['move']: choose from"),
        (["policy", "--bucket", "acme-data", "--prefix", "a/../b", "--operations", "get"], "'.' or '..' segment"),
        (["trust-policy", "--principal", "bob", "--external-id", "abc123"], "is not an AWS account id or IAM ARN"),
        (["trust-policy", "--principal", "123456789012", "--external-id", "x"], "External ID 'x' is not valid for STS"),
        (["external-id", "--tenant", "acme"], "set S3CONNECT_EXTERNAL_ID_SECRET or [s3connect] external_id_secret"),
        (["policy", "--bucket", "acme-data", "--operations", "watch-sqs"], "watch-sqs reads one queue: give its URL"),
        (["notifications", "--bucket", "acme-data", "--queue-url", "s3-events"], "is not an SQS queue URL"),
    ],
)
def test_bad_arguments_say_what_to_give(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S3CONNECT_EXTERNAL_ID_SECRET", raising=False)
    code, output, err = run(*argv)
    assert (code, output) == (2, None)
    assert message in err


def test_external_id_is_stable_per_tenant_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3CONNECT_EXTERNAL_ID_SECRET", "deployment-secret-0123456789abcdef")
    first = run("external-id", "--tenant", "acme")[1]
    assert first == run("external-id", "--tenant", "acme")[1]
    assert first["tenant"] == "acme"
    assert re.match(EXTERNAL_ID_PATTERN, first["external_id"])
    assert run("external-id", "--tenant", "globex")[1]["external_id"] != first["external_id"]
    monkeypatch.setenv("S3CONNECT_EXTERNAL_ID_SECRET", "another-deployment-secret-0123456789")
    assert run("external-id", "--tenant", "acme")[1]["external_id"] != first["external_id"]
    # The same value through Airflow's config, for deployments that keep secrets there.
    monkeypatch.delenv("S3CONNECT_EXTERNAL_ID_SECRET")
    monkeypatch.setenv("AIRFLOW__S3CONNECT__EXTERNAL_ID_SECRET", "deployment-secret-0123456789abcdef")
    assert run("external-id", "--tenant", "acme")[1] == first


def test_notification_setup_is_accepted_by_the_bucket_and_the_queue(moto: MotoServer) -> None:
    """What ``s3connect notifications`` prints, pasted: the bucket notifies the queue of an
    object under the prefix, and of nothing else."""
    sqs = moto.admin_client("sqs")
    url = sqs.create_queue(QueueName="acme-events")["QueueUrl"]
    code, setup, _ = run("notifications", "--bucket", BUCKET, "--prefix", "in/", "--queue-url", url,
                         "--owner", "123456789012")  # fmt: skip
    assert code == 0
    (target,) = setup["bucket_notification_configuration"]["QueueConfigurations"]
    assert target["QueueArn"] == "arn:aws:sqs:*:123456789012:acme-events"
    (grant,) = setup["queue_policy"]["Statement"]
    assert grant["Condition"] == {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"},
                                  "StringEquals": {"aws:SourceAccount": "123456789012"}}  # fmt: skip
    # A local queue's URL names no region: the printed ARN leaves it open; moto needs its own.
    real_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(setup["queue_policy"])})
    config = json.loads(json.dumps(setup["bucket_notification_configuration"]).replace(target["QueueArn"], real_arn))
    s3 = moto.admin_client("s3")
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=config)
    sqs.purge_queue(QueueUrl=url)  # the test event
    s3.put_object(Bucket=BUCKET, Key="in/a.csv", Body=b"a")
    s3.put_object(Bucket=BUCKET, Key="out/b.csv", Body=b"b")
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]
    assert [n.key for b in bodies for n in parse_message(b).created] == ["in/a.csv"]


def _conn_extra(iam: IamFactory) -> dict[str, Any]:
    return {"region_name": REGION, "endpoint_url": iam.server.url, "sts_endpoint_url": iam.server.url, "bucket": BUCKET}


def test_printed_policies_are_accepted_by_iam_and_grant_exactly_that(
    iam: IamFactory, make_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """IAM (moto's policy grammar) accepts both documents; a role set up with them can be
    assumed with the external ID only, and reads objects inside the prefix only."""
    monkeypatch.setenv("S3CONNECT_EXTERNAL_ID_SECRET", "deployment-secret-0123456789abcdef")
    admin = iam.server.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="exports/acme/in.csv", Body=b"a")
    admin.put_object(Bucket=BUCKET, Key="exports/globex/in.csv", Body=b"b")
    external_id = run("external-id", "--tenant", "acme")[1]["external_id"]
    base = iam.user("airflow-worker", ["sts:AssumeRole"])
    _, trust, _ = run("trust-policy", "--principal", base.arn, "--external-id", external_id)
    _, policy, _ = run("policy", "--bucket", BUCKET, "--prefix", "exports/acme", "--operations", "get,list")
    client = iam.server.admin_client("iam")
    arn = client.create_role(RoleName="acme-reader", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    policy_arn = client.create_policy(PolicyName="acme-read", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
    client.attach_role_policy(RoleName="acme-reader", PolicyArn=policy_arn)
    good = make_conn("acme", base.key, base.secret, auth_type="assume_role", role_arn=arn, external_id=external_id,
                     **_conn_extra(iam))  # fmt: skip
    wrong_id = make_conn("acme_wrong", base.key, base.secret, auth_type="assume_role", role_arn=arn,
                         external_id="s3c-guessed-0000", **_conn_extra(iam))  # fmt: skip
    iam.enforce()
    client = S3ConnectHook(s3connect_conn_id=good).get_conn()
    listed = [o.key for o in Lister(client, BUCKET, ListQuery(base="exports/acme/")) if isinstance(o, ObjectInfo)]
    assert listed == ["exports/acme/in.csv"]
    assert client.get_object(Bucket=BUCKET, Key="exports/acme/in.csv")["Body"].read() == b"a"
    # (moto does not evaluate the s3:prefix condition of ListBucket; object actions it does.)
    with pytest.raises(ClientError, match="AccessDenied"):  # the raw client: botocore's own error
        client.get_object(Bucket=BUCKET, Key="exports/globex/in.csv")
    with pytest.raises(AccessDeniedError, match="sts:AssumeRole"):
        list(Lister(S3ConnectHook(s3connect_conn_id=wrong_id).get_conn(), BUCKET, ListQuery(base="exports/acme/")))


def test_check_probes_each_permission_without_writing(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    admin = iam.server.admin_client("s3")
    admin.put_object(Bucket=BUCKET, Key="seed.txt", Body=b"seed")
    reader = iam.user(
        "reader", ["s3:ListBucket", "s3:GetObject"], [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]
    )
    conn_id = make_conn("reader", reader.key, reader.secret, **_conn_extra(iam))
    iam.enforce()
    code, report, table = run("check", "--conn-id", conn_id)
    assert code == 0
    assert report["test_connection"]["ok"] is True
    assert {a: e["result"] for a, e in report["actions"].items()} == {
        "s3:ListBucket": "allowed",
        "s3:GetObject": "allowed",
        "s3:PutObject": "denied",
        "s3:DeleteObject": "denied",
        "s3:GetObjectVersion": "denied",
        "s3:DeleteObjectVersion": "denied",
        "s3:RestoreObject": "denied",
    }
    assert report["actions"]["s3:PutObject"]["detail"].startswith("Access denied: s3:PutObject on arn:aws:s3:::")
    assert report["operations"] == {
        "put": False,
        "get": True,
        "get-key": True,
        "list": True,
        "sensor": True,
        "watch": True,
        "delete": False,
        "archive": False,
        "copy": False,
        "get-version": False,
        "delete-version": False,
        "restore": False,
        "watch-sqs": None,  # SQS is not probed: unknown, never "works"
        "bundle": False,
    }
    assert "s3:PutObject" in table
    assert "does not work" in table
    iam.server.set_auth(enforced=False)
    assert [o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["seed.txt"]  # nothing written


def test_check_of_a_full_access_connection_writes_nothing(iam: IamFactory, make_conn: Callable[..., str]) -> None:
    admin = iam.server.admin_client("s3")
    conn_id = make_conn("admin", iam.admin.key, iam.admin.secret, **_conn_extra(iam), path_prefix="tenants/acme")
    iam.enforce()
    code, report, _ = run("check", "--conn-id", conn_id)
    assert code == 0
    assert set(e["result"] for e in report["actions"].values()) == {"allowed"}
    assert {op: works for op, works in report["operations"].items() if works is not True} == {"watch-sqs": None}
    iam.server.set_auth(enforced=False)
    assert admin.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
