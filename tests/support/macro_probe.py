"""A minimal operator that only renders macro fields, to observe them inside real DAG runs."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from airflow_s3connect.mixins import MacroFieldsMixin


class MacroProbe(MacroFieldsMixin, BaseOperator):
    template_fields = ("keys", "pattern")
    macro_fields = ("keys",)
    pattern_fields = ("pattern",)

    def __init__(
        self,
        keys: dict[str, str] | list[str],
        pattern: str = "",
        s3connect_conn_id: str = "s3connect_default",
        tenant: str | None = None,
        tap: str | None = None,
        stream_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.keys = list(keys)
        self.pattern = pattern
        self.s3connect_conn_id = s3connect_conn_id
        self.tenant, self.tap, self.stream_name = tenant, tap, stream_name

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        return {
            "keys": self.keys,
            "pattern": self.pattern,
            "path_prefix": self.hook.scope_settings.path_prefix,
            "start_date": ti.start_date.isoformat(),
            "run_id": context["dag_run"].run_id,
            "try_number": ti.try_number,
        }
