"""S3ObjectTrigger: the sensor's wait, run in the triggerer without blocking its event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow_s3connect._compat import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_s3connect.watch import Watcher


class S3ObjectTrigger(BaseTrigger):
    """Poke every ``poke_interval`` seconds until the watch's condition holds; one event.

    Serialized: the connection id, the values of the connection's path_prefix macros, the
    watch and the interval. Never a rendered prefix (the triggerer fills the connection's
    own template with the values, one segment each, so a trigger cannot widen the scope)
    and never credentials: the triggerer reads the connection itself, and an ``assume_role``
    connection's credentials refresh themselves there for as long as the wait lasts.

    One triggerer runs thousands of triggers on one event loop, so nothing here blocks it:
    boto3 is synchronous, so the connection lookup, the client (and every credential
    refresh inside it) and each poke run in a worker thread; and this module imports
    neither boto3 nor the hook, because the triggerer imports a trigger's class on its
    event loop (boto3's import alone takes about 0.3 s).

    :param s3connect_conn_id: the ``s3connect`` connection.
    :param prefix_values: the values of the connection's path_prefix macros, as the task
        rendered them (``S3ConnectHook.prefix_values``).
    :param watch: a :class:`~airflow_s3connect.watch.WatchSpec` as JSON.
    :param poke_interval: seconds between pokes.
    """

    def __init__(
        self, s3connect_conn_id: str, prefix_values: dict[str, str], watch: dict[str, Any], poke_interval: float
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.s3connect_conn_id = s3connect_conn_id
        self.prefix_values = prefix_values
        self.watch = watch
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "s3connect_conn_id": self.s3connect_conn_id,
                "prefix_values": self.prefix_values,
                "watch": self.watch,
                "poke_interval": self.poke_interval,
            },
        )

    def _start(self) -> tuple[Any, Watcher]:
        """In a worker thread: the imports, the connection lookup and the client."""
        from airflow_s3connect.hooks.s3connect import S3ConnectHook
        from airflow_s3connect.watch import Watcher, WatchSpec

        hook = S3ConnectHook(s3connect_conn_id=self.s3connect_conn_id)
        hook.pin_prefix_values(self.prefix_values)
        return hook.get_conn(), Watcher(WatchSpec.from_json(self.watch))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            client, watcher = await asyncio.to_thread(self._start)
            while True:
                matches = await asyncio.to_thread(watcher.poke, client, time.time())
                if matches is not None:
                    self.log.info("Condition met after %d requests", watcher.requests)
                    yield TriggerEvent(  # type: ignore[no-untyped-call]
                        {"status": "success", "matches": [m.as_dict() for m in matches], "requests": watcher.requests}
                    )
                    return
                await asyncio.sleep(self.poke_interval)
        except Exception as exc:
            from airflow_s3connect.errors import S3ConnectError  # loaded by _start already

            if not isinstance(exc, S3ConnectError):
                raise
            failure = {"status": "error", "message": str(exc), "type": type(exc).__name__}
            yield TriggerEvent(failure)  # type: ignore[no-untyped-call]
