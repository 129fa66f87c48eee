"""Operators of airflow-s3connect."""
