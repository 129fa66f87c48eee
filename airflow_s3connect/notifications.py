"""S3 event notifications as an SQS queue delivers them: what object was written, in one shape.

Pure: no I/O, no Airflow. A queue receives notifications in three envelopes, and a watcher
must not care which one the bucket's owner chose:

* S3 → SQS: ``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {...}}]}``, keys
  URL-encoded (a space is ``+``);
* S3 → SNS → SQS: the same document as a string in an SNS envelope's ``Message`` (or
  the document itself, with SNS raw message delivery);
* S3 → EventBridge → SQS: ``{"source": "aws.s3", "detail-type": "Object Created",
  "detail": {...}}``, keys as written.

A notification is a hint, not the truth: it is delivered at least once, in any order,
and the object may have been replaced or deleted since. The watcher confirms each one
with a listing (see :meth:`~airflow_s3connect.events.ObjectStream.confirm`); the
``sequencer`` only spares that request for a notification older than one already acted on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

#: The event names (S3 → SQS and SNS) and detail types (EventBridge) of a written object.
CREATED_PREFIX = "ObjectCreated:"
CREATED_DETAIL_TYPE = "Object Created"

_AWS_QUEUE_HOST = re.compile(
    r"^(?:sqs\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|(?P<legacy>[a-z0-9-]+)\.queue\.amazonaws\.com|queue\.amazonaws\.com)$"
)


@dataclass(frozen=True)
class Notification:
    """One object written, as a notification tells it (``key`` decoded, as stored)."""

    bucket: str
    key: str
    etag: str | None
    size: int | None
    sequencer: str | None
    version_id: str | None
    event: str

    def is_newer_than(self, sequencer: str | None) -> bool:
        """Whether this notification comes after ``sequencer`` (of the same key).

        S3's sequencers are hexadecimal strings of varying length: the shorter is padded
        on the right with zeros, then they compare as strings. Without either, nothing
        is known, and the notification counts as newer (it is confirmed by a listing).
        """
        if not sequencer or not self.sequencer:
            return True
        width = max(len(sequencer), len(self.sequencer))
        return self.sequencer.upper().ljust(width, "0") > sequencer.upper().ljust(width, "0")


@dataclass(frozen=True)
class Parsed:
    """What one queue message holds: the objects written, and what else it was."""

    created: list[Notification]
    #: Notifications of other events (deletions, restores, tagging…), S3's test event.
    ignored: int
    #: A body that is no S3 notification in any of the three envelopes.
    foreign: bool = False


def parse_message(body: str) -> Parsed:
    """The notifications of one SQS message body, in any of the three envelopes."""
    try:
        document = json.loads(body)
    except ValueError:
        return Parsed([], 0, foreign=True)
    if isinstance(document, Mapping) and document.get("Type") == "Notification" and "Message" in document:
        try:  # SNS envelope
            document = json.loads(document["Message"])
        except (TypeError, ValueError):
            return Parsed([], 0, foreign=True)
    if not isinstance(document, Mapping):
        return Parsed([], 0, foreign=True)
    if document.get("Event") == "s3:TestEvent":
        return Parsed([], 1)
    if document.get("source") == "aws.s3" and isinstance(document.get("detail"), Mapping):
        return _eventbridge(document)
    records = document.get("Records")
    if not isinstance(records, list):
        return Parsed([], 0, foreign=True)
    created: list[Notification] = []
    ignored = 0
    foreign = False
    for record in _records(records):
        name = str(record.get("eventName", ""))
        s3 = record["s3"]
        if not name.startswith(CREATED_PREFIX):
            ignored += 1
            continue
        found, bucket = _mapping(s3.get("object")), _mapping(s3.get("bucket"))
        if not isinstance(found.get("key"), str) or not isinstance(bucket.get("name"), str):
            foreign = True  # a record that names no object: nothing to announce, nothing to fail on
            continue
        created.append(
            Notification(
                bucket=bucket["name"],
                key=unquote_plus(found["key"]),
                etag=_etag(found.get("eTag")),
                size=_size(found.get("size")),
                sequencer=_text(found.get("sequencer")),
                version_id=_text(found.get("versionId")),
                event=name,
            )
        )
    return Parsed(created, ignored, foreign)


def _records(records: list[Any]) -> Iterator[Mapping[str, Any]]:
    for record in records:
        if isinstance(record, Mapping) and isinstance(record.get("s3"), Mapping):
            yield record


def _eventbridge(document: Mapping[str, Any]) -> Parsed:
    if document.get("detail-type") != CREATED_DETAIL_TYPE:
        return Parsed([], 1)
    detail = document["detail"]
    found, bucket = _mapping(detail.get("object")), _mapping(detail.get("bucket"))
    if not isinstance(found.get("key"), str) or not isinstance(bucket.get("name"), str):
        return Parsed([], 0, foreign=True)
    notification = Notification(
        bucket=bucket["name"],
        key=found["key"],
        etag=_etag(found.get("etag")),
        size=_size(found.get("size")),
        sequencer=_text(found.get("sequencer")),
        version_id=_text(found.get("version-id")),
        event=f"{CREATED_PREFIX}{detail.get('reason', '')}",
    )
    return Parsed([notification], 0)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    """A sequencer or version id: a non-empty string, else unknown."""
    return value if isinstance(value, str) and value else None


def _etag(value: Any) -> str | None:
    """Notifications carry the ETag without the quotes that listings and HEADs have."""
    return f'"{str(value).strip(chr(34))}"' if value else None


def _size(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class QueueAddress:
    """Where a queue URL's requests go, and what IAM calls the queue."""

    endpoint: str
    #: The region the URL names (Amazon SQS), else None: the connection's region is used.
    region: str | None
    account: str
    name: str

    def arn(self, region: str | None = None) -> str:
        return f"arn:aws:sqs:{self.region or region or '*'}:{self.account}:{self.name}"


def queue_address(url: str) -> QueueAddress:
    """The endpoint, region, account and name of an SQS queue URL.

    The URL names the queue's endpoint: a client is built there rather than at the
    connection's S3 endpoint, so an S3-compatible store with Amazon SQS (or a local SQS
    beside a local store) both work.
    """
    parts = urlsplit(url.strip())
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("http", "https") or not parts.hostname or len(segments) != 2:
        raise ValueError(
            f"queue_url={url!r} is not an SQS queue URL: give the queue's URL as SQS shows it, "
            "e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/s3-events."
        )
    match = _AWS_QUEUE_HOST.match(parts.hostname)
    region = None
    if match:
        region = match.group("region") or match.group("legacy") or "us-east-1"
    return QueueAddress(f"{parts.scheme}://{parts.netloc}", region, segments[0], segments[1])
