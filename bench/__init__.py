"""``make bench``: airflow-s3connect against apache-airflow-providers-amazon on one moto server."""
