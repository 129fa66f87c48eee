"""``s3connect://`` for Airflow's ObjectStoragePath, through an ``s3connect`` connection.

Its own scheme, so that it never competes with the amazon provider for ``s3://``:
``ObjectStoragePath("s3connect://bucket/key", conn_id="my_conn")``. The filesystem uses
the connection's client (its credentials, assumed roles refreshing, endpoint and
checksum settings) and refuses every path outside the connection's scope.
"""

from __future__ import annotations

from typing import Any

from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.filesystem import PROTOCOL, S3ConnectFileSystem

schemes = [PROTOCOL]


def get_fs(conn_id: str | None, storage_options: dict[str, Any] | None = None) -> S3ConnectFileSystem:
    """The filesystem of ``conn_id`` (default ``s3connect_default``).

    ``storage_options``: ``overwrite`` (default True; False makes writes create-only).
    A path_prefix with run macros cannot be used here (there is no run to render them).
    """
    from airflow_s3connect.hooks.s3connect import S3ConnectHook

    options = dict(storage_options or {})
    overwrite = bool(options.pop("overwrite", True))
    if options:
        raise ArgumentError(f"Unknown storage options {sorted(options)}: s3connect:// takes only 'overwrite'.")
    hook = S3ConnectHook(s3connect_conn_id=conn_id or DEFAULT_CONN_ID)
    return S3ConnectFileSystem(
        hook.get_conn(), hook.scope_settings.scope, config=hook.transfer_config(), overwrite=overwrite
    )
