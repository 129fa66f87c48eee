"""The Airflow names that moved between Airflow 3 lines, imported from one place.

Every other module takes its Airflow base classes and helpers from here, so that what each
line lacks is decided once, on purpose:

* Airflow 3.0 and 3.1 keep ``conf``, ``AirflowNotFoundException``, ``BaseHook`` (3.0) and
  ``mask_secret`` outside the task SDK. The common-compat provider's ``sdk`` module
  resolves each name to where the running line keeps it, so we do not repeat that table.
* Shared trigger streams (one poll for every watcher of the same listing) and asset state
  (where the event watcher keeps its watermark) came with Airflow 3.3. Without them each
  watcher polls on its own and keeps its watermark in the triggerer's memory
  (:mod:`airflow_s3connect.triggers.object_events` says what that changes).
* DAG bundles report a ``BundleVersion`` (a version and its data) from Airflow 3.3; older
  lines take the version as a string.
* Airflow's metrics (``Stats``) moved to ``airflow.sdk.observability.stats`` in 3.3; the old
  module still answers there, with a deprecation warning we do not want in task logs.
* The declarative connection form (``conn-fields``) came with Airflow 3.2; older lines
  build the form from the hook's widget methods, which
  :mod:`airflow_s3connect.hooks.form` generates from the same table of fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowNotFoundException,
    AirflowSkipException,
    Asset,
    AssetAlias,
    BaseHook,
    BaseOperator,
    BaseOperatorLink,
    BaseSensorOperator,
    PokeReturnValue,
    TaskDeferred,
    XCom,
    conf,
    mask_secret,
)

if TYPE_CHECKING:
    from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent
    from airflow.triggers.shared_stream import SharedStreamProducer

#: Trigger names, loaded when a trigger module asks for them: an operator (imported by
#: every DAG file) does not pay for the trigger machinery.
_TRIGGER_NAMES = ("BaseEventTrigger", "BaseTrigger", "TriggerEvent")


def __getattr__(name: str) -> Any:
    if name in _TRIGGER_NAMES:
        from airflow.triggers import base

        return getattr(base, name)
    if name == "SharedStreamProducer":
        try:
            from airflow.triggers.shared_stream import SharedStreamProducer
        except ImportError:  # before Airflow 3.3: each watcher runs its own run()
            return object
        return SharedStreamProducer
    raise AttributeError(name)


def bundle_version(version: str, data: dict[str, Any] | None = None) -> Any:
    """What a DAG bundle's ``get_current_version`` returns on this Airflow line."""
    try:
        from airflow.dag_processing.bundles.base import BundleVersion
    except ImportError:  # before Airflow 3.3: the version string alone
        return version
    return BundleVersion(version, data)


def stats() -> Any:
    """Airflow's Stats (StatsD / OpenTelemetry, as the deployment configures it)."""
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # before Airflow 3.3
        from airflow.stats import Stats
    return Stats


__all__ = [
    "AirflowNotFoundException",
    "AirflowSkipException",
    "Asset",
    "AssetAlias",
    "BaseEventTrigger",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "BaseTrigger",
    "PokeReturnValue",
    "SharedStreamProducer",
    "TaskDeferred",
    "TriggerEvent",
    "XCom",
    "bundle_version",
    "conf",
    "mask_secret",
    "stats",
]
