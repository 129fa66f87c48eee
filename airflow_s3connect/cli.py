"""``s3connect``: setup helpers for admins. Every command prints JSON on stdout.

- ``policy --bucket B [--prefix P] --operations put,get,list,sensor,delete``: the
  least-privilege identity policy for exactly those operations (``watch-sqs`` with
  ``--queue-url U``);
- ``notifications --bucket B [--prefix P] --queue-url U``: the bucket's notification
  configuration and the queue's policy that make the bucket notify an event watcher;
- ``trust-policy --principal ARN --external-id X``: the role trust policy;
- ``external-id --tenant T``: the tenant's external ID (HMAC under the deployment secret,
  ``S3CONNECT_EXTERNAL_ID_SECRET`` or Airflow's ``[s3connect] external_id_secret``);
- ``check --conn-id ID``: tests an Airflow connection and probes the permission behind
  each operation with the requests it sends, without writing or deleting anything (only
  on a store that refuses conditional PUTs, one empty object is written and deleted);
  each operation works, does not work, or is unknown (a table on stderr as well).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from airflow_s3connect.errors import S3ConnectError, SetupError
from airflow_s3connect.iam import (
    OPERATIONS,
    external_id_for,
    least_privilege_policy,
    notification_setup,
    trust_policy,
)
from airflow_s3connect.writes import WriteOptions, parse_tags

SECRET_ENV = "S3CONNECT_EXTERNAL_ID_SECRET"


def external_id_secret() -> str:
    """The deployment's external-ID secret: the environment first, then Airflow's config."""
    secret = os.environ.get(SECRET_ENV, "")
    if secret:
        return secret
    from airflow.configuration import conf

    return str(conf.get("s3connect", "external_id_secret", fallback="") or "")


#: What a store answers to a condition it does not implement (OpenStack Swift: 501 to any
#: conditional PUT), as opposed to the request itself failing.
_CONDITION_REFUSED = ("NotImplemented", "501", "InvalidArgument", "InvalidRequest")


#: Each probe: (action, a call sending the requests the operations send, the error codes that
#: still prove the permission). The probes act on a key that does not exist; the writing one
#: carries If-Match, which S3 checks *after* authorization: a 412 or 404 means "allowed, and
#: nothing was written". Only a store that refuses the condition gets the plain PutObject
#: that Put sends: one empty object under the prefix, deleted at once (the call returns
#: what it did). Deletes are probed with DeleteObjects (what Delete sends, Content-MD5
#: included where the store needs it) and the conditional DeleteObject that archive and
#: ``after="delete"`` send. Any other error (501, 411, 400…) is the store refusing the
#: request itself, a failure the operators would meet too.
def _probes(client: Any, bucket: str, prefix: str, probe_key: str) -> list[tuple[str, Callable[[], Any], set[str]]]:
    from botocore.exceptions import ClientError

    from airflow_s3connect.errors import error_code

    missing = {"NoSuchKey", "404", "NotFound", "PreconditionFailed", "412"}

    def delete_batch() -> None:
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": probe_key}], "Quiet": True})
        if errors := answer.get("Errors"):  # S3 answers per key: a denied key is an error entry
            raise ClientError({"Error": errors[0]}, "DeleteObjects")

    def written(how: str) -> str:
        try:
            delete_batch()
        except ClientError as exc:
            return f"{how}; it could not be deleted ({error_code(exc)}): remove s3://{bucket}/{probe_key}"
        return f"{how}, and deleted it"

    def put() -> str:
        try:
            client.put_object(Bucket=bucket, Key=probe_key, Body=b"", IfMatch='"0"')
        except ClientError as exc:
            if error_code(exc) not in _CONDITION_REFUSED:
                raise
            client.put_object(Bucket=bucket, Key=probe_key, Body=b"")
            return written(
                f"the store refuses conditional PUTs ({error_code(exc)}), so overwrite=False is refused there; "
                "a plain PutObject (what Put sends) wrote an empty probe object"
            )
        return written("the store ignored If-Match and wrote the probe object")

    def delete() -> None:
        delete_batch()
        client.delete_object(Bucket=bucket, Key=probe_key, IfMatch='"0"')

    return [
        ("s3:ListBucket", lambda: client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1), set()),
        ("s3:GetObject", lambda: client.get_object(Bucket=bucket, Key=probe_key), missing),
        ("s3:PutObject", put, missing),
        ("s3:DeleteObject", delete, missing),
        # S3 authorizes before it looks: a missing key (or version) answers 404 when allowed.
        ("s3:GetObjectVersion", lambda: client.get_object(Bucket=bucket, Key=probe_key, VersionId="null"),
         missing | {"NoSuchVersion"}),
        ("s3:DeleteObjectVersion", lambda: client.delete_object(Bucket=bucket, Key=probe_key, VersionId="null"),
         missing | {"NoSuchVersion"}),
        ("s3:RestoreObject", lambda: client.restore_object(Bucket=bucket, Key=probe_key, RestoreRequest={"Days": 1}),
         missing),
    ]  # fmt: skip


def _works(results: list[str]) -> bool | None:
    """An operation works if every action it uses is allowed; unknown if one could not be decided."""
    if any(result in ("denied", "error") for result in results):
        return False
    return None if "unknown" in results else True


def check(conn_id: str) -> dict[str, Any]:
    """Probe the connection's permissions; Airflow is imported here only.

    A macro path_prefix is probed as the Test button probes it (:meth:`probe_prefix`).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_s3connect.errors import error_code, translate
    from airflow_s3connect.hooks.s3connect import S3ConnectHook

    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    ok, message = hook.test_connection()
    report: dict[str, Any] = {"conn_id": conn_id, "test_connection": {"ok": ok, "message": message}}
    try:
        hook.pin_path_prefix(hook.probe_prefix())
        scope = hook.scope_settings.scope
    except S3ConnectError as exc:
        report.update(actions={}, operations={}, note=str(exc))
        return report
    if scope.bucket is None:
        report.update(
            actions={}, operations={}, note="The connection has no bucket: set one to probe object permissions."
        )
        return report
    client = hook.get_conn()
    probe_key = f"{scope.prefix}.s3connect-check/{uuid.uuid4().hex}"
    actions: dict[str, dict[str, str]] = {}
    for action, call, proving in _probes(client, scope.bucket, scope.prefix, probe_key):
        try:
            done = call()
            actions[action] = {"result": "allowed", "detail": done if isinstance(done, str) else ""}
        except ClientError as exc:
            code = error_code(exc)
            if code in ("AccessDenied", "403"):
                actions[action] = {
                    "result": "denied",
                    "detail": str(translate(exc, action.split(":")[1], scope.bucket)),
                }
            elif code in proving:
                actions[action] = {"result": "allowed", "detail": f"probe answered {code}"}
            else:
                # translate() names auth failures; anything else is the store refusing the request.
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                failure = translate(exc, action.split(":")[1], scope.bucket)
                detail = str(failure) if type(failure) is not S3ConnectError else f"the store answered {status} {code}"
                actions[action] = {"result": "error", "detail": f"{detail}; operations needing {action} fail too"}
        except (BotoCoreError, S3ConnectError) as exc:
            failure = translate(exc, action, scope.bucket) if isinstance(exc, BotoCoreError) else exc
            actions[action] = {"result": "error", "detail": str(failure)}
    # Without ListBucket, S3 answers a GET of a missing key with 403 too: not a verdict.
    if actions["s3:ListBucket"]["result"] != "allowed" and actions["s3:GetObject"]["result"] == "denied":
        actions["s3:GetObject"] = {"result": "unknown", "detail": "S3 hides missing keys without s3:ListBucket"}
    report["actions"] = actions
    report["operations"] = {
        # Only S3 actions are probed: an operation using another service's is at best unknown.
        name: _works([actions.get(a, {"result": "unknown"})["result"] for a in operation.uses])
        for name, operation in OPERATIONS.items()
    }
    return report


