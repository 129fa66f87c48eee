"""S3ObjectSensor: wait for new or updated objects (or for none), in poke, reschedule or deferred mode."""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from typing import Any

from airflow_s3connect._compat import BaseSensorOperator, PokeReturnValue, conf
from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import ArgumentError, S3ConnectError
from airflow_s3connect.mixins import CONNECTION_FIELDS, MacroFieldsMixin, parse_moment, require_one_target
from airflow_s3connect.objects import ObjectInfo, result_entry
from airflow_s3connect.selection import Selection
from airflow_s3connect.triggers.s3object import S3ObjectTrigger
from airflow_s3connect.watch import Watcher, WatchSpec

#: Key in Airflow's task state store of the ``stable_for`` memory (reschedule mode).
STATE_KEY = "s3connect_watch"
NEW_SINCE_CHOICES = ("data_interval_start", "last_success")


class S3ObjectSensor(MacroFieldsMixin, BaseSensorOperator):
    """Wait until objects matching ``key`` or ``prefix`` + ``pattern`` are there (or gone).

    Each poke is one ListObjectsV2 on the pattern's literal prefix, paginating only until
    the answer is known, never a HeadObject; an exact key is one request. Needs
    s3:ListBucket. Returns the matches as S3ListObjectsOperator does, so a Get can be
    expanded over them without a second listing.

    :param key: one exact key (relative to path_prefix, macros allowed).
    :param prefix: where to look (relative to path_prefix, macros allowed).
    :param pattern: glob / date-mask pattern, relative to ``prefix``.
    :param bucket: default: the connection's bucket.
    :param min_objects: how many must match (default 1).
    :param min_size: only objects of at least this many bytes count.
    :param new_since: only objects new or updated since: ``None`` (any), a datetime or ISO
        string, ``"data_interval_start"`` (the run's), or ``"last_success"`` (the start of
        the DAG's previous successful run).
    :param stable_for: seconds the matching set (keys, sizes, ETags) must stay unchanged
        across pokes before success: for files still being written.
    :param absent: wait until nothing matches.
    :param include_metadata: return dicts (key, uri, size, etag, last_modified) instead of keys.
    :param collect_all: read every page so the result holds every match (by default a
        poke stops as soon as ``min_objects`` are seen).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).

    ``mode`` (poke / reschedule), ``poke_interval``, ``timeout``, ``soft_fail`` and
    ``exponential_backoff`` are Airflow's. In reschedule mode ``stable_for`` keeps its
    memory in Airflow's task state store.
    """

    template_fields: Sequence[str] = ("key", "prefix", "pattern", "new_since", *CONNECTION_FIELDS)
    macro_fields = ("key", "prefix")
    pattern_fields = ("pattern",)
    ui_color = "#e7f0e0"

    def __init__(
        self,
        *,
        key: str | None = None,
        prefix: str | None = None,
        pattern: str | None = None,
        min_objects: int = 1,
        min_size: int = 0,
        new_since: datetime.datetime | str | None = None,
        stable_for: float = 0,
        absent: bool = False,
        include_metadata: bool = False,
        collect_all: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        s3connect_conn_id: str = DEFAULT_CONN_ID,
        bucket: str | None = None,
        tenant: str | None = None,
        tap: str | None = None,
        stream_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        require_one_target(key, prefix, pattern)
        if min_objects < 1:
            raise ArgumentError(f"min_objects={min_objects}: wait for at least 1 object (or use absent=True).")
        if absent and (stable_for or min_objects != 1):
            raise ArgumentError("absent=True waits for no match: it takes neither stable_for nor min_objects.")
        if key is not None and min_objects != 1:
            raise ArgumentError("One key is one object: min_objects applies to prefix/pattern.")
        self.key, self.prefix, self.pattern, self.bucket = key, prefix, pattern, bucket
        self.s3connect_conn_id = s3connect_conn_id
        self.tenant, self.tap, self.stream_name = tenant, tap, stream_name
        self.min_objects = min_objects
        self.min_size = min_size
        self.new_since = new_since
        self.stable_for = stable_for
        self.absent = absent
        self.include_metadata = include_metadata
        self.collect_all = collect_all
        self.deferrable = deferrable
        self._watcher: Watcher | None = None

    # -- the watch ---------------------------------------------------------------------------
    def _since(self, context: Any) -> datetime.datetime | None:
        value = self.new_since
        if value == "data_interval_start":
            value = context.get("data_interval_start") or context.get("logical_date")
        elif value == "last_success":
            value = context.get("prev_start_date_success")
        return parse_moment(value, "new_since")

    def _spec(self, context: Any) -> WatchSpec:
        scope = self.hook.scope_settings.scope
        since = self._since(context)
        common = {
            "min_size": self.min_size,
            "new_since": since.isoformat() if since else None,
            "stable_for": self.stable_for,
            "absent": self.absent,
            "collect_all": self.collect_all,
        }
        # What to watch is selected as Get, Copy and Delete select what they act on.
        listing = self.key is None
        selection = Selection.of(
            scope, key=self.key, prefix=self.prefix or "" if listing else None, pattern=self.pattern, bucket=self.bucket
        )
        if selection.key is not None:
            return WatchSpec(bucket=selection.bucket, key=selection.key, **common)  # type: ignore[arg-type]
        return WatchSpec(
            bucket=selection.bucket,
            base=selection.base,
            pattern=self.pattern or None,
            min_objects=self.min_objects,
            **common,  # type: ignore[arg-type]
        )

    def _output(self, matches: Sequence[ObjectInfo | dict[str, Any]]) -> list[Any]:
        scope = self.hook.scope_settings.scope
        bucket = scope.bucket_for(self.bucket)
        out = []
        for match in matches:
            info = match if isinstance(match, ObjectInfo) else ObjectInfo.from_dict(match)
            out.append(result_entry(scope, bucket, info) if self.include_metadata else scope.relative(info.key))
        return out

    # -- modes -------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        result = self.poke(context)
        if result.is_done:
            return result.xcom_value
        assert self._watcher is not None  # set by the poke above
        self.defer(
            trigger=S3ObjectTrigger(
                s3connect_conn_id=self.s3connect_conn_id,
                prefix_values=self.hook.prefix_values,
                watch=self._watcher.spec.to_json(),
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=datetime.timedelta(seconds=self.timeout),
        )

    def poke(self, context: Any) -> PokeReturnValue:
        if self._watcher is None:
            self._watcher = Watcher(self._spec(context))
        store = context.get("task_state_store") if self.reschedule and self.stable_for else None
        if self.reschedule and self.stable_for and store is None:
            raise ArgumentError(
                "stable_for in mode='reschedule' needs Airflow's task state store (Airflow 3.3+): "
                "use mode='poke' or deferrable=True on this Airflow."
            )
        if store is not None:
            self._watcher.restore(store.get(STATE_KEY))
        matches = self._watcher.poke(self.hook.get_conn(), time.time())
        if store is not None:
            store.set(STATE_KEY, self._watcher.state())
        self.log.info(
            "%s after %d requests",
            "Condition met" if matches is not None else "Not yet",
            self._watcher.requests,
        )
        if matches is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._output(matches))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[Any]:
        if event.get("status") != "success":
            raise S3ConnectError(f"S3ObjectTrigger failed: {event.get('message', event)}")
        self.log.info("Condition met in the triggerer after %d requests", event.get("requests", 0))
        return self._output(event["matches"])
