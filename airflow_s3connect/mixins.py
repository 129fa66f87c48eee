"""What every operator and the sensor share: key macros rendered as part of Airflow's
template rendering, and the checks of the arguments they have in common.

Airflow renders ``template_fields`` with Jinja, stores them for the Rendered Template
view, then calls ``execute``. Rendering our ``{macros}`` inside that same step (not
silently in ``execute``) means the view shows the final key an operator will use.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow_s3connect.connection import DEFAULT_CONN_ID
from airflow_s3connect.errors import ArgumentError
from airflow_s3connect.hooks.s3connect import S3ConnectHook
from airflow_s3connect.macros import MacroValues, render
from airflow_s3connect.patterns import escape_literal

#: Templated in every operator and the sensor: part of each one's ``template_fields``.
#: The parameters themselves are declared by S3ConnectOperator and the sensor, not by this
#: mixin: Airflow's ``partial``/``expand`` checks and ``default_args`` see only parameters
#: of classes its operator metaclass built.
CONNECTION_FIELDS: tuple[str, ...] = ("s3connect_conn_id", "bucket", "tenant", "tap", "stream_name")


class MacroFieldsMixin:
    """Mix into a BaseOperator / BaseSensorOperator before it in the bases.

    ``macro_fields`` are keys/prefixes (every macro must be known); ``pattern_fields``
    keep unknown ``{x}`` as pattern masks and insert macro values glob-escaped. Both must
    also be in ``template_fields`` so Jinja runs first. Overrides of the tenant chain come
    from the operator's ``tenant``, ``tap`` and ``stream_name`` arguments.
    """

    macro_fields: Sequence[str] = ()
    pattern_fields: Sequence[str] = ()
    bucket: str | None = None
    #: Per-object macros left in ``macro_fields`` for :meth:`render_deferred` (e.g. ``{filename}``).
    deferred_macros: Sequence[str] = ()
    s3connect_conn_id: str = DEFAULT_CONN_ID
    tenant: str | None = None
    tap: str | None = None
    stream_name: str | None = None

    @cached_property
    def hook(self) -> S3ConnectHook:
        return S3ConnectHook(s3connect_conn_id=self.s3connect_conn_id)

    def macro_overrides(self) -> dict[str, Any]:
        """Macro values the operator sets itself (its arguments)."""
        return {
            name: value
            for name in ("tenant", "tap", "stream_name")
            if (value := getattr(self, name, None)) not in (None, "")
        }

    def _do_render_template_fields(
        self, parent: Any, template_fields: Any, context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        # Hooked here, not in render_template_fields: a mapped task's expansion renders
        # through this method of the unmapped operator only.
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)  # type: ignore[misc]
        if parent is self:
            self._render_macros(context)

    def _render_macros(self, context: Any) -> None:
        values = MacroValues(context, self.macro_overrides(), self.hook.macro_fallbacks())
        self.hook.render_path_prefix(values)
        for name in self.macro_fields:
            setattr(self, name, _render_nested(getattr(self, name), values, False, self.deferred_macros))
        for name in self.pattern_fields:
            setattr(self, name, _render_nested(getattr(self, name), values, True, ()))

    def render_deferred(self, template: str, context: Any, **values: Any) -> str:
        """Second pass over a macro field: the per-object macros, with this object's values."""
        return render(template, MacroValues(context, {**self.macro_overrides(), **values}, self.hook.macro_fallbacks()))


def _render_nested(value: Any, values: MacroValues, pattern: bool, defer: Sequence[str]) -> Any:
    if isinstance(value, str):
        if pattern:
            return render(value, values, keep_unknown=True, escape=escape_literal)
        return render(value, values, defer=defer)
    if isinstance(value, list | tuple):
        return type(value)(_render_nested(v, values, pattern, defer) for v in value)
    return value


def require_one_target(
    key: str | None, prefix: str | None, pattern: str | None, manifest: object = None, names: str = "key"
) -> None:
    """One object (``key``), a listing (``prefix`` / ``pattern``) or a manifest: exactly one."""
    given = (key is not None) + (prefix is not None or pattern is not None) + (manifest is not None)
    if given != 1:
        raise ArgumentError(
            f"Give exactly one of {names}=... (one object), prefix=... / pattern=... (a listing) "
            "or manifest=... (an upstream results='manifest' or 'batches' result)."
        )


def parse_moment(value: datetime.datetime | str | None, name: str) -> datetime.datetime | None:
    """A datetime argument (templated fields arrive as ISO strings); naive means UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ArgumentError(f"{name}={value!r} is not an ISO 8601 date-time, e.g. 2025-04-14T00:00:00Z.") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value
