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
* The declarative connection form (``conn-fields``) came with Airflow 3.2; older lines
  build the form from the hook's widget methods, which
  :mod:`airflow_s3connect.hooks.form` generates from the same table of fields.
"""

from __future__ import annotations

from importlib.metadata import version

from airflow.providers.common.compat.sdk import (
    AirflowNotFoundException,
    Asset,
    AssetAlias,
    BaseHook,
    BaseOperator,
    BaseOperatorLink,
    BaseSensorOperator,
    PokeReturnValue,
    XCom,
    conf,
    mask_secret,
)
from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

try:
    from airflow.triggers.shared_stream import SharedStreamProducer

    HAS_SHARED_STREAMS = True
except ImportError:  # before Airflow 3.3: each watcher runs its own run()
    SharedStreamProducer = object  # type: ignore[assignment,misc]
    HAS_SHARED_STREAMS = False

#: The running Airflow line as (major, minor).
AIRFLOW_LINE: tuple[int, int] = tuple(int(part) for part in version("apache-airflow").split(".")[:2])  # type: ignore[assignment]

__all__ = [
    "AIRFLOW_LINE",
    "HAS_SHARED_STREAMS",
    "AirflowNotFoundException",
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
    "TriggerEvent",
    "XCom",
    "conf",
    "mask_secret",
]
