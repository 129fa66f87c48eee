"""The SQS queue an event watcher reads S3 notifications from: receive, delete, explain failures.

No Airflow here. A message is deleted only when the caller says so (after the events it
led to are stored), so a crash in between re-delivers it once its visibility timeout
ends; nothing is lost. Long polling (``WaitTimeSeconds``) makes an idle queue cost one
request per ``wait_seconds``, answered the moment a message arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from airflow_s3connect.errors import AccessDeniedError, S3ConnectError, error_code, translate
from airflow_s3connect.notifications import QueueAddress

#: SQS's limits: at most 10 messages per receive and per delete batch, 20 s of long poll.
MAX_MESSAGES = 10
MAX_WAIT = 20

_MISSING = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue")
_ACTIONS = {
    "GetQueueAttributes": "sqs:GetQueueAttributes",
    "ReceiveMessage": "sqs:ReceiveMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
}


@dataclass(frozen=True)
class Message:
    receipt: str
    body: str


class NotificationQueue:
    """One SQS queue, read with the connection's credentials.

    :param client: an SQS client at the queue's endpoint (:func:`~airflow_s3connect.client.build_sqs_client`).
    :param region: the connection's region, for the queue's ARN in error messages when
        the URL does not name one.
    """

    def __init__(self, client: Any, url: str, address: QueueAddress, region: str | None, wait_seconds: float) -> None:
        self.client = client
        self.url = url
        self.arn = address.arn(region)
        # Never 0: a short poll of an idle queue would answer at once, and the watcher ask again.
        self.wait_seconds = max(1, min(MAX_WAIT, round(wait_seconds)))
        self.requests = 0

    def check(self) -> None:
        """Fail now, with what to fix, if the queue is missing or denied (one request)."""
        with self._translated("GetQueueAttributes"):
            self.requests += 1
            self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])

    def receive(self) -> list[Message]:
        """Up to 10 messages, waiting at most ``wait_seconds`` for the first."""
        with self._translated("ReceiveMessage"):
            self.requests += 1
            answer = self.client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=MAX_MESSAGES, WaitTimeSeconds=self.wait_seconds
            )
        return [Message(m["ReceiptHandle"], m.get("Body", "")) for m in answer.get("Messages", [])]

    def delete(self, receipts: Iterable[str]) -> None:
        """Delete messages whose events are stored. A receipt SQS no longer accepts (its
        visibility ended and it was received again) is not an error: the message comes
        back and is recognised as a duplicate."""
        pending = list(dict.fromkeys(receipts))
        for start in range(0, len(pending), MAX_MESSAGES):
            batch = pending[start : start + MAX_MESSAGES]
            with self._translated("DeleteMessageBatch"):
                self.requests += 1
                answer = self.client.delete_message_batch(
                    QueueUrl=self.url, Entries=[{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(batch)]
                )
            denied = [f for f in answer.get("Failed", []) if f.get("SenderFault") and "Denied" in str(f.get("Code"))]
            if denied:
                raise AccessDeniedError("sqs:DeleteMessage", self.arn)

    @contextmanager
    def _translated(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            code = error_code(exc)
            if code in _MISSING:
                raise S3ConnectError(
                    f"{operation}: the SQS queue {self.url} does not exist (or is in another account or region "
                    "than its URL says): check queue_url."
                ) from None
            if code in ("AccessDenied", "AccessDeniedException", "AccessDenied.Exception", "403"):
                raise AccessDeniedError(
                    _ACTIONS[operation],
                    self.arn,
                    "the watcher needs sqs:ReceiveMessage, sqs:DeleteMessage and "
                    "sqs:GetQueueAttributes on the queue: s3connect policy --operations watch-sqs",
                ) from None
            raise translate(exc, operation) from None
