"""S3RestoreTrigger: wait in the triggerer until archived objects are restored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow_s3connect._compat import BaseTrigger, TriggerEvent


class S3RestoreTrigger(BaseTrigger):
    """Poll HeadObject every ``poll_interval`` seconds until no object of ``objects`` is
    still being restored; one event. A restore takes minutes (Expedited) to two days
    (DEEP_ARCHIVE, Bulk): a worker slot held that long would be wasted.

    Serialized as :class:`~airflow_s3connect.triggers.s3object.S3ObjectTrigger` is: the
    connection id and its path_prefix macro values, never a rendered prefix nor
    credentials; boto3 and the hook are imported and called in worker threads.

    :param objects: ``[{"key", "version_id"}]``, full keys in ``bucket``.
    """

    def __init__(
        self,
        s3connect_conn_id: str,
        prefix_values: dict[str, str],
        bucket: str,
        objects: list[dict[str, Any]],
        poll_interval: float,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.s3connect_conn_id = s3connect_conn_id
        self.prefix_values = prefix_values
        self.bucket = bucket
        self.objects = objects
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "s3connect_conn_id": self.s3connect_conn_id,
                "prefix_values": self.prefix_values,
                "bucket": self.bucket,
                "objects": self.objects,
                "poll_interval": self.poll_interval,
            },
        )

    def _client(self) -> Any:
        from airflow_s3connect.hooks.s3connect import S3ConnectHook

        hook = S3ConnectHook(s3connect_conn_id=self.s3connect_conn_id)
        hook.pin_prefix_values(self.prefix_values)
        return hook.get_conn()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            client = await asyncio.to_thread(self._client)
            from airflow_s3connect.restores import still_archived  # loaded with the hook above

            waiting: list[Any] = list(self.objects)
            polls = 0
            while True:
                waiting = await asyncio.to_thread(still_archived, client, self.bucket, waiting)
                polls += 1
                if not waiting:
                    self.log.info("%d objects restored; polled %d times", len(self.objects), polls)
                    yield TriggerEvent({"status": "success", "polls": polls})  # type: ignore[no-untyped-call]
                    return
                await asyncio.sleep(self.poll_interval)
        except Exception as exc:
            from airflow_s3connect.errors import S3ConnectError

            if not isinstance(exc, S3ConnectError):
                raise
            failure = {"status": "error", "message": str(exc), "type": type(exc).__name__}
            yield TriggerEvent(failure)  # type: ignore[no-untyped-call]
