"""What earlier polls or runs have seen under a prefix: one watermark for the event watcher
and for Get's ``incremental="watermark"``.

Pure: no I/O, no Airflow. S3 has no cursor over "what changed": a listing is in key order,
and LastModified is when an upload *started* (a multipart upload that ran for ten minutes
appears with the time it began). So "the newest LastModified seen" alone would miss an
object that became visible after a newer one. The watermark keeps the newest LastModified
and every object (key, ETag, LastModified) seen within ``lookback`` seconds before it: an
object is new when it is not among them and is not older than that window. An object
replaced in place has a new LastModified (and usually ETag), so it is new again. An upload
that takes longer than ``lookback`` from its start to its completion can still be missed:
raise ``lookback`` for such writers.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_s3connect.objects import ObjectInfo

#: Seconds before the newest LastModified in which late-visible objects are still found.
DEFAULT_LOOKBACK = 900.0
#: Objects announced from notifications remembered past the lookback (each a key, a
#: sequencer, an ETag and a time: about 1 MB of asset state with 150-character keys).
ANNOUNCED_KEPT = 5000
_VERSION = 1


@dataclass
class Watermark:
    """The newest LastModified seen, and the objects seen within the lookback before it."""

    newest: datetime.datetime | None = None
    #: key → (ETag, LastModified as ISO 8601)
    seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: With notifications: key → (sequencer of the newest notification acted on, or "";
    #: ETag; LastModified) of the object announced last, newest last, the last
    #: :data:`ANNOUNCED_KEPT`. It outlives ``seen``'s window: a notification delivered late,
    #: repeated or out of order (a backlog drained after an outage) is known by it, most
    #: often without a request (its sequencer is not newer).
    announced: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: With ``start="now"``: the newest LastModified of the first listing. A notified object
    #: older than it by more than the lookback existed before the watcher: not announced.
    since: datetime.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "newest": self.newest.isoformat() if self.newest else None,
            "seen": {key: list(value) for key, value in sorted(self.seen.items())},
            # a list, not an object: a JSON object's order is not kept by every database
            "announced": [[key, *value] for key, value in self.announced.items()],
            "since": self.since.isoformat() if self.since else None,
        }

    @classmethod
    def from_json(cls, value: Any) -> Watermark | None:
        """Back from :meth:`to_json`; None for anything else (a first start). The state of
        an earlier release (``{"time", "keys"}``: the newest LastModified and the keys of its
        second) is read as that newest time with nothing seen: objects of its lookback window
        are fetched once more, none is lost."""
        if isinstance(value, Mapping) and "version" not in value and value.get("time"):
            return cls(datetime.datetime.fromisoformat(value["time"]))
        if not isinstance(value, Mapping) or value.get("version") != _VERSION:
            return None
        newest = value.get("newest")
        return cls(
            datetime.datetime.fromisoformat(newest) if newest else None,
            {str(key): (str(etag), str(moment)) for key, (etag, moment) in value.get("seen", {}).items()},
            {str(k): (str(q), str(e), str(m)) for k, q, e, m in value.get("announced") or []},
            datetime.datetime.fromisoformat(value["since"]) if value.get("since") else None,
        )

    def is_new(self, info: ObjectInfo, lookback: float) -> bool:
        if self.seen.get(info.key) == identity(info):
            return False
        return self.newest is None or info.last_modified >= self.newest - datetime.timedelta(seconds=lookback)

    def advance(self, infos: Iterable[ObjectInfo], lookback: float, announced: Mapping[str, str] | None = None) -> None:
        """``infos`` are announced; with ``announced`` (key → the sequencer of the
        notification that told of it, or "") they are also remembered past the window."""
        for info in infos:
            self.seen[info.key] = identity(info)
            if self.newest is None or info.last_modified > self.newest:
                self.newest = info.last_modified
            if announced is not None:
                self.remember(info.key, announced.get(info.key, ""), identity(info))
        if self.newest is not None:
            oldest = self.newest - datetime.timedelta(seconds=lookback)
            self.seen = {
                key: value for key, value in self.seen.items() if datetime.datetime.fromisoformat(value[1]) >= oldest
            }
        for key in list(self.announced)[: max(0, len(self.announced) - ANNOUNCED_KEPT)]:
            del self.announced[key]

    def remember(self, key: str, sequencer: str, version: tuple[str, str]) -> None:
        """``key``'s object ``version`` is announced, as far as notification ``sequencer``."""
        self.announced.pop(key, None)
        self.announced[key] = (sequencer, *version)

    def was_announced(self, key: str, version: tuple[str, str]) -> bool:
        return self.seen.get(key) == version or self.announced.get(key, ("",))[1:] == version


def identity(info: ObjectInfo) -> tuple[str, str]:
    """What makes one version of an object: its ETag and LastModified (UTC, ISO 8601)."""
    return info.etag, info.last_modified.astimezone(datetime.timezone.utc).isoformat()
