"""Triggers of airflow-s3connect (run in the triggerer)."""

from airflow_s3connect.triggers.s3object import S3ObjectTrigger

__all__ = ["S3ObjectTrigger"]
