"""OpenStack Swift with its S3 API (``s3api``) on loopback, from Debian's packages, started by
the tests.

A third S3 dialect next to moto and Ceph RGW: Swift keeps objects as files with metadata in
extended attributes, answers many conditions differently (501 to conditional PUTs, 412 to a
copy pinned to a multipart ETag, Content-MD5 required on DeleteObjects) and lists with its
own container server. One account, one container and one object server (one replica, one
device: a folder on the local disk), and the proxy with ``s3api`` and ``tempauth`` on free
loopback ports. The S3 key is tempauth's ``account:user``, the secret its password. Every
file lives under one folder, and every process is stopped with the server; it comes up in
about 3 s.

Run as ``python -m tests.support.swift_server DIR`` to keep one up by hand (Ctrl-C stops it).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.stack import stop_groups
from tests.support.daemons import admin_client, require, serve_by_hand, spawn, wait_for_s3
from tests.support.moto_server import free_port

PACKAGES = ("swift-proxy", "swift-account", "swift-container", "swift-object")
#: Debian's scripts run on the system interpreter, whose site-packages hold Swift.
BINARIES = ("swift-proxy-server", "swift-account-server", "swift-container-server", "swift-object-server")
SWIFT_PYTHON = "/usr/bin/python3"
SERVERS = ("account", "container", "object")


@dataclass
class SwiftServer:
    """A running Swift proxy with s3api: ``url`` and keys."""

    workdir: Path
    url: str
    access_key: str = "s3connect:tester"
    secret_key: str = "s3connect-swift-secret"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, timeout: float = 60) -> SwiftServer:
        require("Swift", BINARIES, PACKAGES)
        shutil.rmtree(workdir, ignore_errors=True)
        for sub in ("log", "run", "node/d1", "cache"):
            (workdir / sub).mkdir(parents=True)
        ports = {name: free_port() for name in (*SERVERS, "proxy")}
        server = cls(workdir, f"http://127.0.0.1:{ports['proxy']}")
        (workdir / "swift.conf").write_text(_SWIFT_CONF)
        server._rings(ports)
        for name in SERVERS:
            (workdir / f"{name}-server.conf").write_text(
                _STORAGE_CONF.format(dir=workdir, name=name, port=ports[name], user=_user())
            )
        account, user = server.access_key.split(":")
        proxy = "".join(f"[filter:{name}]\nuse = egg:swift#{name}\n\n" for name in _PLAIN_FILTERS)
        proxy += _PROXY_CONF.format(dir=workdir, port=ports["proxy"], user=_user(), account=account, key=user,
                                   secret=server.secret_key)  # fmt: skip
        (workdir / "proxy-server.conf").write_text(proxy)
        try:
            for name in (*SERVERS, "proxy"):
                server._daemon(name)
            wait_for_s3(server.client(), server.processes, time.monotonic() + timeout, "Swift's s3api", workdir / "log")
        except BaseException:
            server.stop()
            raise
        return server

    def _rings(self, ports: dict[str, int]) -> None:
        """The three rings (one device, one replica), built in one run of Swift's interpreter."""
        script = (
            "import sys\nfrom swift.common.ring import RingBuilder\n"
            "for name, port in zip(sys.argv[2::2], sys.argv[3::2]):\n"
            "    builder = RingBuilder(4, 1, 0)\n"
            "    builder.add_dev({'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port), 'device': 'd1',"
            " 'weight': 1})\n"
            "    builder.rebalance()\n"
            "    builder.get_ring().save(f'{sys.argv[1]}/{name}.ring.gz')\n"
        )
        pairs = [str(part) for name in SERVERS for part in (name, ports[name])]
        done = subprocess.run([SWIFT_PYTHON, "-c", script, str(self.workdir), *pairs], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"Swift's rings could not be built: {done.stderr[-2000:]}")

    def _daemon(self, name: str) -> None:
        command = [f"swift-{name}-server", str(self.workdir / f"{name}-server.conf"), "--verbose"]
        self.processes.append(spawn(command, self.workdir / "log" / f"{name}.out"))

    def client(self, **config: Any) -> Any:
        return admin_client(self.url, self.access_key, self.secret_key, **config)

    def stop(self) -> None:
        stop_groups(self.processes, grace=15)
        self.processes.clear()


def _user() -> str:
    import os
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


_SWIFT_CONF = """[swift-hash]
swift_hash_path_suffix = s3connect-tests
swift_hash_path_prefix = s3connect-tests

[storage-policy:0]
name = Policy-0
default = yes
"""

_STORAGE_CONF = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {dir}
devices = {dir}/node
mount_check = false
disable_fallocate = true
log_name = {name}
log_facility = LOG_LOCAL0
log_level = WARNING
log_address = /nonexistent

[pipeline:main]
pipeline = {name}-server

[app:{name}-server]
use = egg:swift#{name}
"""

#: The proxy's middleware that needs no settings (``use = egg:swift#NAME``).
_PLAIN_FILTERS = ("catch_errors", "gatekeeper", "healthcheck", "proxy_logging", "listing_formats", "bulk", "copy",
                  "slo", "dlo", "versioned_writes")  # fmt: skip

_PROXY_CONF = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {dir}
log_name = proxy
log_level = WARNING
log_address = /nonexistent

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy_logging cache listing_formats bulk s3api tempauth
    copy slo dlo versioned_writes proxy_logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
# One of each server on 2 shared cores: a slow answer is load, not a failed node (Swift
# would otherwise stop using the only node for a minute after 10 errors).
conn_timeout = 10
node_timeout = 60
error_suppression_limit = 1000000

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:1

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempauth]
use = egg:swift#tempauth
user_{account}_{key} = {secret} .admin

"""


def main() -> None:
    serve_by_hand(SwiftServer.start, "/tmp/s3connect-swift", lambda server: {
        "url": server.url, "key": server.access_key, "secret": server.secret_key})  # fmt: skip


if __name__ == "__main__":
    main()
