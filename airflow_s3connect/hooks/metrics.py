"""Transfer figures as Airflow metrics, so that a StatsD or OpenTelemetry set-up graphs them.

Every transfer's meter (:mod:`airflow_s3connect.progress`) hands its counts here at each
progress line and at its end: ``s3connect.objects``, ``s3connect.bytes``,
``s3connect.requests`` and ``s3connect.retries`` (counters) and ``s3connect.duration``
(a timer), each tagged with the connection id, the operation and the operator (or hook
call). Which backend receives them, and whether tags reach it, is the deployment's
``[metrics]`` configuration.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from airflow_s3connect._compat import stats

PREFIX = "s3connect"


class StatsMetrics:
    """A :class:`~airflow_s3connect.progress.Metrics` writing to Airflow's Stats."""

    def __init__(self, **tags: str) -> None:
        # Tag values as StatsD names allow them: InfluxDB-style tags become part of the name.
        self.tags = {name: re.sub(r"[^A-Za-z0-9_.-]", "_", value) for name, value in tags.items()}
        self._stats: Any = stats()

    def incr(self, name: str, count: int) -> None:
        self._stats.incr(f"{PREFIX}.{name}", count, tags=self.tags)

    def timing(self, name: str, seconds: float) -> None:
        self._stats.timing(f"{PREFIX}.{name}", datetime.timedelta(seconds=seconds), tags=self.tags)
