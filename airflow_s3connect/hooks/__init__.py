"""Airflow hooks of airflow-s3connect."""
