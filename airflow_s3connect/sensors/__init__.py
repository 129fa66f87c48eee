"""Sensors of airflow-s3connect."""

from airflow_s3connect.sensors.s3object import S3ObjectSensor

__all__ = ["S3ObjectSensor"]
