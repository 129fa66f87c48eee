"""The setup page's FastAPI app (mounted by :mod:`airflow_s3connect.plugins.setup_page`):
the help of ``s3connect policy / trust-policy / external-id`` in the Airflow UI. An admin
picks or types an ``s3connect`` connection id (resolved as tasks resolve it, so connections
of environment variables and secrets backends work too) and gets its external ID, the role
trust policy and the least-privilege policy for the operations ticked, ready to copy.

Only users allowed to read connections see it (Airflow's own authorization dependency),
and each connection is authorized by its id, as Airflow's connection routes are: a user
allowed one team's connections neither lists nor opens another's. Nothing secret is
shown: no key, no secret, no token; the external ID is the connection's
own, else the tenant's derived one.
"""

from __future__ import annotations

import html
import json
import os
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_connection
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse

from airflow_s3connect.cli import external_id_secret
from airflow_s3connect.connection import CONN_TYPE, ConnectionSettings
from airflow_s3connect.errors import S3ConnectError, SetupError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.iam import (
    OPERATIONS,
    external_id_for,
    least_privilege_policy,
    notification_setup,
    trust_policy,
)
from airflow_s3connect.macros import connection_pattern

#: Ticked when the page opens: reading and writing, never deleting unless asked for.
DEFAULT_OPERATIONS = ("put", "get", "list", "sensor")
PRINCIPAL_HINT = "arn:aws:iam::111122223333:role/airflow-worker"

app = FastAPI(title="S3 Connect setup", docs_url=None, redoc_url=None, openapi_url=None)


def _known_conn_ids() -> list[str]:
    """s3connect connections the page can list: the metadata database's and those of
    ``AIRFLOW_CONN_*`` variables. Secrets backends cannot be listed; their ids are typed."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        # The ids only: loading whole rows would decrypt every password to list names.
        ids = set(session.scalars(select(Connection.conn_id).where(Connection.conn_type == CONN_TYPE)))
    for name, value in os.environ.items():
        if name.startswith("AIRFLOW_CONN_") and _is_s3connect(value):
            ids.add(name[len("AIRFLOW_CONN_") :].lower())
    return sorted(ids)


def _readable(user: Any, conn_ids: list[str]) -> list[str]:
    """The ids ``user`` may read, asked of the auth manager one connection at a time."""
    from airflow.models.connection import Connection

    manager = get_auth_manager()
    allowed = []
    for conn_id in conn_ids:
        details = ConnectionDetails(conn_id=conn_id, team_name=Connection.get_team_name(conn_id))
        if manager.is_authorized_connection(method="GET", details=details, user=user):
            allowed.append(conn_id)
    return allowed


def _is_s3connect(value: str) -> bool:
    if value.startswith(f"{CONN_TYPE}://"):
        return True
    try:
        return bool(json.loads(value).get("conn_type") == CONN_TYPE)
    except (ValueError, AttributeError):
        return False


def _resolve(conn_id: str) -> tuple[ConnectionSettings, str]:
    """The connection as a task resolves it (environment, secrets backends, then the
    metadata database) and its path_prefix for IAM: the connection's own macro values
    rendered, every other macro ``*`` (the prefix the Test button probes lies inside it)."""
    hook = S3ConnectHook(s3connect_conn_id=conn_id)
    return hook.settings, connection_pattern(hook.settings.path_prefix, hook.macro_fallbacks())


def _external_id(settings: ConnectionSettings) -> tuple[str, str]:
    if settings.external_id:
        return settings.external_id, "the connection's External ID field"
    tenant = settings.tenant or settings.conn_id
    try:
        return external_id_for(tenant, external_id_secret()), f"derived for tenant {tenant!r} (s3connect external-id)"
    except SetupError as exc:
        return "", str(exc)


def _block(title: str, element_id: str, document: Any) -> str:
    text = html.escape(json.dumps(document, indent=2) if not isinstance(document, str) else document)
    return (
        f"<section><h2>{html.escape(title)}</h2>"
        f"<button type='button' data-copy='{element_id}'>Copy</button>"
        f"<pre id='{element_id}'>{text}</pre></section>"
    )


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>S3 Connect setup</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; max-width: 60rem; }}
pre {{ background: #f4f4f5; padding: .75rem; overflow-x: auto; }}
label {{ display: block; margin: .4rem 0; }} .error {{ color: #b91c1c; }}
</style></head><body>
<h1>S3 Connect setup</h1>
<form method="get">
<label>Connection id (from the metadata database, an AIRFLOW_CONN_ variable or a secrets backend)
<input name="conn_id" id="conn_id" list="known" value="{conn_id}" size="40"></label>
<datalist id="known">{options}</datalist>
<label>Principal that assumes the role (the workers' identity)
<input name="principal" id="principal" size="60" value="{principal}"></label>
<label>SQS queue URL, for an event watcher on S3 notifications (operation watch-sqs)
<input name="queue_url" id="queue_url" size="60" value="{queue_url}"></label>
<fieldset><legend>Operations</legend>{checkboxes}</fieldset>
<button type="submit">Show</button>
</form>
{body}
<script>
document.querySelectorAll("button[data-copy]").forEach(function (button) {{
  button.addEventListener("click", function () {{
    navigator.clipboard.writeText(document.getElementById(button.dataset.copy).textContent);
  }});
}});
</script>
</body></html>"""


