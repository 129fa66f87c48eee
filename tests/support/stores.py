"""The S3 servers behaviour suites run on: moto (HTTP), Ceph RGW over HTTP and over HTTPS,
OpenStack Swift's s3api (HTTP).

A :class:`Store` gives what a test needs of a server, whichever it is: the connection
extras that reach it, and an admin client to set up and inspect buckets.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

STORES = ("moto", "rgw-http", "rgw-https", "swift")
#: The engine every test connection uses: the connection's default (``auto``: the native
#: engine where it can) unless ``S3CONNECT_TEST_ENGINE`` names one; tests/test_engines.py runs
#: the guarantee suites again with ``botocore``.
ENGINE: dict[str, str] = (
    {"engine": os.environ["S3CONNECT_TEST_ENGINE"]} if os.environ.get("S3CONNECT_TEST_ENGINE") else {}
)


@dataclass
class Store:
    name: str
    endpoint_url: str
    key: str
    secret: str
    ca_bundle: str | None
    region: str
    admin: Any

    @property
    def create_only(self) -> bool:
        """Whether the store refuses a conditional write to an existing key. Swift's s3api
        answers 501 to every conditional PUT: there ``overwrite=False`` is our refusal."""
        return self.name != "swift"

    @property
    def overwrite_off_refusal(self) -> str:
        """What ``overwrite=False`` on an existing key raises here (a message pattern): the key
        exists, or where the store has no conditional writes, our refusal before any write."""
        return "already exists" if self.create_only else "refuses conditional writes .* nothing was written"

    @property
    def location(self) -> str:
        """What GetBucketLocation names: moto the bucket's region, RGW its zonegroup, Swift
        nothing (AWS's legacy answer for us-east-1)."""
        return {"moto": self.region, "swift": "us-east-1"}.get(self.name, "default")

    def conn(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """An ``AIRFLOW_CONN_*`` body for this store, scoped to ``bucket``."""
        fields: dict[str, Any] = {"endpoint_url": self.endpoint_url, "region_name": self.region, "bucket": bucket,
                                  "addressing_style": "path", **ENGINE}  # fmt: skip
        if self.ca_bundle:
            fields["ca_bundle"] = self.ca_bundle
        return {"conn_type": "s3connect", "login": self.key, "password": self.secret, "extra": {**fields, **extra}}

    def client(self, bucket: str, **extra: Any) -> Any:
        """Our client for a connection to this store scoped to ``bucket``."""
        fields = self.conn(bucket, **extra)["extra"]
        return endpoint_client(fields.pop("endpoint_url"), key=self.key, secret=self.secret,
                               region=fields.pop("region_name"), **fields)  # fmt: skip

    def new_bucket(self, stem: str = "s3c") -> str:
        """A fresh, empty bucket (RGW has no reset: each test takes its own)."""
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        if self.region == "us-east-1":
            self.admin.create_bucket(Bucket=name)
        else:
            self.admin.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        return name


def store_for(name: str, moto_server: Any, rgw: Any = None, swift: Any = None) -> Store:
    if name == "moto":
        return Store(name, moto_server.url, "AKIAEXAMPLE", "secret", None, "eu-west-1",
                     moto_server.admin_client("s3"))  # fmt: skip
    if name == "swift":
        return Store(name, swift.url, swift.access_key, swift.secret_key, None, "us-east-1", swift.client())
    https = name == "rgw-https"
    return Store(
        name,
        rgw.https_url if https else rgw.http_url,
        rgw.access_key,
        rgw.secret_key,
        rgw.ca_file if https else None,
        "us-east-1",
        rgw.client(https=https),
    )


def endpoint_client(
    endpoint_url: str, *, key: str = "AKIAEXAMPLE", secret: str = "secret", region: str = "eu-west-1", **extra: Any
) -> Any:
    """Our S3 client (scope guard, checksums, retries) for a connection to ``endpoint_url``,
    as every in-process test builds it: path addressing, the tests' keys and region unless
    given; ``extra`` are more connection fields (bucket, path_prefix, max_attempts, ...)."""
    from airflow_s3connect.client import build_s3_client, build_session
    from airflow_s3connect.connection import parse_settings

    fields = {"endpoint_url": endpoint_url, "region_name": region, "addressing_style": "path", **ENGINE, **extra}
    settings = parse_settings("test", key, secret, fields)
    return build_s3_client(settings, build_session(settings))


def make_client(moto: Any, **extra: Any) -> Any:
    """Our client for the tests' moto server (its region, path addressing)."""
    return endpoint_client(moto.url, region="eu-west-1", **extra)


class TaskState(dict[str, Any]):
    """Airflow's task state store as operators use it (``get`` and ``set``), kept in a dict."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value
