"""What a transfer must undo if it stops, registered where it is created; one cancel.

No Airflow here. Downloads write temporary files, uploads and copies open multipart
uploads: each registers them with the transfer's :class:`Cleanup` the moment they exist
(as s3transfer registers its cleanups where a resource is created), so one place knows
what is open, reports it (the operators keep it in Airflow's task state, so a retry after
a killed worker aborts what the killed try left), names temporary files, and carries the
one reason a transfer was cancelled for.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from airflow_s3connect.errors import TransferInterrupted

# Temporary names: unique per process (random token) and per file (serial); cheaper than a
# uuid4 per object, and O_EXCL still refuses a clash.
_TEMP_TOKEN = secrets.token_hex(4)
_TEMP_SERIAL = itertools.count()


def temp_path(target: Path, owner: str | None) -> Path:
    """Where ``target`` is written until complete: beside it, hidden. With an ``owner`` (one
    task instance, the same for all its tries) the name is stable, so a retry finds and
    replaces what a killed try left; without, unique to this process and file."""
    tag = owner or f"{_TEMP_TOKEN}-{next(_TEMP_SERIAL)}"
    return target.with_name(f".{target.name}.s3connect-{tag}.part")


class Cleanup:
    """The open resources of one transfer (or of several sharing a task) and its cancellation.

    :param owner: a stable tag of the task instance: temporary files are named for it.
    :param on_uploads: called with the multipart uploads open now (upload id → key)
        whenever one starts or ends.
    """

    def __init__(self, owner: str | None = None, on_uploads: Callable[[dict[str, str]], None] | None = None) -> None:
        self.owner = owner
        self._on_uploads = on_uploads
        self._uploads: dict[str, str] = {}
        self._lock = threading.Lock()
        self.reason: str | None = None

    # -- cancellation ----------------------------------------------------------------------
    def cancel(self, reason: str) -> None:
        """Stop (from another thread: ``on_kill``); what is open is undone by its owner."""
        self.reason = reason

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def check(self, what: str) -> None:
        """Raise :class:`TransferInterrupted` for ``what`` once cancelled."""
        if self.reason is not None:
            raise TransferInterrupted(f"{what} cancelled: {self.reason}.")

    # -- multipart uploads -----------------------------------------------------------------
    def upload_started(self, upload_id: str, key: str) -> None:
        with self._lock:
            self._uploads[upload_id] = key
            snapshot = dict(self._uploads)
        self._report(snapshot)

    def upload_ended(self, upload_id: str) -> None:
        with self._lock:
            if self._uploads.pop(upload_id, None) is None:
                return
            snapshot = dict(self._uploads)
        self._report(snapshot)

    def take_uploads(self, keys: Mapping[str, str] | None = None) -> dict[str, str]:
        """The uploads still open (of ``keys``' ids when given), forgotten here: the caller
        aborts them."""
        with self._lock:
            taken = {u: k for u, k in self._uploads.items() if keys is None or u in keys}
            for upload in taken:
                del self._uploads[upload]
            snapshot = dict(self._uploads)
        if taken:
            self._report(snapshot)
        return taken

    @property
    def open_uploads(self) -> dict[str, str]:
        with self._lock:
            return dict(self._uploads)

    def _report(self, snapshot: dict[str, str]) -> None:
        if self._on_uploads is not None:
            self._on_uploads(snapshot)

    # -- temporary files --------------------------------------------------------------------
    def temp_path(self, target: Path) -> Path:
        return temp_path(target, self.owner)

    def remove_left_files(self, directory: Path) -> list[Path]:
        """Remove the temporary files an earlier, killed try of the same owner left under
        ``directory``; the ones removed."""
        if self.owner is None or not directory.is_dir():
            return []
        left = list(directory.rglob(temp_path(Path("*"), self.owner).name))
        for stale in left:
            stale.unlink(missing_ok=True)
        return left