@app.get("/", response_class=HTMLResponse, dependencies=[Depends(requires_access_connection(method="GET"))])
def setup_page(
    user: GetUserDep,
    conn_id: str | None = None,
    principal: str = PRINCIPAL_HINT,
    operations: list[str] = Query(default=list(DEFAULT_OPERATIONS)),  # noqa: B008 - FastAPI's idiom
    queue_url: str = "",
) -> str:
    known = _readable(user, _known_conn_ids())
    chosen = conn_id or next(iter(known), None)
    options = "".join(f"<option value='{html.escape(c)}'></option>" for c in known)
    checkboxes = "".join(
        f"<label><input type='checkbox' name='operations' value='{op}'{' checked' if op in operations else ''}> "
        f"{op}: {', '.join(operation.grants)}</label>"
        for op, operation in OPERATIONS.items()
    )
    body = ""
    if chosen is None:
        body = (
            f"<p>No connection of type {CONN_TYPE!r} found: create one, "
            "or type the id of one a secrets backend holds.</p>"
        )
    elif not _readable(user, [chosen]):
        body = f"<p class='error'>You may not read connection {html.escape(chosen)}.</p>"
    else:
        try:
            settings, prefix = _resolve(chosen)
            if settings.bucket is None:
                raise SetupError("the connection has no bucket: fill its Bucket field to scope the policy")
            external_id, origin = _external_id(settings)
            owner = settings.expected_bucket_owner or "(not pinned)"
            sections = [f"<p>Bucket <code>{html.escape(settings.bucket)}</code>, prefix "
                        f"<code>{html.escape(prefix or '(whole bucket)')}</code>, "
                        f"auth <code>{settings.auth_type.value}</code>, owner "
                        f"<code>{html.escape(owner)}</code>.</p>"]  # fmt: skip
            sections.append(_block(f"External ID ({origin})", "external-id", external_id or "(none)"))
            if external_id:
                sections.append(_block("Role trust policy", "trust-policy", trust_policy(principal, external_id)))
            policy = least_privilege_policy(
                settings.bucket, prefix, operations, settings.write_defaults, queue_url or None
            )
            sections.append(_block("Least-privilege policy (attach to the role)", "policy", policy))
            if queue_url:
                setup = notification_setup(settings.bucket, prefix, queue_url, settings.expected_bucket_owner)
                sections.append(
                    _block(
                        "Bucket notification configuration (aws s3api put-bucket-notification-configuration)",
                        "bucket-notifications",
                        setup["bucket_notification_configuration"],
                    )
                )
                sections.append(_block("Queue access policy (the queue's Policy attribute)", "queue-policy",
                                       setup["queue_policy"]))  # fmt: skip
            body = "".join(sections)
        except (S3ConnectError, SetupError) as exc:
            body = f"<p class='error'>Connection {html.escape(chosen)!s}: {html.escape(str(exc))}</p>"
    return PAGE.format(
        options=options,
        conn_id=html.escape(chosen or ""),
        principal=html.escape(principal),
        checkboxes=checkboxes,
        queue_url=html.escape(queue_url),
        body=body,
    )
