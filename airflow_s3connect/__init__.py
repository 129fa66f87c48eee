"""Amazon S3 provider for Apache Airflow 3: least-privilege, macro-aware, atomic transfers."""

from __future__ import annotations

__version__ = "0.1.0"
