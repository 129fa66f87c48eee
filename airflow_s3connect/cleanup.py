"""What a transfer must undo if it stops, registered where it is created; one cancel.

No Airflow here. Downloads write temporary files, uploads and copies open multipart
uploads: each registers them with the transfer's :class:`Cleanup` the moment they exist
(as s3transfer registers its cleanups where a resource is created), so one place knows
what is open (multipart uploads, the key reservations of create-only uploads), reports it
(the operators keep it in Airflow's task state, so a retry after a killed worker aborts and
releases what the killed try left), names temporary files, and carries the one reason a
transfer was cancelled for.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypedDict

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


class OpenResources(TypedDict):
    """What a transfer has open, as reported (and kept in Airflow's task state)."""

    #: multipart upload id → key
    uploads: dict[str, str]
    #: key → ETag of a reservation an upload made (see :class:`~airflow_s3connect.uploads.Uploader`)
    reservations: dict[str, str]


class Cleanup:
    """The open resources of one transfer (or of several sharing a task) and its cancellation.

    :param owner: a stable tag of the task instance: temporary files are named for it.
    :param on_open: called with what is open now whenever a multipart upload or a key
        reservation starts or ends.
    """

    def __init__(self, owner: str | None = None, on_open: Callable[[OpenResources], None] | None = None) -> None:
        self.owner = owner
        self._on_open = on_open
        self._uploads: dict[str, str] = {}
        self._reservations: dict[str, str] = {}
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

    # -- multipart uploads and key reservations ----------------------------------------------
    def upload_started(self, upload_id: str, key: str) -> None:
        self._change(self._uploads, upload_id, key)

    def upload_ended(self, upload_id: str) -> None:
        self._change(self._uploads, upload_id, None)

    def reservation_made(self, key: str, etag: str) -> None:
        self._change(self._reservations, key, etag)

    def reservation_ended(self, key: str) -> None:
        self._change(self._reservations, key, None)

    def take_uploads(self, keys: Mapping[str, str] | None = None) -> dict[str, str]:
        """The uploads still open (of ``keys``' ids when given), forgotten here: the caller
        aborts them."""
        return self._take(self._uploads, keys)

    def take_reservations(self) -> dict[str, str]:
        """The reservations still held (key → ETag), forgotten here: the caller releases them."""
        return self._take(self._reservations, None)

    @property
    def open_uploads(self) -> dict[str, str]:
        with self._lock:
            return dict(self._uploads)

    def _change(self, table: dict[str, str], name: str, value: str | None) -> None:
        with self._lock:
            if value is not None:
                table[name] = value
            elif table.pop(name, None) is None:
                return
            snapshot = self._snapshot()
        self._report(snapshot)

    def _take(self, table: dict[str, str], names: Mapping[str, str] | None) -> dict[str, str]:
        with self._lock:
            taken = {n: v for n, v in table.items() if names is None or n in names}
            for name in taken:
                del table[name]
            snapshot = self._snapshot()
        if taken:
            self._report(snapshot)
        return taken

    def _snapshot(self) -> OpenResources:
        return {"uploads": dict(self._uploads), "reservations": dict(self._reservations)}

    def _report(self, snapshot: OpenResources) -> None:
        if self._on_open is not None:
            self._on_open(snapshot)

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
