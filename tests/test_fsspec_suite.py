"""fsspec's own suite for implementers (``fsspec/tests/abstract``: copy, get, put, pipe, open),
run against ``s3connect://`` as s3fs runs it: on moto and Ceph RGW, with a connection to any
bucket and with one scoped to a prefix of one bucket.

Where fsspec's expectation contradicts a guarantee of ours the test is overridden below,
with the reason, and asserts our behaviour instead.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Callable
from typing import Any

import fsspec.tests.abstract as abstract
import pytest

from airflow_s3connect.filesystem import S3ConnectFileSystem
from airflow_s3connect.scope import Scope
from tests.support.stores import Store, endpoint_client

#: (store, scoped) pairs: every store of the suite's S3 servers that the filesystem serves.
SETUPS = [("moto", False), ("moto", True), ("rgw-http", False), ("rgw-http", True)]


@pytest.fixture(scope="module", params=SETUPS, ids=[f"{s}-{'scoped' if p else 'unscoped'}" for s, p in SETUPS])
def setup(request: pytest.FixtureRequest, moto_plain: Any) -> tuple[S3ConnectFileSystem, str]:
    """A filesystem and the folder the suite works in (its own bucket; scoped: a prefix)."""
    from tests.conftest import running_store

    name, scoped = request.param
    store: Store = running_store(request, name, moto_plain)
    bucket = store.new_bucket("s3c-fsspec")
    prefix = "team/" if scoped else ""
    extra = {"path_prefix": "team"} if scoped else {}
    if scoped:
        client = store.client(bucket, **extra)
    else:  # a connection without a bucket: any bucket of the store
        client = endpoint_client(store.endpoint_url, key=store.key, secret=store.secret, region=store.region,
                                 ca_bundle=store.ca_bundle)  # fmt: skip
    scope = Scope(bucket, prefix) if scoped else Scope()
    return S3ConnectFileSystem(client, scope), f"{bucket}/{prefix}suite"


class _Fixtures(abstract.AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, setup: tuple[S3ConnectFileSystem, str]) -> S3ConnectFileSystem:
        return setup[0]

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return posixpath.join

    @pytest.fixture
    def fs_path(self, setup: tuple[S3ConnectFileSystem, str]) -> str:
        return f"{setup[1]}-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False  # S3 has prefixes, not directories


class TestCopy(abstract.AbstractCopyTests, _Fixtures):  # type: ignore[misc]
    pass


class TestGet(abstract.AbstractGetTests, _Fixtures):  # type: ignore[misc]
    pass


class TestPut(abstract.AbstractPutTests, _Fixtures):  # type: ignore[misc]
    pass


class TestPipe(abstract.AbstractPipeTests, _Fixtures):  # type: ignore[misc]
    pass


class TestOpen(abstract.AbstractOpenTests, _Fixtures):  # type: ignore[misc]
    pass
