"""``s3connect://`` for Airflow's ObjectStoragePath and for every fsspec user, through an
``s3connect`` connection.

Its own scheme, so that it never competes with the amazon provider for ``s3://``:
``ObjectStoragePath("s3connect://bucket/key", conn_id="my_conn")``, or with the connection
in the URL, ``s3connect://my_conn@bucket/key``, which is how ``fsspec.open``, pandas,
polars, pyarrow and DuckDB build a filesystem from a URL and storage options. The
filesystem uses the connection's client (its credentials, assumed roles refreshing,
endpoint and checksum settings) and refuses every path outside the connection's scope.
"""

from __future__ import annotations

from typing import Any

from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.filesystem import PROTOCOL, S3ConnectFileSystem

schemes = [PROTOCOL]


class S3ConnectConnectionFileSystem(S3ConnectFileSystem):
    """The filesystem of an Airflow connection (default ``s3connect_default``).

    :param conn_id: the connection; in a URL, its user part (``s3connect://conn_id@bucket/key``).
    :param overwrite: default True; False makes writes create-only.

    A path_prefix with run macros cannot be used here (there is no run to render them).
    """

    def __init__(self, conn_id: str | None = None, overwrite: bool = True, **storage_options: Any) -> None:
        # pandas retries a read that met a PermissionError (our scope's refusal included)
        # with anon=True: the connection decides the credentials, and the retry then meets
        # the same refusal, which is what the user must see.
        storage_options.pop("anon", None)
        if storage_options:
            raise ArgumentError(
                f"Unknown storage options {sorted(storage_options)}: s3connect:// takes 'conn_id' and 'overwrite' "
                "(credentials, endpoint and the rest come from the connection)."
            )
        from airflow_s3connect.hooks.s3connect import S3ConnectHook

        hook = S3ConnectHook(s3connect_conn_id=conn_id or DEFAULT_CONN_ID)
        super().__init__(hook.get_conn(), hook.scope_settings.scope, config=hook.transfer_config(),
                         overwrite=bool(overwrite),
                         meter=lambda operation, open_ended: hook.meter(operation, by="filesystem",
                                                                        open_ended=open_ended))  # fmt: skip
        self.conn_id = conn_id or DEFAULT_CONN_ID


def get_fs(conn_id: str | None, storage_options: dict[str, Any] | None = None) -> S3ConnectFileSystem:
    """ObjectStoragePath's entry: the filesystem of ``conn_id`` (``storage_options``:
    ``overwrite``)."""
    return S3ConnectConnectionFileSystem(conn_id, **(storage_options or {}))
