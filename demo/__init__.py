"""The demo: an embedded S3 on loopback and the example DAGs run end to end."""
