# Airflow 3.3 with this provider installed from the repository (docker-compose.yaml builds it).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml README.md /opt/airflow-s3connect/
COPY --chown=airflow:root airflow_s3connect /opt/airflow-s3connect/airflow_s3connect
RUN pip install --no-cache-dir "/opt/airflow-s3connect[parquet]"
