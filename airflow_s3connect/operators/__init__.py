"""Operators of airflow-s3connect: Put, Get, List, Copy and Delete Objects, and the metadata catalog."""

from airflow_s3connect.operators.catalog import S3CatalogOperator
from airflow_s3connect.operators.copy_objects import S3CopyObjectsOperator
from airflow_s3connect.operators.delete_objects import S3DeleteObjectsOperator
from airflow_s3connect.operators.get_object import S3GetObjectOperator
from airflow_s3connect.operators.list_objects import S3ListObjectsOperator
from airflow_s3connect.operators.put_object import S3PutObjectOperator

__all__ = [
    "S3CatalogOperator",
    "S3CopyObjectsOperator",
    "S3DeleteObjectsOperator",
    "S3GetObjectOperator",
    "S3ListObjectsOperator",
    "S3PutObjectOperator",
]
