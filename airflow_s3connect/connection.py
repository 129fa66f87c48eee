"""Connection settings: the ``s3connect`` form's fields, parsed into one frozen, typed value.

Pure: no I/O and no Airflow import. An Airflow connection arrives from the UI, a URI,
JSON in ``AIRFLOW_CONN_*`` or a secrets backend; each stores extras a little
differently (URI query values are all strings; the UI may prefix names with
``extra__s3connect__``). :func:`parse_settings` accepts them all and validates
everything once, so the client and the operators never see a half-valid connection.

:data:`FIELDS` is the single definition of the form: the provider info renders it as
``conn-fields`` and the parser validates against the same JSON-schema fragments.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_s3connect.errors import ArgumentError, ConnectionSettingsError, InvalidKeyError
from airflow_s3connect.scope import Scope, check_bucket_name, normalize_prefix, path_problem
from airflow_s3connect.writes import (
    CANNED_ACLS,
    SSE_VALUES,
    STORAGE_CLASSES,
    WriteOptions,
    parse_json_object,
    parse_tags,
)

CONN_TYPE = "s3connect"
DEFAULT_CONN_ID = "s3connect_default"
EXTRA_PREFIX = f"extra__{CONN_TYPE}__"


class AuthType(str, Enum):
    ACCESS_KEY = "access_key"
    ASSUME_ROLE = "assume_role"


#: How uploads carry checksums (see :mod:`airflow_s3connect.checksums`).
CHECKSUM_MODES = ("auto", "sdk", "header", "off")
#: Which engine sends a transfer's GETs and single-part PUTs (see airflow_s3connect.native).
ENGINES = ("auto", "botocore", "native")


def is_aws_endpoint(endpoint_url: str | None) -> bool:
    """Whether requests go to AWS itself (no endpoint_url, or an amazonaws.com host), whose
    behaviour is documented, rather than to another S3 implementation."""
    return not endpoint_url or (urlsplit(endpoint_url).hostname or "").lower().endswith(".amazonaws.com")


def effective_mode(mode: str, endpoint_url: str | None) -> str:
    """``auto`` resolved: the SDK's trailers on AWS, headers on any other endpoint."""
    if mode != "auto":
        return mode
    return "sdk" if is_aws_endpoint(endpoint_url) else "header"


class AddressingStyle(str, Enum):
    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"


# Character classes spelled out (not \w) so Python and the UI's JavaScript agree: ASCII only.
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]{1,512}$"
EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9_+=,.@:/-]{2,1224}$"
SESSION_NAME_PATTERN = r"^[A-Za-z0-9_+=,.@-]{2,64}$"
REGION_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
#: Values that become key segments through macros ({tenant}, ...): one safe segment each.
SEGMENT_PATTERN = r"^[^/\x00-\x1f\x7f]{1,255}$"


