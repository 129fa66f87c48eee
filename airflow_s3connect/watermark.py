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
#: Notification sequencers remembered (a few hundred kB of asset state at most).
SEQUENCERS_KEPT = 5000
_VERSION = 1


@dataclass
class Watermark:
    """The newest LastModified seen, and the objects seen within the lookback before it."""

    newest: datetime.datetime | None = None
    #: key → (ETag, LastModified as ISO 8601)
    seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: key → the sequencer of the newest S3 notification acted on, newest last: a repeated
    #: or older notification of the key is known without a request, also when the object
    #: is older than the lookback (a backlog drained late). The last :data:`SEQUENCERS_KEPT`.
    sequencers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "newest": self.newest.isoformat() if self.newest else None,
            "seen": {key: list(value) for key, value in sorted(self.seen.items())},
            # pairs, not an object: a JSON object's order is not kept by every database
            "sequencers": [[key, sequencer] for key, sequencer in self.sequencers.items()],
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
            {str(key): str(sequencer) for key, sequencer in value.get("sequencers") or []},
        )

    def is_new(self, info: ObjectInfo, lookback: float) -> bool:
        if self.seen.get(info.key) == identity(info):
            return False
        return self.newest is None or info.last_modified >= self.newest - datetime.timedelta(seconds=lookback)

    def advance(
        self, infos: Iterable[ObjectInfo], lookback: float, sequencers: Mapping[str, str] | None = None
    ) -> None:
        """``infos`` are announced (``sequencers``: the notifications that told of them)."""
        for info in infos:
            self.seen[info.key] = identity(info)
            if self.newest is None or info.last_modified > self.newest:
                self.newest = info.last_modified
        for key, sequencer in (sequencers or {}).items():
            self.sequencers.pop(key, None)
            self.sequencers[key] = sequencer
        if self.newest is not None:
            oldest = self.newest - datetime.timedelta(seconds=lookback)
            self.seen = {
                key: value for key, value in self.seen.items() if datetime.datetime.fromisoformat(value[1]) >= oldest
            }
        for key in list(self.sequencers)[: max(0, len(self.sequencers) - SEQUENCERS_KEPT)]:
            del self.sequencers[key]


def identity(info: ObjectInfo) -> tuple[str, str]:
    """What makes one version of an object: its ETag and LastModified (UTC, ISO 8601)."""
    return info.etag, info.last_modified.astimezone(datetime.timezone.utc).isoformat()
