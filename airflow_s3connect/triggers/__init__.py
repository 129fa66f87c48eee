"""Triggers of airflow-s3connect (run in the triggerer)."""

from airflow_s3connect.triggers.object_events import S3ObjectEventTrigger
from airflow_s3connect.triggers.restore import S3RestoreTrigger
from airflow_s3connect.triggers.s3object import S3ObjectTrigger

__all__ = ["S3ObjectEventTrigger", "S3ObjectTrigger", "S3RestoreTrigger"]