@dataclass(frozen=True)
class FieldSpec:
    """One extra field of the connection form: label, help text, JSON schema, placeholder,
    and what to tell the admin when a value does not match the schema's pattern."""

    name: str
    label: str
    description: str
    schema: Mapping[str, Any]
    placeholder: str = ""
    fix: str = ""

    @property
    def form_schema(self) -> dict[str, Any]:
        """The schema as the UI form gets it: every extra field optional (``null`` allowed).

        Airflow's form marks a field required unless its type admits null, and would then
        refuse to save a connection until every one of them is filled.
        """
        schema = dict(self.schema)
        schema["type"] = [schema["type"], "null"]
        return schema


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        "auth_type",
        "Authentication",
        "access_key: the key pair above (or the worker's default AWS chain when empty). "
        "assume_role: cross-account STS AssumeRole with an external ID, starting from those credentials.",
        {"type": "string", "enum": [a.value for a in AuthType], "default": AuthType.ACCESS_KEY.value},
    ),
    FieldSpec(
        "aws_session_token",
        "AWS Session Token",
        "STS session token, only for temporary access keys (ASIA…).",
        {"type": "string", "format": "password"},
    ),
    FieldSpec(
        "role_arn",
        "IAM Role ARN",
        "Role to assume (assume_role only). Its trust policy must allow this identity and the external ID.",
        {"type": "string", "pattern": ROLE_ARN_PATTERN},
        "arn:aws:iam::123456789012:role/airflow-s3connect",
        fix="use arn:aws:iam::<12-digit account id>:role/<role name>",
    ),
    FieldSpec(
        "external_id",
        "External ID",
        "Sent as STS ExternalId (assume_role). 2-1,224 characters of letters, digits and +=,.@:/-. "
        "`s3connect external-id --tenant T` prints one per tenant.",
        {"type": "string", "pattern": EXTERNAL_ID_PATTERN},
        fix="use 2 to 1,224 characters of letters, digits and +=,.@:/-",
    ),
    FieldSpec(
        "role_session_name",
        "Role Session Name",
        "Name of the STS session, shown in CloudTrail. Default: airflow-s3connect-<conn id>.",
        {"type": "string", "pattern": SESSION_NAME_PATTERN},
        fix="use 2 to 64 characters of letters, digits and +=,.@-",
    ),
    FieldSpec(
        "session_duration",
        "Session Duration (seconds)",
        "Lifetime of each assumed-role session; credentials refresh themselves before it ends.",
        {"type": "integer", "minimum": 900, "maximum": 43200, "default": 3600},
    ),
    FieldSpec(
        "region_name",
        "Region",
        "Signing region of the bucket (e.g. eu-west-1). Empty: the worker's AWS_DEFAULT_REGION.",
        {"type": "string", "pattern": REGION_PATTERN},
        "us-east-1",
        fix="use a region code such as eu-west-1",
    ),
    FieldSpec(
        "endpoint_url",
        "Endpoint URL",
        "S3-compatible store (MinIO, Ceph, R2…) or VPC endpoint. Empty: AWS S3.",
        {"type": "string", "format": "url"},
        "https://s3.eu-west-1.amazonaws.com",
    ),
    FieldSpec(
        "sts_endpoint_url",
        "STS Endpoint URL",
        "STS endpoint for AssumeRole. Empty: the regional AWS STS endpoint.",
        {"type": "string", "format": "url"},
    ),
    FieldSpec(
        "addressing_style",
        "Addressing Style",
        "path for most S3-compatible stores, virtual for AWS, auto to let botocore choose.",
        {"type": "string", "enum": [a.value for a in AddressingStyle], "default": AddressingStyle.AUTO.value},
    ),
    FieldSpec(
        "verify_ssl",
        "Verify TLS",
        "Verify the endpoint's TLS certificate. Turn off only for a test store.",
        {"type": "boolean", "default": True},
    ),
    FieldSpec(
        "ca_bundle",
        "CA Bundle",
        "Path, on the workers, of a PEM bundle to verify a private CA.",
        {"type": "string"},
        "/etc/ssl/certs/ca-certificates.crt",
    ),
    FieldSpec(
        "proxy_url",
        "HTTPS Proxy",
        "Proxy for S3 and STS requests, e.g. http://proxy.internal:3128.",
        {"type": "string", "format": "url"},
    ),
    FieldSpec(
        "checksum_mode",
        "Upload Checksums",
        "auto: the SDK's on AWS, headers elsewhere. sdk: botocore's (aws-chunked trailers over HTTPS, which "
        "many S3-compatible stores refuse or store). header: computed here and sent as headers with "
        "Content-MD5, and the returned ETag compared with it. off: none.",
        {"type": "string", "enum": list(CHECKSUM_MODES), "default": "auto"},
    ),
    FieldSpec(
        "engine",
        "Transfer Engine",
        "auto: the native engine (obstore, installed with airflow-s3connect[fast]) for the GETs and single-part "
        "PUTs it can make exactly, botocore for the rest. native: the same, and an error if obstore is missing. "
        "botocore: botocore only.",
        {"type": "string", "enum": list(ENGINES), "default": "auto"},
    ),
    FieldSpec(
        "bucket",
        "Bucket",
        "Restrict the connection to this bucket; also the default bucket of every operator.",
        {"type": "string"},
        "my-company-data",
    ),
    FieldSpec(
        "expected_bucket_owner",
        "Expected Bucket Owner",
        "12-digit AWS account id that must own the bucket: sent as ExpectedBucketOwner on every request, "
        "so S3 refuses a mistyped or re-created bucket of another account.",
        {"type": "string", "pattern": r"^\d{12}$"},
        "111122223333",
        fix="use the 12-digit AWS account id of the bucket's owner",
    ),
    FieldSpec(
        "server_side_encryption",
        "Server-Side Encryption",
        "Encryption every write asks for (a bucket policy may require it): AES256 (SSE-S3), aws:kms, aws:kms:dsse.",
        {"type": "string", "enum": list(SSE_VALUES)},
    ),
    FieldSpec(
        "kms_key_id",
        "KMS Key",
        "KMS key id, ARN or alias for aws:kms writes. Empty: the bucket's default key.",
        {"type": "string"},
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        fix="set Server-Side Encryption to aws:kms, or clear KMS Key",
    ),
    FieldSpec(
        "bucket_key_enabled",
        "S3 Bucket Key",
        "Use an S3 Bucket Key for aws:kms writes (fewer KMS requests).",
        {"type": "boolean"},
        fix="set Server-Side Encryption to aws:kms, or clear S3 Bucket Key",
    ),
    FieldSpec(
        "kms_encryption_context",
        "KMS Encryption Context",
        'JSON object sent as the KMS encryption context of aws:kms writes, e.g. {"project": "billing"}.',
        {"type": "string"},
        fix='write a JSON object of strings, e.g. {"project": "billing"}',
    ),
    FieldSpec(
        "sse_customer_key",
        "SSE-C Key",
        "Your own 256-bit AES key (SSE-C), sent with every write and read of an object; S3 keeps no copy.",
        {"type": "string", "format": "password"},
        fix="use either SSE-C Key or Server-Side Encryption, not both",
    ),
    FieldSpec(
        "acl",
        "Canned ACL",
        "ACL of every object written, e.g. bucket-owner-full-control for a bucket another account owns.",
        {"type": "string", "enum": list(CANNED_ACLS)},
    ),
    FieldSpec(
        "storage_class",
        "Storage Class",
        "Storage class of every object written. Empty: the bucket's default (STANDARD).",
        {"type": "string", "enum": list(STORAGE_CLASSES)},
    ),
    FieldSpec(
        "tags",
        "Object Tags",
        'Tags of every object written: a JSON object ({"team": "data"}) or team=data&env=prod.',
        {"type": "string"},
        "team=data&env=prod",
        fix='write a JSON object ({"team": "data"}) or key=value pairs joined by & (team=data&env=prod)',
    ),
    FieldSpec(
        "requester_pays",
        "Requester Pays",
        "Every request says this connection pays for it (needed to read or write a Requester Pays bucket).",
        {"type": "boolean"},
    ),
    FieldSpec(
        "path_prefix",
        "Path Prefix",
        "Restrict the connection to this prefix; keys are relative to it. Macros allowed: "
        "orders/{tenant}/{date}/incoming.",
        {"type": "string"},
        "exports/{tenant}",
    ),
    FieldSpec(
        "tenant",
        "Tenant",
        "Value of the {tenant} macro unless the operator or the DAG's params set one.",
        {"type": "string", "pattern": SEGMENT_PATTERN},
        fix="use one key segment: no '/', no control characters",
    ),
    FieldSpec(
        "root_tenant_id",
        "Root Tenant ID",
        "Value of {root_tenant_id} (parent of sub-tenants); default: the tenant.",
        {"type": "string", "pattern": SEGMENT_PATTERN},
        fix="use one key segment: no '/', no control characters",
    ),
    FieldSpec(
        "env_id",
        "Environment ID",
        "Value of {env_id}; default: the host of Airflow's base URL.",
        {"type": "string", "pattern": SEGMENT_PATTERN},
        fix="use one key segment: no '/', no control characters",
    ),
    FieldSpec(
        "max_concurrency",
        "Max Concurrency",
        "Parallel requests per task: download threads, multipart parts in flight.",
        {"type": "integer", "minimum": 1, "maximum": 64, "default": 8},
    ),
    FieldSpec(
        "max_attempts",
        "Max Attempts",
        "Attempts per request, the first included (botocore standard retries, with backoff): "
        "throttling, 5xx and broken connections are retried, the rest fail at once.",
        {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
    ),
    FieldSpec(
        "connect_timeout",
        "Connect Timeout (seconds)",
        "How long to wait for a TCP connection to S3 or STS before retrying.",
        {"type": "integer", "minimum": 1, "maximum": 300, "default": 10},
    ),
    FieldSpec(
        "read_timeout",
        "Read Timeout (seconds)",
        "How long to wait for any byte of a response before retrying.",
        {"type": "integer", "minimum": 1, "maximum": 3600, "default": 60},
    ),
)

