"""Airflow's logging configuration with task logs in S3 through an s3connect connection.

Set ``[logging] logging_config_class = airflow_s3connect.log_settings.LOGGING_CONFIG``
beside ``remote_logging = True`` and ``remote_base_log_folder = s3connect://bucket/folder``
(and ``remote_log_conn_id``). Airflow reads ``REMOTE_TASK_LOG`` from this module on
workers, triggerers and the API server.

Why a module of our own: up to Airflow 3.3, Airflow's default logging settings raise for
any remote scheme they do not list themselves, before the provider's ``remote-logging``
entry is consulted. So the default configuration is built here with remote logging off
(the only way to reach it without that error: the option is read from the environment
while the module is imported), and the remote half is ours. Everything else (handlers,
formatters, local files) is Airflow's own.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from airflow_s3connect.hooks.task_logs import S3ConnectRemoteLogIO

_REMOTE_LOGGING = "AIRFLOW__LOGGING__REMOTE_LOGGING"


def _airflow_defaults() -> dict[str, Any]:
    saved = os.environ.get(_REMOTE_LOGGING)
    os.environ[_REMOTE_LOGGING] = "False"
    try:
        from airflow.config_templates.airflow_local_settings import DEFAULT_LOGGING_CONFIG
    finally:
        if saved is None:
            del os.environ[_REMOTE_LOGGING]
        else:
            os.environ[_REMOTE_LOGGING] = saved
    return copy.deepcopy(DEFAULT_LOGGING_CONFIG)


LOGGING_CONFIG: dict[str, Any] = _airflow_defaults()
REMOTE_TASK_LOG: S3ConnectRemoteLogIO = S3ConnectRemoteLogIO.from_config()
DEFAULT_REMOTE_CONN_ID: str = REMOTE_TASK_LOG.conn_id
