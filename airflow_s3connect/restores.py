"""Objects in an archive storage class: which of a selection cannot be read yet, and the
request that brings them back.

No Airflow here. A GET of an object in GLACIER or DEEP_ARCHIVE fails (``InvalidObjectState``)
until a RestoreObject made a temporary copy readable, hours later. So Get and Copy look at
the archived objects of their selection before any transfer: without ``restore`` the first
one not restored fails the task, naming the option; with it, each is asked to be restored
(once: S3 answers ``RestoreAlreadyInProgress`` to a second ask) and the task waits in the
triggerer, which polls HeadObject's ``Restore`` header (:func:`still_archived`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from airflow_s3connect.errors import RESTORE_HINT, ArchivedObjectError, ArgumentError, error_code, translated
from airflow_s3connect.objects import ObjectInfo, version_args

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Storage classes whose objects must be restored before a GET (GLACIER_IR reads directly).
ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})
TIERS = ("Bulk", "Standard", "Expedited")
_HOW = "restore={'days': N, 'tier': 'Bulk' | 'Standard' | 'Expedited'}"


@dataclass(frozen=True)
class Restore:
    """How archived objects are brought back: for ``days`` days, at ``tier``'s speed and price."""

    days: int
    tier: str = "Standard"

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> Restore | None:
        """From an operator's ``restore=`` argument; ArgumentError saying what to give."""
        if value is None:
            return None
        if not isinstance(value, Mapping) or "days" not in value or set(value) - {"days", "tier"}:
            raise ArgumentError(f"restore={value!r}: give {_HOW} (days: how long the restored copy stays readable).")
        days, tier = value["days"], value.get("tier", "Standard")
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ArgumentError(f"restore days={days!r}: give a whole number of days, at least 1.")
        if tier not in TIERS:
            raise ArgumentError(f"restore tier={tier!r}: use one of {', '.join(TIERS)}.")
        return cls(days, tier)

    def request(self) -> dict[str, Any]:
        return {"Days": self.days, "GlacierJobParameters": {"Tier": self.tier}}


State = Literal["readable", "restoring", "archived"]


def restore_state(answer: Mapping[str, Any]) -> State:
    """From a HeadObject answer: readable (not archived, or a restored copy is there),
    restoring (asked, not done) or archived (nobody asked)."""
    if answer.get("StorageClass") not in ARCHIVED:
        return "readable"
    header = str(answer.get("Restore") or "")
    if 'ongoing-request="true"' in header:
        return "restoring"
    return "readable" if 'ongoing-request="false"' in header else "archived"


def _state(client: S3Client, bucket: str, key: str, version_id: str | None) -> State:
    with translated("HeadObject", bucket, key, version_id=version_id):
        return restore_state(client.head_object(Bucket=bucket, Key=key, **version_args(version_id)))


def unrestored(
    client: S3Client, bucket: str, objects: Iterable[ObjectInfo], restore: Restore | None
) -> list[ObjectInfo]:
    """The archived objects among ``objects`` that cannot be read yet, each asked to be
    restored; without ``restore``, ArchivedObjectError for the first, before anything is
    read. Costs a HeadObject per archived object a listing described, nothing for the
    others nor for an object a HEAD described (its answer told the restore state)."""
    waiting: list[ObjectInfo] = []
    for info in objects:
        if info.storage_class not in ARCHIVED:
            continue
        if info.restore is None:
            state = _state(client, bucket, info.key, info.version_id)
        else:
            state = restore_state({"StorageClass": info.storage_class, "Restore": info.restore})
        if state == "readable":
            continue
        if restore is None:
            raise ArchivedObjectError(
                f"s3://{bucket}/{info.key} is in {info.storage_class} and not restored: nothing was read. "
                f"To read it, {RESTORE_HINT}."
            )
        if state == "archived":
            with translated("RestoreObject", bucket, info.key):
                try:
                    client.restore_object(
                        Bucket=bucket, Key=info.key, RestoreRequest=restore.request(),  # type: ignore[arg-type]
                        **version_args(info.version_id),
                    )  # fmt: skip
                except ClientError as exc:
                    if error_code(exc) != "RestoreAlreadyInProgress":
                        raise
        waiting.append(info)
    return waiting


def still_archived(client: S3Client, bucket: str, objects: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Of ``objects`` (``{"key", "version_id"}``), those whose restore is not done."""
    return [o for o in objects if _state(client, bucket, o["key"], o.get("version_id")) != "readable"]