FIELD_BY_NAME: Mapping[str, FieldSpec] = {f.name: f for f in FIELDS}
#: The fields that set the connection's write options.
WRITE_FIELDS = (
    "kms_encryption_context", "kms_key_id", "bucket_key_enabled", "sse_customer_key", "server_side_encryption",
    "acl", "storage_class", "tags", "requester_pays",
)  # fmt: skip

#: How the standard connection fields show in the form.
UI_FIELD_BEHAVIOUR: Mapping[str, Any] = {
    "hidden-fields": ["host", "port", "schema"],
    "relabeling": {"login": "AWS Access Key ID", "password": "AWS Secret Access Key"},
    "placeholders": {
        "login": "AKIAIOSFODNN7EXAMPLE (empty: the worker's default AWS credentials)",
        "password": "secret access key",
        **{f.name: f.placeholder for f in FIELDS if f.placeholder},
    },
}


class ConnectionLike(Protocol):
    """What we read of an Airflow Connection (SDK or ORM model alike)."""

    @property
    def conn_id(self) -> str | None: ...
    @property
    def login(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def schema(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the client needs, validated. Secrets are kept out of ``repr``."""

    conn_id: str
    auth_type: AuthType = AuthType.ACCESS_KEY
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    role_arn: str | None = None
    external_id: str | None = None
    role_session_name: str | None = None
    session_duration: int = 3600
    region_name: str | None = None
    endpoint_url: str | None = None
    sts_endpoint_url: str | None = None
    addressing_style: AddressingStyle = AddressingStyle.AUTO
    verify_ssl: bool = True
    ca_bundle: str | None = None
    proxy_url: str | None = None
    checksum_mode: str = "auto"
    engine: str = "auto"
    bucket: str | None = None
    expected_bucket_owner: str | None = None
    server_side_encryption: str | None = None
    kms_key_id: str | None = None
    bucket_key_enabled: bool | None = None
    kms_encryption_context: str | None = None
    sse_customer_key: str | None = field(default=None, repr=False)
    acl: str | None = None
    storage_class: str | None = None
    tags: str | None = None
    requester_pays: bool = False
    path_prefix: str = ""
    tenant: str | None = None
    root_tenant_id: str | None = None
    env_id: str | None = None
    max_concurrency: int = 8
    max_attempts: int = 5
    connect_timeout: int = 10
    read_timeout: int = 60

    @property
    def session_name(self) -> str:
        """RoleSessionName sent to STS: the configured one, else derived from the conn id."""
        if self.role_session_name:
            return self.role_session_name
        derived = re.sub(r"[^A-Za-z0-9_+=,.@-]", "-", f"airflow-s3connect-{self.conn_id}")
        return derived[:64]

    @property
    def upload_checksums(self) -> str:
        """``checksum_mode`` with ``auto`` resolved for this endpoint: sdk, header or off."""
        return effective_mode(self.checksum_mode, self.endpoint_url)

    @property
    def write_defaults(self) -> WriteOptions:
        """The write options every request of the connection carries (validated when parsed)."""
        return WriteOptions(
            server_side_encryption=self.server_side_encryption,
            kms_key_id=self.kms_key_id,
            bucket_key_enabled=self.bucket_key_enabled,
            kms_encryption_context=parse_json_object("kms_encryption_context", self.kms_encryption_context),
            sse_customer_key=self.sse_customer_key,
            acl=self.acl,
            storage_class=self.storage_class,
            tags=parse_tags(self.tags),
            requester_pays=self.requester_pays,
        )

    @property
    def scope(self) -> Scope:
        """Bucket/prefix restriction. ``path_prefix`` must have had its macros rendered."""
        return Scope(self.bucket, normalize_prefix(self.path_prefix, "path_prefix"))


def _read_extra(extra: Mapping[str, Any], name: str) -> Any:
    """An extra stored plain (``role_arn``) or prefixed by the UI (``extra__s3connect__role_arn``)."""
    for stored in (name, EXTRA_PREFIX + name):
        value = extra.get(stored)
        if value is not None and value != "":
            return value
    return None


def _coerce(conn_id: str, spec: FieldSpec, value: Any) -> Any:
    """Check one field against its schema, converting URI strings ("3600", "false")."""
    schema = spec.schema
    kind = schema["type"]

    def fail(problem: str, fix: str) -> ConnectionSettingsError:
        return ConnectionSettingsError(conn_id, spec.name, problem, fix)

    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise fail(f"{value!r} is not a boolean", "use true or false")
    if kind == "integer":
        if isinstance(value, bool) or not (isinstance(value, int) or re.fullmatch(r"\s*-?\d+\s*", str(value))):
            raise fail(f"{value!r} is not a whole number", "give an integer")
        number = int(value)
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and number < low) or (high is not None and number > high):
            raise fail(f"{number} is out of range", f"use a value from {low} to {high}")
        return number
    if not isinstance(value, str):
        raise fail(f"{value!r} is not a string", "give a text value")
    text = value.strip()
    if "enum" in schema and text not in schema["enum"]:
        raise fail(f"{text!r} is not a valid choice", "choose one of " + ", ".join(schema["enum"]))
    if "pattern" in schema and not re.match(schema["pattern"], text):
        raise fail(f"{text!r} is malformed", spec.fix or f"match {schema['pattern']}")
    if schema.get("format") == "url":
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise fail("is not an http(s) URL", "give a URL such as https://host:port")
    return text


def parse_settings(
    conn_id: str,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any],
    host: str | None = None,
    port: int | None = None,
    schema: str | None = None,
) -> ConnectionSettings:
    """Validate raw connection fields into :class:`ConnectionSettings`.

    Raises :class:`ConnectionSettingsError` naming the field and the fix.
    """

    def fail(name: str, problem: str, fix: str) -> ConnectionSettingsError:
        return ConnectionSettingsError(conn_id, name, problem, fix)

    for name, value, instead in (
        ("host", host, "endpoint_url"),
        ("port", port, "endpoint_url"),
        ("schema", schema, "bucket"),
    ):
        if value not in (None, ""):
            raise fail(name, "is not used by s3connect connections", f"put the value in the {instead!r} extra field")

    known = set(FIELD_BY_NAME)
    for stored in extra:
        name = stored[len(EXTRA_PREFIX) :] if stored.startswith(EXTRA_PREFIX) else stored
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise fail(name, "is not a known field", hint + "valid fields: " + ", ".join(sorted(known)))

    values: dict[str, Any] = {}
    for spec in FIELDS:
        raw = _read_extra(extra, spec.name)
        if raw is not None:
            values[spec.name] = _coerce(conn_id, spec, raw)

    login = (login or "").strip() or None
    password = password or None
    if login and not password:
        raise fail(
            "password", "an AWS Access Key ID is set without its Secret Access Key", "fill AWS Secret Access Key"
        )
    if password and not login:
        raise fail("login", "a Secret Access Key is set without its AWS Access Key ID", "fill AWS Access Key ID")
    if values.get("aws_session_token") and not login:
        raise fail(
            "aws_session_token",
            "a session token needs the temporary key pair it belongs to",
            "fill the key ID and secret",
        )

    auth_type = AuthType(values.pop("auth_type", AuthType.ACCESS_KEY.value))
    addressing = AddressingStyle(values.pop("addressing_style", AddressingStyle.AUTO.value))
    if auth_type is AuthType.ASSUME_ROLE and not values.get("role_arn"):
        raise fail("role_arn", "assume_role needs the ARN of the role to assume", "fill IAM Role ARN")
    if auth_type is AuthType.ACCESS_KEY:
        for name in ("role_arn", "external_id", "role_session_name"):
            if values.get(name):
                raise fail(
                    name, "is only used with auth_type assume_role", "set Authentication to assume_role or clear it"
                )
    if values.get("verify_ssl") is False and values.get("ca_bundle"):
        raise fail(
            "ca_bundle", "a CA bundle is set while TLS verification is off", "turn Verify TLS on or clear CA Bundle"
        )
    if "bucket" in values:
        try:
            check_bucket_name(values["bucket"])
        except InvalidKeyError as exc:
            raise fail("bucket", str(exc).rstrip("."), "give the bucket's exact name") from None
    if "path_prefix" in values:
        prefix = values["path_prefix"].strip("/")
        if (problem := path_problem(prefix, empty_segments=False)) is not None:
            raise fail("path_prefix", f"{values['path_prefix']!r} {problem}", "give a prefix such as exports/invoices")
        values["path_prefix"] = prefix

    settings = ConnectionSettings(
        conn_id=conn_id,
        auth_type=auth_type,
        addressing_style=addressing,
        aws_access_key_id=login,
        aws_secret_access_key=password,
        **values,
    )
    try:
        settings.write_defaults  # noqa: B018 - validates the write options together
    except ArgumentError as exc:
        named = next((f for f in WRITE_FIELDS if f in str(exc)), "server_side_encryption")
        raise fail(named, str(exc).rstrip("."), FIELD_BY_NAME[named].fix or "see the field's description") from None
    return settings


def settings_from_connection(conn: ConnectionLike) -> ConnectionSettings:
    """Settings of an Airflow connection object (SDK or ORM; duck-typed to stay Airflow-free)."""
    return parse_settings(
        conn_id=conn.conn_id or DEFAULT_CONN_ID,
        login=conn.login,
        password=conn.password,
        extra=conn.extra_dejson,
        host=conn.host,
        port=conn.port,
        schema=conn.schema,
    )
