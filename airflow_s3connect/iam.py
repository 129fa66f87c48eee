"""IAM documents an admin pastes into AWS: the least-privilege policy for a set of
operations, the role trust policy with the ``sts:ExternalId`` condition, and a per-tenant
external ID derived from a deployment secret.

Pure: no I/O, no Airflow. The console script (``cli.py``) and the UI plugin print these.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from airflow_s3connect.connection import EXTERNAL_ID_PATTERN
from airflow_s3connect.errors import SetupError
from airflow_s3connect.notifications import queue_address
from airflow_s3connect.scope import check_bucket_name, normalize_prefix
from airflow_s3connect.writes import WriteOptions

POLICY_VERSION = "2012-10-17"


#: The permissions granted per operation: what it needs, and no more. ``archive`` (after a
#: get) writes a copy, so it also needs s3:PutObject.
@dataclass(frozen=True)
class Operation:
    """What one operation calls, whole (``uses``: what ``s3connect check`` requires before
    it says "works"), and what its least-privilege policy grants (``uses`` + ``also``)."""

    uses: tuple[str, ...]
    also: tuple[str, ...] = ()

    @property
    def grants(self) -> tuple[str, ...]:
        return self.uses + self.also


#: Every operation, once: the policy generator, the setup page and ``s3connect check`` read it.
OPERATIONS: dict[str, Operation] = {
    "put": Operation(("s3:PutObject",)),
    "get": Operation(("s3:ListBucket", "s3:GetObject")),
    "get-key": Operation(("s3:GetObject",)),
    # List and the sensor only list (the least-privilege suite runs them without GetObject);
    # their policy also grants s3:GetObject, so that what they list can be read.
    "list": Operation(("s3:ListBucket",), also=("s3:GetObject",)),
    "sensor": Operation(("s3:ListBucket",), also=("s3:GetObject",)),
    "watch": Operation(("s3:ListBucket",)),
    "delete": Operation(("s3:ListBucket", "s3:DeleteObject")),
    "archive": Operation(("s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject")),
    "copy": Operation(("s3:ListBucket", "s3:GetObject", "s3:PutObject")),
    # version_id on Get, Copy and the hook: the HEAD and GET of one version
    "get-version": Operation(("s3:GetObject", "s3:GetObjectVersion")),
    # version_id on Delete: that version removed for good
    "delete-version": Operation(("s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion")),
    # restore= on Get and Copy: the HEADs that follow the restore, the RestoreObject itself
    "restore": Operation(("s3:GetObject", "s3:RestoreObject")),
    # the event watcher with queue_url: a one-key listing confirms each notification,
    # the reconcile lists the prefix; the queue is checked, read and emptied
    "watch-sqs": Operation(("s3:ListBucket", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage")),
    # the DAG bundle: list and read the DAG files, publish each version's manifest under the
    # prefix; a worker rebuilding an older version on a versioned bucket reads by version id
    "bundle": Operation(("s3:ListBucket", "s3:GetObject", "s3:PutObject"), also=("s3:GetObjectVersion",)),
}

_PRINCIPAL = re.compile(
    r"^(\d{12}|arn:aws[a-z-]*:(iam::\d{12}:(root|(user|role)/[A-Za-z0-9_+=,.@/-]+)|sts::\d{12}:assumed-role/.+))$"
)


def actions_for(operations: Iterable[str]) -> list[str]:
    """The IAM actions ``operations`` need, sorted, each once."""
    wanted = [o.strip() for o in operations if o.strip()]
    unknown = [o for o in wanted if o not in OPERATIONS]
    if unknown or not wanted:
        raise SetupError(
            f"Unknown operations {unknown}: choose from {', '.join(OPERATIONS)}."
            if unknown
            else f"Give at least one operation: {', '.join(OPERATIONS)}."
        )
    return sorted({action for o in wanted for action in OPERATIONS[o].grants})


def least_privilege_policy(
    bucket: str,
    prefix: str,
    operations: Iterable[str],
    options: WriteOptions | None = None,
    queue_url: str | None = None,
) -> dict[str, Any]:
    """An identity policy granting ``operations`` on ``bucket`` (under ``prefix``) and nothing else.

    s3:ListBucket is a bucket action, limited to the prefix by an ``s3:prefix`` condition;
    the object actions apply to the prefix's objects only. ``options`` (the connection's
    write options) add what they need: s3:PutObjectAcl for an ACL, s3:PutObjectTagging for
    tags, and kms:GenerateDataKey / kms:Decrypt on the key for SSE-KMS. The SQS actions of
    ``watch-sqs`` apply to the queue of ``queue_url`` only.
    """
    prefix = _checked(bucket, prefix)
    actions = actions_for(operations)
    writes = "s3:PutObject" in actions
    if options is not None and writes:
        actions = sorted(
            {
                *actions,
                *(["s3:PutObjectAcl"] if options.acl else []),
                *(["s3:PutObjectTagging"] if options.tags else []),
            }
        )
    statements: list[dict[str, Any]] = []
    if "s3:ListBucket" in actions:
        listing: dict[str, Any] = {
            "Sid": "S3ConnectList",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
        }
        if prefix:
            listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
        statements.append(listing)
    object_actions = [a for a in actions if a != "s3:ListBucket" and a.startswith("s3:")]
    if object_actions:
        statements.append(
            {
                "Sid": "S3ConnectObjects",
                "Effect": "Allow",
                "Action": object_actions,
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
            }
        )
    queue_actions = [a for a in actions if a.startswith("sqs:")]
    if queue_actions:
        statements.append(
            {"Sid": "S3ConnectQueue", "Effect": "Allow", "Action": queue_actions, "Resource": _queue_arn(queue_url)}
        )
    if options is not None and (options.server_side_encryption or "").startswith("aws:kms"):
        key = options.kms_key_id or ""
        statements.append(
            {
                "Sid": "S3ConnectKms",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"] if writes else ["kms:Decrypt"],
                # An alias or key id is not a resource ARN: the key's ARN must be filled in.
                "Resource": key if key.startswith("arn:aws:kms:") and ":key/" in key else "*",
            }
        )
    return {"Version": POLICY_VERSION, "Statement": statements}


def _checked(bucket: str, prefix: str) -> str:
    """``prefix`` normalised, once the bucket's name and the prefix are known to be valid."""
    try:
        check_bucket_name(bucket)
        return normalize_prefix(prefix, "prefix")
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def _queue_arn(queue_url: str | None) -> str:
    if not queue_url:
        raise SetupError("watch-sqs reads one queue: give its URL (--queue-url, or the setup page's queue URL).")
    try:
        return queue_address(queue_url).arn()
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def notification_setup(bucket: str, prefix: str, queue_url: str, owner: str | None = None) -> dict[str, Any]:
    """What the bucket's owner pastes so that the bucket notifies the watcher's queue: the
    bucket's notification configuration (``aws s3api put-bucket-notification-configuration``,
    which replaces the bucket's whole configuration: merge it into the existing one) and the
    queue's access policy letting S3, for this bucket only, send to it."""
    prefix = _checked(bucket, prefix)
    arn = _queue_arn(queue_url)
    # One configuration per watched prefix, named after it: the bucket keeps one list of them.
    name = re.sub(r"[^A-Za-z0-9-]+", "-", prefix).strip("-") or "bucket"
    target: dict[str, Any] = {"Id": f"s3connect-{name}"[:255], "QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}
    if prefix:
        target["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    condition: dict[str, Any] = {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}}
    if owner:
        condition["StringEquals"] = {"aws:SourceAccount": owner}
    return {
        "bucket_notification_configuration": {"QueueConfigurations": [target]},
        "queue_policy": {
            "Version": POLICY_VERSION,
            "Statement": [
                {
                    "Sid": "S3ConnectBucketNotifications",
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": arn,
                    "Condition": condition,
                }
            ],
        },
    }


def trust_policy(principal: str, external_id: str) -> dict[str, Any]:
    """The role's trust policy: ``principal`` may assume it, only with ``external_id``."""
    if not _PRINCIPAL.match(principal):
        raise SetupError(
            f"Principal {principal!r} is not an AWS account id or IAM ARN: give e.g. "
            "arn:aws:iam::123456789012:root or arn:aws:iam::123456789012:role/airflow-worker."
        )
    check_external_id(external_id)
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "S3ConnectAssumeRole",
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }


def check_external_id(external_id: str) -> str:
    if not re.match(EXTERNAL_ID_PATTERN, external_id):
        raise SetupError(
            f"External ID {external_id!r} is not valid for STS: use 2-1,224 characters of letters, digits and +=,.@:/-."
        )
    return external_id


def external_id_for(tenant: str, secret: str) -> str:
    """A stable external ID for ``tenant``: HMAC-SHA256 of the tenant under the deployment's
    secret. The same tenant always gets the same ID; without the secret nobody can derive
    (or guess) another tenant's."""
    if not tenant:
        raise SetupError("Give a tenant: --tenant acme.")
    if len(secret) < 16:
        raise SetupError(
            "The external-ID secret is missing or shorter than 16 characters: set S3CONNECT_EXTERNAL_ID_SECRET "
            "or [s3connect] external_id_secret to a long random value, the same on every Airflow component."
        )
    digest = hmac.new(secret.encode(), tenant.encode(), hashlib.sha256).hexdigest()
    return f"s3c-{digest[:40]}"
