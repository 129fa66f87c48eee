"""S3ConnectDagBundle: DAG files from S3 through an s3connect connection, scoped, exact, versioned.

Configured in ``[dag_processor] dag_bundle_config_list``::

    [{"name": "dags-from-s3",
      "classpath": "airflow_s3connect.bundles.S3ConnectDagBundle",
      "kwargs": {"s3connect_conn_id": "s3connect_dags", "prefix": "dags/", "refresh_interval": 60}}]

The DAG processor syncs the prefix (:class:`~airflow_s3connect.snapshots.Snapshots`):
each refresh is one listing when nothing changed; a change makes a new version, a folder
written whole and swapped in by renaming a symlink, so a parse never sees half a sync.
Unchanged files are linked from the version before, changed ones fetched ETag-pinned in
parallel, and files removed from S3 are absent from the new tree at every depth. The
version (a digest of paths and ETags) is what Airflow records for the DAG's runs; a worker
asked for it rebuilds exactly that tree from the manifest the sync published under the
prefix, so a run started before a change finishes on the code it started with.

Every request goes through the connection: its credentials, its scope (bucket and
path_prefix; the bundle's prefix is relative to it) and its endpoint.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.dag_processing.bundles.base import BaseDagBundle

from airflow_s3connect._compat import bundle_version
from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import S3ConnectError

if TYPE_CHECKING:
    from airflow_s3connect.hooks.s3connect import S3ConnectHook
    from airflow_s3connect.snapshots import Snapshots

log = logging.getLogger(__name__)

#: The symlink the DAG processor parses through: it names the newest version's folder.
CURRENT = "current"


class S3ConnectDagBundle(BaseDagBundle):  # type: ignore[misc]
    """DAG files under ``prefix`` of the connection's bucket (or ``bucket``).

    :param s3connect_conn_id: the ``s3connect`` connection (s3:ListBucket and s3:GetObject
        on the prefix, s3:PutObject on its ``.s3connect-bundle/`` manifests; ``s3connect
        policy --operations bundle``).
    :param prefix: relative to the connection's path_prefix.
    :param bucket: for connections without a bucket.
    """

    supports_versioning = True

    def __init__(
        self,
        *,
        s3connect_conn_id: str = DEFAULT_CONN_ID,
        prefix: str = "",
        bucket: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3connect_conn_id = s3connect_conn_id
        self.prefix = prefix
        self.bucket = bucket

    def __repr__(self) -> str:
        return (
            f"S3ConnectDagBundle(name={self.name!r}, s3connect_conn_id={self.s3connect_conn_id!r}, "
            f"bucket={self.bucket!r}, prefix={self.prefix!r}, version={self.version!r})"
        )

    @cached_property
    def hook(self) -> S3ConnectHook:
        from airflow_s3connect.hooks.s3connect import S3ConnectHook

        return S3ConnectHook(s3connect_conn_id=self.s3connect_conn_id)

    @cached_property
    def snapshots(self) -> Snapshots:
        from airflow_s3connect.errors import MacroError
        from airflow_s3connect.macros import MacroValues
        from airflow_s3connect.snapshots import Snapshots

        hook = self.hook
        try:
            hook.render_path_prefix(MacroValues({}, {}, hook.macro_fallbacks()))
        except MacroError as exc:
            raise MacroError(
                f"The DAG bundle {self.name!r} cannot render path_prefix {hook.settings.path_prefix!r} of "
                f"connection {self.s3connect_conn_id!r}: {exc} A bundle is read outside any DAG run."
            ) from None
        ref = hook.scope_settings.scope.resolve_prefix(self.prefix, self.bucket)
        base = ref.key if not ref.key or ref.key.endswith("/") else ref.key + "/"
        return Snapshots(
            hook.get_conn(), ref.bucket, base, Path(self.versions_dir), Path(self.base_dir) / "manifests",
            hook.transfer_config(),
        )  # fmt: skip

    @property
    def path(self) -> Path:
        if self.version:
            return Path(self.versions_dir) / self.version
        return Path(self.base_dir) / CURRENT

    def _current(self) -> str | None:
        """The version the DAG processor's tree is at, or None before the first sync."""
        try:
            return Path(os.readlink(Path(self.base_dir) / CURRENT)).name
        except OSError:
            return None

    def get_current_version(self) -> Any:
        version = self.version or self._current()
        return bundle_version(version) if version else None

    def initialize(self) -> None:
        with self.lock():
            if self.version:
                self.snapshots.fetch(self.version, self._read)
            elif self._current() is None:
                self._sync()
        super().initialize()

    def refresh(self) -> None:
        if self.version:
            raise S3ConnectError(f"Bundle {self.name!r} is pinned to version {self.version}: it is not refreshed.")
        with self.lock():
            self._sync()

    def _sync(self) -> None:
        from airflow_s3connect.snapshots import point

        current = self._current()
        version, changed = self.snapshots.sync(current, self._publish)
        if changed or current is None:
            point(Path(self.base_dir) / CURRENT, Path(self.versions_dir) / version)
            log.info("DAG bundle %r is at version %s (was %s)", self.name, version, current)

    def _publish(self, key: str, body: bytes) -> None:
        self.hook.upload(f"s3://{self.snapshots.bucket}/{key}", data=body, content_type="application/json")

    def _read(self, key: str) -> bytes:
        return self.hook.read(f"s3://{self.snapshots.bucket}/{key}")
