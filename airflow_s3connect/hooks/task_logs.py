"""Remote task logs through an ``s3connect`` connection (Airflow 3.3's RemoteLogIO).

Configured with Airflow's own options, nothing else::

    [logging]
    remote_logging = True
    remote_base_log_folder = s3connect://my-bucket/airflow-logs
    remote_log_conn_id = my_s3connect

Airflow picks this class for the ``s3connect://`` scheme from the provider's
``remote-logging`` entry, on workers (which upload each try's log when it ends) and on
the API server (which reads them back for the UI). The connection brings its scope,
assumed roles with an external ID, and the checksum settings S3-compatible stores need.

A try's log is appended to what an earlier upload of the same try left (a task that
deferred uploads twice), as one PutObject of the whole text: a reader sees the old log or
the new one, never half. Needs s3:PutObject, s3:GetObject and s3:ListBucket to write
(without ListBucket, AWS answers a GetObject of a log not yet written with 403, not 404),
and s3:ListBucket with s3:GetObject to read back.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import NoSuchKeyError, S3ConnectError
from airflow_s3connect.scope import split_s3_uri

if TYPE_CHECKING:
    from airflow_s3connect.hooks.s3connect import S3ConnectHook

SCHEME = "s3connect"
#: A task log larger than this is not appended to or shown (read into memory whole).
MAX_LOG_BYTES = 256 * 1024 * 1024


@dataclass
class S3ConnectRemoteLogIO:
    """Writes and reads task logs under ``remote_base`` (``s3connect://bucket/folder``)."""

    remote_base: str
    base_log_folder: pathlib.Path
    delete_local_copy: bool = False
    conn_id: str = DEFAULT_CONN_ID
    processors: tuple[Any, ...] = field(default=())

    def __post_init__(self) -> None:
        self.base_log_folder = pathlib.Path(self.base_log_folder)
        if not self.remote_base.startswith(f"{SCHEME}://"):
            raise S3ConnectError(f"remote_base_log_folder {self.remote_base!r}: give {SCHEME}://bucket/folder.")
        self.bucket, folder = split_s3_uri("s3://" + self.remote_base[len(f"{SCHEME}://") :])
        self.folder = folder.rstrip("/") + "/" if folder else ""
        self._hook: S3ConnectHook | None = None

    @classmethod
    def from_config(cls) -> S3ConnectRemoteLogIO:
        """Built by Airflow from ``[logging]``: the folder, the connection, local copies."""
        from airflow_s3connect._compat import conf

        return cls(
            remote_base=conf.get_mandatory_value("logging", "remote_base_log_folder"),
            base_log_folder=pathlib.Path(os.path.expanduser(conf.get_mandatory_value("logging", "base_log_folder"))),
            delete_local_copy=conf.getboolean("logging", "delete_local_logs", fallback=False),
            conn_id=conf.get("logging", "remote_log_conn_id", fallback="") or DEFAULT_CONN_ID,
        )

    @property
    def hook(self) -> S3ConnectHook:
        if self._hook is None:
            from airflow_s3connect.hooks.s3connect import S3ConnectHook

            self._hook = S3ConnectHook(s3connect_conn_id=self.conn_id)
        return self._hook

    def _key(self, relative: str) -> str:
        key = self.folder + relative.lstrip("/")
        return self.hook.scope_settings.scope.check(self.bucket, key).key

    def upload(self, path: os.PathLike[str] | str, ti: Any = None) -> None:
        """Append the local log at ``path`` to its remote copy; then empty or remove it."""
        local = pathlib.Path(path)
        local = local if local.is_absolute() else self.base_log_folder / local
        base = self.base_log_folder.resolve()
        try:
            relative = local.resolve().relative_to(base)
        except ValueError:
            return  # not a task log of this deployment
        if not local.is_file():
            return
        text = local.read_text(errors="replace")
        uri = f"s3://{self.bucket}/{self._key(relative.as_posix())}"
        try:
            earlier = self.hook.read(uri, max_bytes=MAX_LOG_BYTES).decode(errors="replace")
        except NoSuchKeyError:
            earlier = ""
        if earlier:
            text = earlier + ("" if earlier.endswith("\n") else "\n") + text
        self.hook.upload(uri, data=text, content_type="text/plain; charset=utf-8")
        if self.delete_local_copy:
            shutil.rmtree(local.parent, ignore_errors=True)
        else:
            local.write_text("")

    def read(self, relative_path: str, ti: Any = None) -> tuple[list[str], list[str] | None]:
        """Every remote log under ``relative_path``: (their URIs, their texts)."""
        prefix = self.folder + relative_path.lstrip("/")
        found = sorted(i.key for i in self.hook.iter_objects(f"s3://{self.bucket}/{prefix}"))
        if not found:
            return [], None
        texts = [self.hook.read(f"s3://{self.bucket}/{key}", max_bytes=MAX_LOG_BYTES).decode(errors="replace")
                 for key in found]  # fmt: skip
        return [f"{SCHEME}://{self.bucket}/{key}" for key in found], texts
