"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The connection form is declarative (``conn-fields``, Airflow 3.2+): the UI renders it
without importing the hook. Fields come from :data:`airflow_s3connect.connection.FIELDS`,
the same table the settings parser validates against.
"""

from __future__ import annotations

from typing import Any

from airflow_s3connect import __version__
from airflow_s3connect.connection import CONN_TYPE, FIELDS, UI_FIELD_BEHAVIOUR

HOOK_CLASS = "airflow_s3connect.hooks.s3connect.S3ConnectHook"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-s3connect",
        "name": "S3 Connect",
        "description": "Amazon S3 and S3-compatible stores: least-privilege connection with "
        "access-key and cross-account AssumeRole auth, key macros, parallel atomic transfers.",
        "state": "ready",
        "source-date-epoch": 1763769600,
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "S3 Connect",
                "external-doc-url": "https://docs.aws.amazon.com/AmazonS3/latest/API/Welcome.html",
                "tags": ["aws"],
            }
        ],
        "hooks": [{"integration-name": "S3 Connect", "python-modules": ["airflow_s3connect.hooks.s3connect"]}],
        "operators": [
            {
                "integration-name": "S3 Connect",
                "python-modules": [
                    "airflow_s3connect.operators.put_object",
                    "airflow_s3connect.operators.get_object",
                    "airflow_s3connect.operators.list_objects",
                    "airflow_s3connect.operators.catalog",
                    "airflow_s3connect.operators.delete_objects",
                    "airflow_s3connect.operators.copy_objects",
                ],
            }
        ],
        "sensors": [{"integration-name": "S3 Connect", "python-modules": ["airflow_s3connect.sensors.s3object"]}],
        "triggers": [
            {
                "integration-name": "S3 Connect",
                "python-modules": [
                    "airflow_s3connect.triggers.s3object",
                    "airflow_s3connect.triggers.object_events",
                    "airflow_s3connect.triggers.restore",
                ],
            }
        ],
        "bundles": [{"integration-name": "S3 Connect", "python-modules": ["airflow_s3connect.bundles"]}],
        "extra-links": ["airflow_s3connect.links.S3ConsoleLink"],
        "filesystems": ["airflow_s3connect.hooks.fs"],
        "remote-logging": [
            {"scheme": "s3connect", "classpath": "airflow_s3connect.hooks.task_logs.S3ConnectRemoteLogIO"}
        ],
        "config": {
            "s3connect": {
                "description": "Transfers of the S3 Connect provider.",
                "options": {
                    "progress_interval": {
                        "description": "Seconds between two progress lines (objects, bytes, rate, ETA, retries) in "
                        "the log of a running transfer, and between two sends of its metrics; a transfer that ends "
                        "sooner logs none. 0 turns progress lines off. An operator's progress_interval overrides it.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "10",
                        "default": "30",
                    }
                },
            }
        },
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": "Amazon S3 (S3 Connect)",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": {
                    f.name: {"label": f.label, "description": f.description, "schema": f.form_schema} for f in FIELDS
                },
            }
        ],
    }