def _table(report: dict[str, Any]) -> str:
    lines = [f"connection {report['conn_id']}: {report['test_connection']['message']}"]
    lines += [f"  {action:<16} {entry['result']:<8} {entry['detail']}" for action, entry in report["actions"].items()]
    verdicts = {True: "works", False: "does not work", None: "unknown"}
    lines += [f"  {op:<16} {verdicts[works]}" for op, works in report["operations"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s3connect", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    policy = commands.add_parser("policy", help="least-privilege IAM policy for operations")
    policy.add_argument("--bucket", required=True)
    policy.add_argument("--prefix", default="")
    policy.add_argument("--operations", required=True, help=f"comma-separated: {','.join(OPERATIONS)}")
    policy.add_argument("--server-side-encryption", help="AES256, aws:kms or aws:kms:dsse (adds the KMS actions)")
    policy.add_argument("--kms-key-id", help="the KMS key's ARN (the KMS actions' resource)")
    policy.add_argument("--acl", help="the canned ACL writes send (adds s3:PutObjectAcl)")
    policy.add_argument("--tags", help="the tags writes send (adds s3:PutObjectTagging)")
    policy.add_argument("--queue-url", help="the SQS queue of watch-sqs (its actions' resource)")
    notify = commands.add_parser("notifications", help="bucket notification configuration and queue policy")
    notify.add_argument("--bucket", required=True)
    notify.add_argument("--prefix", default="")
    notify.add_argument("--queue-url", required=True)
    notify.add_argument("--owner", help="the bucket owner's account id (pins the queue policy to it)")
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
            options = WriteOptions(
                server_side_encryption=args.server_side_encryption, kms_key_id=args.kms_key_id, acl=args.acl,
                tags=parse_tags(args.tags),
            )  # fmt: skip
            output: dict[str, Any] = least_privilege_policy(
                args.bucket, args.prefix, args.operations.split(","), options, args.queue_url
            )
        elif args.command == "notifications":
            output = notification_setup(args.bucket, args.prefix, args.queue_url, args.owner)
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
