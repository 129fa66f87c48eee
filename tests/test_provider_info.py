"""Provider info against Airflow's own schemas, and the form Airflow builds from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_s3connect.provider_info import get_provider_info

SPEC_FIELDS = {
    "auth_type",
    "aws_session_token",
    "role_arn",
    "external_id",
    "role_session_name",
    "session_duration",
    "region_name",
    "endpoint_url",
    "sts_endpoint_url",
    "addressing_style",
    "verify_ssl",
    "ca_bundle",
    "proxy_url",
    "checksum_mode",
    "engine",
    "bucket",
    "expected_bucket_owner",
    "server_side_encryption",
    "kms_key_id",
    "bucket_key_enabled",
    "kms_encryption_context",
    "sse_customer_key",
    "acl",
    "storage_class",
    "tags",
    "requester_pays",
    "path_prefix",
    "tenant",
    "root_tenant_id",
    "env_id",
    "max_concurrency",
    "max_attempts",
    "connect_timeout",
    "read_timeout",
}


def _schema(name: str) -> dict:
    return json.loads((Path(airflow.__file__).parent / name).read_text())


@pytest.mark.parametrize("schema_file", ["provider.yaml.schema.json", "provider_info.schema.json"])
def test_provider_info_validates_against_airflow_schema(schema_file: str) -> None:
    jsonschema.validate(get_provider_info(), _schema(schema_file))


def test_conn_fields_hold_every_spec_field_with_schema() -> None:
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "s3connect"
    assert conn_type["hook-class-name"] == "airflow_s3connect.hooks.s3connect.S3ConnectHook"
    fields = conn_type["conn-fields"]
    assert set(fields) == SPEC_FIELDS
    for name, field in fields.items():
        assert field["label"], name
        assert field["description"], name
        # Optional in the form: a type without null makes Airflow's UI require the field.
        assert field["schema"]["type"][1] == "null", name
        assert field["schema"]["type"][0] in ("string", "integer", "boolean"), name
    assert fields["auth_type"]["schema"]["enum"] == ["access_key", "assume_role"]
    assert fields["addressing_style"]["schema"]["enum"] == ["auto", "path", "virtual"]
    assert fields["aws_session_token"]["schema"]["format"] == "password"
    assert fields["role_arn"]["schema"]["pattern"].startswith("^arn:aws")
    assert (fields["session_duration"]["schema"]["minimum"], fields["session_duration"]["schema"]["maximum"]) == (
        900,
        43200,
    )
    assert (fields["max_concurrency"]["schema"]["minimum"], fields["max_concurrency"]["schema"]["maximum"]) == (1, 64)
    assert fields["verify_ssl"]["schema"] == {"type": ["boolean", "null"], "default": True}
    for url_field in ("endpoint_url", "sts_endpoint_url", "proxy_url"):
        assert fields[url_field]["schema"]["format"] == "url"
    behaviour = conn_type["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"host", "port", "schema"}
    assert behaviour["relabeling"] == {"login": "AWS Access Key ID", "password": "AWS Secret Access Key"}
    assert "login" in behaviour["placeholders"]


def test_providers_manager_builds_the_form() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    ours = {name for name in widgets if name.startswith("extra__s3connect__")}
    assert ours == {f"extra__s3connect__{name}" for name in SPEC_FIELDS}
    token = widgets["extra__s3connect__aws_session_token"]
    assert token.is_sensitive
    assert not widgets["extra__s3connect__role_arn"].is_sensitive
    assert widgets["extra__s3connect__auth_type"].field["schema"]["title"] == "Authentication"
    behaviour = manager.field_behaviours["s3connect"]
    assert behaviour["relabeling"]["login"] == "AWS Access Key ID"
    assert "extra__s3connect__role_arn" in behaviour["placeholders"]
    assert "airflow-s3connect" in manager.providers


def test_airflow_cli_lists_provider_and_hook() -> None:
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    env = dict(os.environ)
    listed = subprocess.run([airflow_bin, "providers", "list"], capture_output=True, text=True, env=env, check=True)
    assert "airflow-s3connect" in listed.stdout
    hooks = subprocess.run([airflow_bin, "providers", "hooks"], capture_output=True, text=True, env=env, check=True)
    line = next(x for x in hooks.stdout.splitlines() if x.startswith("s3connect"))
    assert "S3ConnectHook" in line
    assert "s3connect_conn_id" in line


def test_setup_plugin_is_registered_and_light_to_load() -> None:
    """Airflow loads plugins in every task process: ours must not pull in the API server."""
    import importlib.metadata
    import subprocess
    import sys

    (entry,) = [e for e in importlib.metadata.entry_points(group="airflow.plugins") if e.name == "s3connect_setup"]
    assert entry.value == "airflow_s3connect.plugins.setup_page:S3ConnectSetupPlugin"
    probe = (
        "import sys; from airflow_s3connect.plugins.setup_page import S3ConnectSetupPlugin as P; "
        "assert 'fastapi' not in sys.modules and 'airflow.api_fastapi.core_api.security' not in sys.modules; "
        "apps = P().fastapi_apps; assert apps[0]['url_prefix'] == '/s3connect'; "
        "assert 'airflow.api_fastapi.core_api.security' in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
