"""The setup page's FastAPI app (mounted by :mod:`airflow_s3connect.plugins.setup_page`):
the help of ``s3connect policy / trust-policy / external-id`` in the Airflow UI. An admin
picks an ``s3connect`` connection and gets its external ID, the role trust policy and the
least-privilege policy, ready to copy.

Only users allowed to read connections see it (Airflow's own authorization dependency).
Nothing secret is shown: no key, no secret, no token; the external ID is the connection's
own, else the tenant's derived one.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from airflow.api_fastapi.core_api.security import requires_access_connection
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse

from airflow_s3connect.cli import external_id_secret
from airflow_s3connect.connection import CONN_TYPE, ConnectionSettings, settings_from_connection
from airflow_s3connect.errors import S3ConnectError
from airflow_s3connect.iam import OPERATION_ACTIONS, SetupError, external_id_for, least_privilege_policy, trust_policy

DEFAULT_OPERATIONS = ("put", "get", "list", "sensor", "delete")
PRINCIPAL_HINT = "arn:aws:iam::111122223333:role/airflow-worker"

app = FastAPI(title="S3 Connect setup", docs_url=None, redoc_url=None, openapi_url=None)


def _connections() -> dict[str, ConnectionSettings | S3ConnectError]:
    """Every s3connect connection of the metadata database, parsed (or why it cannot be)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    parsed: dict[str, ConnectionSettings | S3ConnectError] = {}
    with create_session() as session:
        rows = session.query(Connection).filter(Connection.conn_type == CONN_TYPE).order_by(Connection.conn_id)
        for row in rows:
            try:
                parsed[row.conn_id] = settings_from_connection(row)
            except S3ConnectError as exc:
                parsed[row.conn_id] = exc
    return parsed


def _iam_prefix(settings: ConnectionSettings) -> str:
    """The connection's path_prefix for IAM: each macro ({tenant}, {date}...) becomes ``*``."""
    return re.sub(r"\{[^{}]*\}", "*", settings.path_prefix)


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
<label>Connection <select name="conn_id" id="conn_id" onchange="this.form.submit()">{options}</select></label>
<label>Principal that assumes the role (the workers' identity)
<input name="principal" id="principal" size="60" value="{principal}"></label>
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
    conn_id: str | None = None,
    principal: str = PRINCIPAL_HINT,
    operations: list[str] = Query(default=list(DEFAULT_OPERATIONS)),  # noqa: B008 - FastAPI's idiom
) -> str:
    connections = _connections()
    chosen = conn_id if conn_id in connections else next(iter(connections), None)
    options = "".join(
        f"<option value='{html.escape(c)}'{' selected' if c == chosen else ''}>{html.escape(c)}</option>"
        for c in connections
    )
    checkboxes = "".join(
        f"<label><input type='checkbox' name='operations' value='{op}'{' checked' if op in operations else ''}> "
        f"{op}: {', '.join(actions)}</label>"
        for op, actions in OPERATION_ACTIONS.items()
    )
    body = ""
    if chosen is None:
        body = f"<p>No connection of type {CONN_TYPE!r} yet: create one in Admin &gt; Connections.</p>"
    else:
        try:
            settings = connections[chosen]
            if isinstance(settings, S3ConnectError):
                raise settings
            if settings.bucket is None:
                raise SetupError("the connection has no bucket: fill its Bucket field to scope the policy")
            external_id, origin = _external_id(settings)
            sections = [f"<p>Bucket <code>{html.escape(settings.bucket)}</code>, prefix "
                        f"<code>{html.escape(_iam_prefix(settings) or '(whole bucket)')}</code>, "
                        f"auth <code>{settings.auth_type.value}</code>.</p>"]  # fmt: skip
            sections.append(_block(f"External ID ({origin})", "external-id", external_id or "(none)"))
            if external_id:
                sections.append(_block("Role trust policy", "trust-policy", trust_policy(principal, external_id)))
            policy = least_privilege_policy(settings.bucket, _iam_prefix(settings), operations)
            sections.append(_block("Least-privilege policy (attach to the role)", "policy", policy))
            body = "".join(sections)
        except (S3ConnectError, SetupError) as exc:
            body = f"<p class='error'>Connection {html.escape(chosen)!s}: {html.escape(str(exc))}</p>"
    return PAGE.format(options=options, principal=html.escape(principal), checkboxes=checkboxes, body=body)
