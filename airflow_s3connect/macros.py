"""Key macros: ``{tenant}``, ``{date:%Y%m}``, ``{connection_run_id}``… rendered from an Airflow run.

Pure: reads the task context duck-typed (``dag``, ``ti``, ``dag_run``, ``params``), imports
nothing from Airflow and does no I/O. Values are computed only when a template uses
them, so a DAG that never writes ``{tenant}`` needs no tenant.

Syntax is Python's format syntax after Jinja has run: ``{name}`` or ``{name:strftime}``
for date macros; ``{{`` / ``}}`` are literal braces. Every value that comes from data
(tenant, stream name, file name…) must stay one key segment: a ``/``, ``.``/``..`` or
a control character in it is refused, so a value can never move a key out of its
prefix. A strftime spec written in the template itself may contain ``/``
(``{date:%Y/%m/%d}``): that is the template author's layout, not data.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import re
import string
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_s3connect.errors import MacroError, ScopeError
from airflow_s3connect.scope import path_problem

#: Namespace of every UUID5 macro: ids are stable for the same inputs on any machine.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "airflow-s3connect")

_ISO = "%Y-%m-%dT%H:%M:%SZ"
#: Date macros: name → (which instant, default strftime format).
DATE_MACROS: Mapping[str, tuple[str, str]] = {
    "date_time": ("load", "%Y_%m_%d_%H_%M_%S"),
    "timestamp": ("load", "%Y_%m_%d_%H_%M_%S"),
    "iso_date_time": ("load", _ISO),
    "date": ("load", "%Y_%m_%d"),
    "iso_date": ("load", "%Y-%m-%d"),
    "full_date": ("load", "%Y%m%d"),
    "year": ("load", "%Y"),
    "month": ("load", "%m"),
    "day": ("load", "%d"),
    "hour": ("load", "%H"),
    "minute": ("load", "%M"),
    "second": ("load", "%S"),
    "epoch": ("load", "%s"),
    "cursor_year": ("cursor", "%Y"),
    "cursor_month": ("cursor", "%m"),
    "cursor_day": ("cursor", "%d"),
    "cursor_date_time": ("cursor", "%Y_%m_%d_%H_%M_%S"),
    "cursor_iso_date_time": ("cursor", _ISO),
    "cursor_singular_date_time": ("cursor", "%Y-%m-%d-%H-%M-%S"),
    "ds": ("logical", "%Y-%m-%d"),
    "ds_nodash": ("logical", "%Y%m%d"),
    "logical_date": ("logical", _ISO),
}

#: Accepted in ``values`` besides macro names: the instants the date macros derive from.
INSTANT_OVERRIDES = ("load_time", "cursor", "logical_time")

_FORMATTER = string.Formatter()


def _utc(moment: Any) -> datetime.datetime:
    """A datetime (or pendulum DateTime) in UTC; naive values are taken as UTC."""
    if not isinstance(moment, datetime.datetime):
        raise MacroError(f"Expected a datetime, got {moment!r}.")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def _strftime(moment: datetime.datetime, spec: str) -> str:
    if spec == "%s":  # epoch: strftime's %s is platform- and timezone-dependent
        return str(int(moment.timestamp()))
    return moment.strftime(spec.replace("%s", str(int(moment.timestamp()))))


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def check_segment(name: str, value: str) -> str:
    """Refuse a macro value that is not one key segment (:func:`path_problem`, and no '/')."""
    problem = "is empty" if value == "" else "contains '/'" if "/" in value else path_problem(value)
    if problem is not None:
        raise MacroError(
            f"Value {value!r} of {{{name}}} is not safe in a key: it {problem}; it must be one non-empty segment "
            "without '/', control characters, and not '.' or '..'."
        )
    return value


def _check_relative_path(value: str) -> str:
    if (problem := path_problem(value, empty_segments=False)) is not None:
        raise MacroError(
            f"Value {value!r} of {{relative_path}} is not safe in a key: it {problem}; it must be a relative path "
            "without empty, '.' or '..' segments or control characters."
        )
    return value


class MacroValues:
    """Lazily computed macro values for one task run.

    ``values`` (operator arguments) override every macro. Below them, the tenant chain
    reads DAG params, then ``fallbacks`` (the connection's fields).
    """

    def __init__(
        self,
        context: Mapping[str, Any],
        values: Mapping[str, Any],
        fallbacks: Mapping[str, Any] | None = None,
    ) -> None:
        unknown = set(values) - set(MACRO_NAMES) - set(INSTANT_OVERRIDES)
        if unknown:
            name = sorted(unknown)[0]
            raise MacroError(_unknown_message(name, "Unknown macro value"))
        self._context = context
        self._values = values
        self._fallbacks = fallbacks or {}
        self._cache: dict[str, str] = {}
        self._ti = context.get("ti") or context.get("task_instance")
        self._run = context.get("dag_run")
        self._params = context.get("params") or {}

    def for_scope(self, fixed: Mapping[str, str], used: Collection[str]) -> MacroValues:
        """These values as a connection's path_prefix may use them.

        The scope is the connection's, not the run's: run conf never shapes it (only the
        DAG's declared params and the operator's arguments do), and a value the connection
        fixes (Tenant, Root Tenant ID, Environment ID) wins. Another value for one of those,
        from an argument, a DAG param or run conf, is a run aimed at another tenant: it
        raises :class:`ScopeError` naming both, rather than being silently replaced.
        """
        for name in used:
            if (value := fixed.get(name)) in (None, ""):
                continue
            for source, claimed in (
                ("the operator's argument", self._values.get(name)),
                ("run conf or a DAG param", self._params.get(name)),
            ):
                if claimed not in (None, "") and str(claimed) != value:
                    raise ScopeError(
                        f"{{{name}}} is {claimed!r} in {source}, but the connection fixes it to {value!r}: "
                        "a connection's scope is set by the connection alone. Use that connection's tenant, "
                        "or another connection."
                    )
        context = {**self._context, "params": _declared_params(self._context, used)}
        return MacroValues(context, {**self._values, **{n: v for n, v in fixed.items() if v}}, self._fallbacks)

    # -- identities -------------------------------------------------------------------
    @property
    def dag_id(self) -> str:
        return str(_get(self._context.get("dag"), "dag_id") or _get(self._ti, "dag_id") or self._missing("dag_id"))

    @property
    def run_id(self) -> str:
        return str(_get(self._run, "run_id") or self._context.get("run_id") or self._missing("run_id"))

    @property
    def task_id(self) -> str:
        task = self._context.get("task")
        return str(_get(self._ti, "task_id") or _get(task, "task_id") or self._missing("task_id"))

    @property
    def map_index(self) -> int:
        index = _get(self._ti, "map_index")
        return -1 if index is None else int(index)

    @property
    def try_number(self) -> int:
        return int(_get(self._ti, "try_number") or 1)

    def _missing(self, name: str) -> str:
        raise MacroError(f"{{{name}}} needs a task context with {name}: render it inside a running task.")

    # -- instants -----------------------------------------------------------------------
    def instant(self, which: str) -> datetime.datetime:
        if which == "load":
            moment = self._values.get("load_time") or _get(self._ti, "start_date")
            if moment is None:
                raise MacroError("Load-time macros need the task's start date: render them inside a running task.")
        elif which == "cursor":
            moment = (
                self._values.get("cursor")
                or self._context.get("data_interval_start")
                or _get(self._run, "data_interval_start")
                or self._context.get("logical_date")
            )
            if moment is None:
                raise MacroError(
                    "Cursor macros need the run's data interval or logical date; this run has neither "
                    "(asset-triggered or manual without a logical date). Pass cursor=... ."
                )
        else:
            moment = self._values.get("logical_time") or self._context.get("logical_date")
            if moment is None:
                raise MacroError("{ds}/{logical_date} need a run with a logical date.")
        return _utc(moment)

    # -- values -----------------------------------------------------------------------
    def lookup(self, name: str, *, params: bool, fallback: bool) -> str | None:
        """A value from the DAG's params, then from the connection's fields."""
        for source, used in ((self._params, params), (self._fallbacks, fallback)):
            if used and source.get(name) not in (None, ""):
                return str(source[name])
        return None

    def uuid5(self, *parts: object) -> str:
        return str(uuid.uuid5(NAMESPACE, "\x1f".join(str(p) for p in parts)))

    def value(self, name: str, required: bool = True) -> str | None:
        """``values`` override every macro; otherwise its default. Checked safe for a key."""
        override = self._values.get(name)
        macro = VALUE_MACROS[name]
        value = str(override) if override not in (None, "") else macro.default(self)
        if value is None:
            if not required:
                return None
            raise MacroError(macro.missing or f"No value for {{{name}}}: pass {name}=... .")
        if name == "relative_path":
            return _check_relative_path(value)
        return check_segment(name, value)

    def render(self, name: str, spec: str) -> str:
        """The value of macro ``name`` with optional strftime ``spec``."""
        if name in DATE_MACROS:
            if name in self._values and not spec:
                return check_segment(name, str(self._values[name]))
            which, default = DATE_MACROS[name]
            return _strftime(self.instant(which), spec or default)
        if spec:
            raise MacroError(f"{{{name}:{spec}}}: only date macros take a format spec.")
        if name not in self._cache or name == "uuid":
            self._cache[name] = str(self.value(name))
        return self._cache[name]


@dataclass(frozen=True)
class ValueMacro:
    """A macro whose value comes from the run, the DAG params or the connection; an
    operator argument of the same name overrides it."""

    #: its value for a run, or None when it has none by default
    default: Callable[[MacroValues], str | None] = lambda _: None
    #: what to do when it has no value (default: pass it as an argument)
    missing: str | None = None


def _job_id(v: MacroValues) -> str:
    identity = f"{v.dag_id}\x1f{v.run_id}\x1f{v.task_id}\x1f{v.map_index}"
    return hashlib.blake2s(identity.encode(), digest_size=5).hexdigest()[:8]


#: The value macros, one entry each: how its value is found, and what to do without one.
VALUE_MACROS: Mapping[str, ValueMacro] = {
    "tenant": ValueMacro(
        lambda v: v.lookup("tenant", params=True, fallback=True),
        "No value for {tenant}: pass tenant=..., set the DAG param 'tenant', or fill the connection's Tenant.",
    ),
    "root_tenant_id": ValueMacro(
        lambda v: v.lookup("root_tenant_id", params=True, fallback=True) or v.value("tenant", required=False),
        "No value for {root_tenant_id}: pass it, set a DAG param, or fill the connection's field.",
    ),
    "tap": ValueMacro(
        lambda v: v.lookup("tap", params=True, fallback=False),
        "No value for {tap}: pass tap=... or set the DAG param 'tap'.",
    ),
    "env_id": ValueMacro(
        lambda v: v.lookup("env_id", params=False, fallback=True),
        "No value for {env_id}: fill the connection's Environment ID.",
    ),
    "flow_id": ValueMacro(lambda v: v.dag_id),
    "dag_id": ValueMacro(lambda v: v.dag_id),
    "task_id": ValueMacro(lambda v: v.task_id),
    "map_index": ValueMacro(lambda v: str(v.map_index)),
    "try_number": ValueMacro(lambda v: str(v.try_number)),
    "run_id": ValueMacro(lambda v: re.sub(r"[:+]", "-", v.run_id)),
    "job_id": ValueMacro(_job_id),
    "stream_name": ValueMacro(lambda v: v.task_id),
    "stream_id": ValueMacro(lambda v: v.uuid5(v.dag_id, v.value("stream_name"))),
    "connection_id": ValueMacro(lambda v: v.uuid5(v.dag_id)),
    "connection_run_id": ValueMacro(lambda v: v.uuid5(v.dag_id, v.run_id)),
    "stream_run_id": ValueMacro(lambda v: v.uuid5(v.dag_id, v.run_id, v.task_id, v.map_index)),
    "extension": ValueMacro(missing="No value for {extension}: it follows the operator's format; pass extension=... ."),
    "filename": ValueMacro(missing="{filename} is set per file when uploading files; pass filename=... ."),
    "relative_path": ValueMacro(
        missing="{relative_path} is set per file when uploading a directory; pass relative_path=... ."
    ),
    "uuid": ValueMacro(lambda _: str(uuid.uuid4())),
}
MACRO_NAMES: tuple[str, ...] = (*DATE_MACROS, *VALUE_MACROS)


def _unknown_message(name: str, what: str = "Unknown macro") -> str:
    close = difflib.get_close_matches(name, MACRO_NAMES, n=1)
    hint = f" Did you mean {{{close[0]}}}?" if close else ""
    return f"{what} {{{name}}}.{hint} Valid macros: " + ", ".join(MACRO_NAMES) + "."


def _fields(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise MacroError(f"Malformed template {template!r}: {exc}. Write a literal brace as {{{{ or }}}}.") from None


def render(
    template: str,
    macro_values: MacroValues,
    *,
    keep_unknown: bool = False,
    escape: Callable[[str], str] = str,
    defer: Collection[str] = (),
) -> str:
    """Render ``template`` with ``macro_values``.

    ``keep_unknown`` leaves unknown ``{x}`` in place (patterns use them as masks);
    ``escape`` transforms each inserted value (patterns escape glob characters).
    ``defer`` leaves the named macros in place for a second pass (per-object macros such
    as ``{filename}``); the output is then itself a template, so literal braces stay
    escaped and inserted values are brace-escaped.
    """
    out: list[str] = []
    for literal, name, spec, conversion in _fields(template):
        out.append(_escape_braces(literal) if defer else literal)
        if name is None:
            continue
        if conversion is not None:
            raise MacroError(f"{{{name}!{conversion}}}: conversions are not supported; write {{{name}}}.")
        if name in defer:
            out.append("{" + name + (f":{spec}" if spec else "") + "}")
            continue
        if name not in MACRO_NAMES:
            if keep_unknown and not spec:
                out.append("{" + name + "}")
                continue
            raise MacroError(_unknown_message(name))
        value = escape(macro_values.render(name, spec or ""))
        out.append(_escape_braces(value) if defer else value)
    return "".join(out)


#: Macros a connection's own fields can fix (Tenant, Root Tenant ID, Environment ID).
CONNECTION_MACROS = ("tenant", "root_tenant_id", "env_id")


def connection_pattern(template: str, fallbacks: Mapping[str, Any], wildcard: str = "*") -> str:
    """``template`` as far as the connection alone decides it, without a run.

    Macros the connection's fields fix are rendered; every other macro becomes
    ``wildcard``. With ``*`` it is the prefix an IAM policy must grant; with a
    placeholder segment it is a prefix of the same shape to probe, so the Test button
    lists what the policy allows and what operators will list.
    """
    values = MacroValues({}, {}, fallbacks)
    out: list[str] = []
    for literal, name, spec, _ in _fields(template):
        out.append(literal)
        if name is None:
            continue
        value = None
        if name in CONNECTION_MACROS and not spec:
            value = values.value(name, required=False)
        out.append(value or wildcard)
    return "".join(out)


def _declared_params(context: Mapping[str, Any], names: Collection[str]) -> dict[str, Any]:
    """The DAG's own params (its declared defaults), without what a run's conf set."""
    declared = _get(context.get("dag"), "params") or {}
    found: dict[str, Any] = {}
    for name in names:
        try:
            if name in declared:
                found[name] = declared[name]
        except Exception:
            continue
    return found


def macro_names(template: str) -> set[str]:
    """The macros ``template`` uses."""
    return {name for _, name, _, _ in _fields(template) if name is not None}


def _instance_pattern(template: str, fixed: Mapping[str, str]) -> tuple[re.Pattern[str], list[str]]:
    """A regex matching every rendering of ``template`` in which each macro is one key
    segment (a date macro whose format holds '/' as many segments) and each macro in
    ``fixed`` is exactly its value; and the field of each group (``name`` or ``name:spec``)."""
    out: list[str] = []
    groups: list[str] = []
    for literal, name, spec, _ in _fields(template):
        out.append(re.escape(literal))
        if name is None:
            continue
        if name in fixed and fixed[name] and not spec:
            out.append(re.escape(fixed[name]))
            continue
        segments = (spec or "").count("/") + 1 if name in DATE_MACROS else 1
        out.append("(" + "/".join(["[^/]+"] * segments) + ")")
        groups.append(name + (f":{spec}" if spec else ""))
    return re.compile("".join(out)), groups


def instance_values(template: str, rendered: str, fixed: Mapping[str, str]) -> dict[str, str]:
    """The macro values that make ``rendered`` from ``template`` (a connection's path_prefix),
    by field (``tenant``, ``date:%Y/%m``). Raises :class:`ScopeError` when ``rendered`` is not
    such an instance: another static prefix, a macro spanning segments, a fixed macro with
    another value."""
    pattern, fields = _instance_pattern(template.strip("/"), fixed)
    match = pattern.fullmatch(rendered.strip("/"))
    problem = path_problem(rendered.strip("/"))
    if match is None or problem is not None:
        raise ScopeError(
            f"path_prefix {rendered!r} is not an instance of the connection's path_prefix {template!r}"
            + (f" (it {problem})" if problem else "")
            + ": each macro stands for one segment, and the values the connection fixes keep their value."
        )
    values: dict[str, str] = {}
    for field, value in zip(fields, match.groups(), strict=True):
        if values.setdefault(field, value) != value:
            raise ScopeError(f"path_prefix {rendered!r} gives {{{field}}} two values ({values[field]!r}, {value!r}).")
    return values


def fill_instance(template: str, values: Mapping[str, str], fixed: Mapping[str, str]) -> str:
    """``template`` with the values :func:`instance_values` found (a trigger's serialized
    scope); checked as an instance again, so a value spanning segments is refused."""
    out: list[str] = []
    for literal, name, spec, _ in _fields(template):
        out.append(literal)
        if name is None:
            continue
        field = name + (f":{spec}" if spec else "")
        value = values.get(field)
        if name in fixed and fixed[name] and not spec:
            if value not in (None, fixed[name]):
                raise ScopeError(
                    f"{{{name}}} is {value!r} in the serialized scope, but the connection fixes it to {fixed[name]!r}."
                )
            value = fixed[name]
        if value is None:
            raise ScopeError(f"No value for {{{field}}} of the connection's path_prefix {template!r}.")
        out.append(str(value))
    rendered = "".join(out)
    instance_values(template, rendered, fixed)
    return rendered


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def render_key(
    template: str,
    context: Mapping[str, Any],
    *,
    fallbacks: Mapping[str, Any] | None = None,
    **values: Any,
) -> str:
    """Render the macros of a key, prefix or path template from an Airflow task context.

    :param template: text after Jinja, e.g. ``exports/{tenant}/{date:%Y%m}/{uuid}.{extension}``.
    :param context: the task's Airflow context (``dag``, ``ti``, ``dag_run``, ``params``…).
    :param fallbacks: lowest-priority values, e.g. the connection's ``tenant`` and ``env_id``.
    :param values: overrides of any macro (``tenant=``, ``extension=``…) or of the instants
        the date macros derive from (``load_time=``, ``cursor=``, ``logical_time=``).
    """
    return render(template, MacroValues(context, values, fallbacks))
