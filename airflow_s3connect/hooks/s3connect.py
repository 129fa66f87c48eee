"""S3ConnectHook: an ``s3connect`` connection turned into settings, a session and an S3 client.

Thin by design: validation lives in :mod:`airflow_s3connect.connection`, client
construction in :mod:`airflow_s3connect.client`. The hook adds what only Airflow
knows: where the connection comes from, secret masking, and the Test button.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_s3connect._compat import AirflowNotFoundException, BaseHook, conf, mask_secret
from airflow_s3connect.connection import CONN_TYPE, DEFAULT_CONN_ID, ConnectionSettings, settings_from_connection
from airflow_s3connect.errors import (
    AccessDeniedError,
    ConnectionNotFoundError,
    ConnectionSettingsError,
    MacroError,
    S3ConnectError,
    translated,
)
from airflow_s3connect.hooks.taskflow import TaskFlowMixin
from airflow_s3connect.macros import (
    MacroValues,
    connection_pattern,
    fill_instance,
    instance_values,
    macro_names,
    render,
)
from airflow_s3connect.scope import ObjectRef
from airflow_s3connect.writes import parse_tags

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_s3 import S3Client

    from airflow_s3connect.queues import NotificationQueue


class S3ConnectHook(TaskFlowMixin, BaseHook):
    """Interact with Amazon S3 or an S3-compatible store through an ``s3connect`` connection.

    :param s3connect_conn_id: the connection to use.

    The client is built once, lazily, under a lock, and is safe to share between the
    threads of a transfer. Credentials of an ``assume_role`` connection refresh
    themselves before they expire. For ``@task`` functions, :class:`TaskFlowMixin`
    adds upload, download, read, open, iter_objects, iter_records, delete, copy,
    presign, create_bucket and bucket_region.
    """

    conn_name_attr = "s3connect_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Amazon S3 (S3 Connect)"

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The form's extra fields on Airflow 3.0/3.1 (later lines read ``conn-fields``)."""
        from airflow_s3connect.hooks.form import form_widgets

        return form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The standard fields' labels on Airflow 3.0/3.1 (later lines read ``ui-field-behaviour``)."""
        from airflow_s3connect.hooks.form import field_behaviour

        return field_behaviour()

    def __init__(self, s3connect_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.s3connect_conn_id = s3connect_conn_id
        self._lock = threading.RLock()
        self._settings: ConnectionSettings | None = None
        self._session: boto3.session.Session | None = None
        self._client: S3Client | None = None
        self._prefix_rendered = False
        self._prefix_values: dict[str, str] = {}
        self._configured_prefix: str | None = None

    @property
    def settings(self) -> ConnectionSettings:
        """The connection's validated settings (read once per hook)."""
        with self._lock:
            if self._settings is None:
                settings = settings_from_connection(self._connection())
                for secret in (settings.aws_secret_access_key, settings.aws_session_token, settings.sse_customer_key):
                    if secret:
                        mask_secret(secret)
                self._settings = settings
                self._configured_prefix = settings.path_prefix
            return self._settings

    def _connection(self) -> Any:
        """The Airflow connection, refused early when missing or of another type."""
        conn_id = self.s3connect_conn_id
        try:
            conn = self.get_connection(conn_id)
        except AirflowNotFoundException:
            raise ConnectionNotFoundError(
                f"Connection {conn_id!r} is not defined: create it with type {CONN_TYPE!r} (Admin > Connections, "
                f"a secrets backend, or AIRFLOW_CONN_{conn_id.upper()}), or pass another s3connect_conn_id."
            ) from None
        if conn.conn_type and conn.conn_type != CONN_TYPE:
            raise ConnectionSettingsError(
                conn_id,
                "conn_type",
                f"the connection is of type {conn.conn_type!r}, not {CONN_TYPE!r}",
                f"choose the {CONN_TYPE!r} type for it, or pass the id of an {CONN_TYPE} connection",
            )
        return conn

    def macro_fallbacks(self) -> Mapping[str, str | None]:
        """Lowest-priority macro values: the connection's fields, and Airflow's base URL host as env_id."""
        settings = self.settings
        env_id = settings.env_id or urlsplit(conf.get("api", "base_url", fallback="") or "").hostname
        return {"tenant": settings.tenant, "root_tenant_id": settings.root_tenant_id, "env_id": env_id}

    def fixed_macros(self) -> dict[str, str]:
        """The macro values the connection's own fields fix (Tenant, Root Tenant ID,
        Environment ID): the authority for its scope."""
        settings = self.settings
        found = {"tenant": settings.tenant, "root_tenant_id": settings.root_tenant_id, "env_id": settings.env_id}
        return {name: value for name, value in found.items() if value}

    def render_path_prefix(self, values: MacroValues) -> str:
        """Render the macros of the connection's path_prefix for this run; the scope follows it.

        The connection's fixed values win and run conf is never read
        (:meth:`MacroValues.for_scope`); keys below the prefix keep the run's values.
        """
        template = self._template
        scoped = values.for_scope(self.fixed_macros(), macro_names(template))
        self._render_tags(values)
        return self.pin_path_prefix(render(template, scoped))

    def _render_tags(self, values: MacroValues) -> None:
        """The connection's tag values with this run's macros (``owner={tenant}``), filled
        as its path_prefix is: the connection's fixed values win, run conf is not read."""
        tags = parse_tags(self.settings.tags)
        used = {name for value in tags.values() for name in macro_names(value)}
        if not used:
            return
        scoped = values.for_scope(self.fixed_macros(), used)
        rendered = {name: render(value, scoped) for name, value in tags.items()}
        self._replace_settings(tags=json.dumps(rendered))

    def override_requests(self, *, sse_customer_key: str | None = None, requester_pays: bool | None = None) -> None:
        """Options of every request of this hook from now on, over the connection's: an
        operator's SSE-C key or Requester Pays then reach its reads, listings, HEADs and
        copy sources, not only its writes (a key the reads lack cannot read what was
        written with it; a Requester Pays bucket refuses every request that does not pay)."""
        given: dict[str, Any] = {"sse_customer_key": sse_customer_key, "requester_pays": requester_pays}
        given = {name: value for name, value in given.items() if value is not None}
        if given.get("sse_customer_key"):
            mask_secret(given["sse_customer_key"])
            # The caller's SSE-C key replaces the connection's encryption, which it excludes.
            given.update(server_side_encryption=None, kms_key_id=None, bucket_key_enabled=None,
                         kms_encryption_context=None)  # fmt: skip
        if given:
            self._replace_settings(**given)

    def _replace_settings(self, **fields: Any) -> None:
        """Settings with ``fields`` replaced; the client is built again, since its scope
        guard and request options are bound when it is built."""
        with self._lock:
            self._settings = dataclasses.replace(self.settings, **fields)
            self._client = None

    def pin_path_prefix(self, rendered: str) -> str:
        """Work under ``rendered``, which must be an instance of the connection's path_prefix
        (:func:`instance_values`): a hook can narrow its scope to one run's, never leave it."""
        return self.pin_prefix_values(instance_values(self._template, rendered, self.fixed_macros()))

    def pin_prefix_values(self, values: Mapping[str, str]) -> str:
        """Work under the connection's path_prefix filled with ``values`` (by macro field, as
        :attr:`prefix_values` gives them): what a trigger serializes instead of a prefix."""
        rendered = fill_instance(self._template, values, self.fixed_macros())
        with self._lock:
            self._replace_settings(path_prefix=rendered)
            self._prefix_values = dict(values)
            self._prefix_rendered = True
            return rendered

    @property
    def prefix_values(self) -> dict[str, str]:
        """The macro values of the pinned path_prefix (empty when it has no macros)."""
        self.scope_settings  # noqa: B018 - refuses a prefix whose macros were never rendered
        return dict(self._prefix_values)

    @property
    def _template(self) -> str:
        """The connection's path_prefix as configured, macros and all (before any pin)."""
        self.settings  # noqa: B018 - reads the connection once
        assert self._configured_prefix is not None
        return self._configured_prefix

    @property
    def scope_settings(self) -> ConnectionSettings:
        """Settings whose path_prefix is final: refuses a prefix whose macros were never rendered."""
        settings = self.settings
        if not self._prefix_rendered and "{" in settings.path_prefix:
            raise MacroError(
                f"Connection {settings.conn_id!r} has macros in path_prefix {settings.path_prefix!r}: "
                "use it from an s3connect operator or sensor, or call hook.render_path_prefix(...) first."
            )
        return settings

    def get_session(self) -> boto3.session.Session:
        """A boto3 session with the connection's credentials whose S3 clients and resources
        carry the connection's scope guard; on a scoped connection, clients of other
        services are refused (their requests are not S3's, so no scope could hold)."""
        from airflow_s3connect import client as clients

        return clients.GuardedSession(self._raw_session(), self.scope_settings)

    def _raw_session(self) -> boto3.session.Session:
        """The session our own clients are built from (STS for the Test button included)."""
        from airflow_s3connect import client as clients  # boto3 is loaded by a task, not by parsing a DAG

        with self._lock:
            if self._session is None:
                self._session = clients.build_session(self.settings)
            return self._session

    def notification_queue(self, queue_url: str, wait_seconds: float = 20) -> NotificationQueue:
        """The SQS queue the bucket's S3 notifications arrive in, read with the connection's
        credentials (either auth mode, refreshed like the S3 client's). The scope applies to
        what the messages name: a watcher drops a notification of a key outside it."""
        from airflow_s3connect import client as clients
        from airflow_s3connect.notifications import queue_address
        from airflow_s3connect.queues import NotificationQueue

        settings = self.settings
        sqs = clients.build_sqs_client(settings, self._raw_session(), queue_url)
        return NotificationQueue(sqs, queue_url, queue_address(queue_url), settings.region_name, wait_seconds)

    def get_conn(self) -> S3Client:
        """The boto3 S3 client (scope-guarded, standard retries, pool sized to max_concurrency)."""
        from airflow_s3connect import client as clients

        with self._lock:
            if self._client is None:
                self._client = clients.build_s3_client(self.scope_settings, self._raw_session())
            return self._client

    def resolve(self, key: str, bucket: str | None = None) -> ObjectRef:
        """Where ``key`` lives: joined to path_prefix, checked against the scope, before any request."""
        return self.scope_settings.scope.resolve(key, bucket)

    def probe_prefix(self) -> str:
        """The path_prefix to test without a run: the connection's own macro values
        rendered, every other macro replaced by :data:`PROBE_SEGMENT`. It has the shape of
        what operators list, and it lies inside the policy the setup page prints."""
        return connection_pattern(self.settings.path_prefix, self.macro_fallbacks(), wildcard=PROBE_SEGMENT)

    def test_connection(self) -> tuple[bool, str]:
        """Prove the connection works with the least permission its scope implies, quickly.

        With a bucket: one ListObjectsV2 (MaxKeys=1) under :meth:`probe_prefix`, never
        ListAllMyBuckets. Without one: on a custom endpoint, ListBuckets at that endpoint
        (AccessDenied still proves the keys); on AWS, STS GetCallerIdentity, which needs no
        permission. Short timeouts and at most :data:`TEST_ATTEMPTS` attempts keep an
        unreachable endpoint from holding the UI's request for minutes.
        """
        typed = typed_conn_id(self.s3connect_conn_id)
        try:
            settings = dataclasses.replace(
                self.settings,
                conn_id=typed,
                path_prefix=self.probe_prefix(),
                connect_timeout=min(self.settings.connect_timeout, TEST_TIMEOUT),
                read_timeout=min(self.settings.read_timeout, TEST_TIMEOUT),
                max_attempts=min(self.settings.max_attempts, TEST_ATTEMPTS),
            )
            return self._test(settings)
        except S3ConnectError as exc:
            return False, str(exc).replace(repr(self.s3connect_conn_id), repr(typed))

    @staticmethod
    def _test(settings: ConnectionSettings) -> tuple[bool, str]:
        from airflow_s3connect import client as clients

        session = clients.build_session(settings)
        scope = settings.scope
        if scope.bucket is None and settings.endpoint_url:
            endpoint = urlsplit(settings.endpoint_url).netloc
            try:
                with translated("ListBuckets", role_arn=settings.role_arn):
                    clients.build_s3_client(settings, session).list_buckets()
                seen = "ListBuckets works"
            except AccessDeniedError:
                seen = "ListBuckets is denied, which no operator needs"
            return True, (
                f"Connected: {endpoint} accepted the credentials ({seen}). No bucket is set: "
                "operators must pass bucket=..., and no object permission was tested."
            )
        if scope.bucket is None:
            sts = clients.build_sts_client(settings, session)
            with translated("GetCallerIdentity", role_arn=settings.role_arn):
                identity = sts.get_caller_identity()
            return True, (
                f"Authenticated as {identity['Arn']}. No bucket is set: "
                "operators must pass bucket=..., and no S3 permission was tested."
            )
        client = clients.build_s3_client(settings, session)
        try:
            with translated("ListObjectsV2", scope.bucket, role_arn=settings.role_arn):
                page = client.list_objects_v2(Bucket=scope.bucket, Prefix=scope.prefix, MaxKeys=1)
        except AccessDeniedError as exc:
            note = (
                " A Put-only connection needs only s3:PutObject and can ignore this."
                if exc.action == "s3:ListBucket"
                else ""
            )
            if settings.expected_bucket_owner:
                note += f" Or account {settings.expected_bucket_owner} (Expected Bucket Owner) does not own the bucket."
            return False, f"{exc}{note}"
        seen = "objects present" if page.get("KeyCount", 0) else "empty so far"
        owner = (
            f" The bucket's owner is pinned to account {settings.expected_bucket_owner}: S3 refuses every request "
            "if another account owns it."
            if settings.expected_bucket_owner
            else ""
        )
        return True, f"Connected: s3:ListBucket works on {scope.describe()} ({seen}).{owner}"


#: Stands for each macro the connection cannot fix when the Test button or ``s3connect
#: check`` probes a macro path_prefix.
PROBE_SEGMENT = "s3connect-test"
#: Seconds to connect and to wait for an answer, and attempts, for the Test button.
TEST_TIMEOUT = 5
TEST_ATTEMPTS = 2


def typed_conn_id(conn_id: str) -> str:
    """The connection id the user typed, when Airflow's Test button runs the hook.

    The API server tests a connection under a random transient id (so that the form's
    unsaved values can be read through an environment variable); messages naming that id
    would confuse the user. The route's request body, a local of Airflow's handler, still
    has the typed one. Isolated here, and tested through the real API server, so that a
    change in Airflow shows as a failing test rather than a wrong name.
    """
    frame = inspect.currentframe()
    while frame is not None:
        typed = getattr(frame.f_locals.get("test_body"), "connection_id", None)
        in_route = frame.f_code.co_name == "test_connection" and str(frame.f_globals.get("__name__", "")).startswith(
            "airflow.api_fastapi"
        )
        if in_route and isinstance(typed, str) and typed:
            return typed
        frame = frame.f_back
    return conn_id
