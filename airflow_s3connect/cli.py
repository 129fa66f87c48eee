"""``s3connect``: setup helpers for admins. Every command prints JSON on stdout.

- ``policy --bucket B [--prefix P] --operations put,get,list,sensor,delete``: the
  least-privilege identity policy for exactly those operations;
- ``trust-policy --principal ARN --external-id X``: the role trust policy;
- ``external-id --tenant T``: the tenant's external ID (HMAC under the deployment secret,
  ``S3CONNECT_EXTERNAL_ID_SECRET`` or Airflow's ``[s3connect] external_id_secret``);
- ``check --conn-id ID``: tests an Airflow connection and probes the permission behind
  each operation, without writing or deleting anything (a table on stderr as well).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from airflow_s3connect.errors import S3ConnectError
from airflow_s3connect.iam import OPERATION_USES, SetupError, external_id_for, least_privilege_policy, trust_policy

SECRET_ENV = "S3CONNECT_EXTERNAL_ID_SECRET"


def external_id_secret() -> str:
    """The deployment's external-ID secret: the environment first, then Airflow's config."""
    secret = os.environ.get(SECRET_ENV, "")
    if secret:
        return secret
    from airflow.configuration import conf

    return str(conf.get("s3connect", "external_id_secret", fallback="") or "")


#: Each probe: (action, how to call it without changing anything). A probe "works" when S3
#: answers anything but AccessDenied: conditional requests on a key that does not exist
#: (If-Match) are refused *after* authorization, so nothing is written or deleted.
def _probes(client: Any, bucket: str, prefix: str) -> list[tuple[str, Callable[[], Any]]]:
    probe_key = f"{prefix}.s3connect-check/{uuid.uuid4().hex}"
    return [
        ("s3:ListBucket", lambda: client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)),
        ("s3:GetObject", lambda: client.get_object(Bucket=bucket, Key=probe_key)),
        ("s3:PutObject", lambda: client.put_object(Bucket=bucket, Key=probe_key, Body=b"", IfMatch='"0"')),
        ("s3:DeleteObject", lambda: client.delete_object(Bucket=bucket, Key=probe_key, IfMatch='"0"')),
    ]


def check(conn_id: str) -> dict[str, Any]:
    """Probe the connection's permissions; Airflow is imported here only."""
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_s3connect.errors import translate
    from airflow_s3connect.hooks.s3connect import S3ConnectHook

    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    ok, message = hook.test_connection()
    report: dict[str, Any] = {"conn_id": conn_id, "test_connection": {"ok": ok, "message": message}}
    scope = hook.scope_settings.scope
    if scope.bucket is None:
        report["actions"] = {}
        report["operations"] = {}
        report["note"] = "The connection has no bucket: set one to probe object permissions."
        return report
    client = hook.get_conn()
    actions: dict[str, dict[str, str]] = {}
    for action, call in _probes(client, scope.bucket, scope.prefix):
        try:
            call()
            actions[action] = {"result": "allowed", "detail": ""}
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            denied = code in ("AccessDenied", "403")
            actions[action] = {
                "result": "denied" if denied else "allowed",
                "detail": str(translate(exc, action.split(":")[1], scope.bucket))
                if denied
                else f"probe answered {code}",
            }
        except (BotoCoreError, S3ConnectError) as exc:
            error = translate(exc, action, scope.bucket) if isinstance(exc, BotoCoreError) else exc
            actions[action] = {"result": "error", "detail": str(error)}
    # Without ListBucket, S3 answers a GET of a missing key with 403 too: not a verdict.
    if actions["s3:ListBucket"]["result"] != "allowed" and actions["s3:GetObject"]["result"] == "denied":
        actions["s3:GetObject"] = {"result": "unknown", "detail": "S3 hides missing keys without s3:ListBucket"}
    report["actions"] = actions
    report["operations"] = {
        operation: all(actions[a]["result"] == "allowed" for a in needed)
        for operation, needed in OPERATION_USES.items()
    }
    return report


def _table(report: dict[str, Any]) -> str:
    lines = [f"connection {report['conn_id']}: {report['test_connection']['message']}"]
    lines += [f"  {action:<16} {entry['result']:<8} {entry['detail']}" for action, entry in report["actions"].items()]
    lines += [f"  {op:<16} {'works' if works else 'does not work'}" for op, works in report["operations"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s3connect", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    policy = commands.add_parser("policy", help="least-privilege IAM policy for operations")
    policy.add_argument("--bucket", required=True)
    policy.add_argument("--prefix", default="")
    policy.add_argument(
        "--operations", required=True, help="comma-separated: put,get,get-key,list,sensor,delete,archive"
    )
    trust = commands.add_parser("trust-policy", help="role trust policy with sts:ExternalId")
    trust.add_argument("--principal", required=True, help="ARN (or account id) of the identity that assumes the role")
    trust.add_argument("--external-id", required=True)
    external = commands.add_parser("external-id", help="a tenant's external ID")
    external.add_argument("--tenant", required=True)
    probe = commands.add_parser("check", help="test a connection and probe its permissions")
    probe.add_argument("--conn-id", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "policy":
            output: dict[str, Any] = least_privilege_policy(args.bucket, args.prefix, args.operations.split(","))
        elif args.command == "trust-policy":
            output = trust_policy(args.principal, args.external_id)
        elif args.command == "external-id":
            output = {"tenant": args.tenant, "external_id": external_id_for(args.tenant, external_id_secret())}
        else:
            output = check(args.conn_id)
            print(_table(output), file=sys.stderr)
    except (SetupError, S3ConnectError) as exc:
        print(f"s3connect {args.command}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(output, indent=2))
    return 0 if args.command != "check" or output["test_connection"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
