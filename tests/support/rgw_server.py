"""Ceph's RADOS Gateway on loopback, from Debian's packages, started by the tests.

One monitor, one manager and one OSD on ``memstore`` (RAM, no disk to prepare), pools of
size 1, authentication off inside the cluster, and ``radosgw`` with the beast frontend
serving HTTP and HTTPS (a self-signed CA made here) on free loopback ports. S3 keys come
from ``radosgw-admin user create``. All state lives under one folder and every daemon is
stopped with the server; it comes up in about 15 s.

Run as ``python -m tests.support.rgw_server DIR`` to keep one up by hand (Ctrl-C stops it).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.stack import stop_groups
from tests.support.daemons import admin_client, require, serve_by_hand, spawn, wait_for_s3
from tests.support.moto_server import free_port

PACKAGES = ("ceph-mon", "ceph-osd", "ceph-mgr", "radosgw", "ceph-common")
BINARIES = ("ceph-mon", "ceph-osd", "ceph-mgr", "radosgw", "radosgw-admin", "ceph", "monmaptool")


@dataclass
class RgwServer:
    """A running RGW: ``http_url``, ``https_url`` (verify with ``ca_file``), and keys."""

    workdir: Path
    http_url: str
    https_url: str
    ca_file: str
    access_key: str
    secret_key: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, timeout: float = 120, memstore_bytes: int = 4 << 30) -> RgwServer:
        """``memstore_bytes``: the OSD's RAM for data (allocated as it is written)."""
        require("Ceph", BINARIES, PACKAGES)
        shutil.rmtree(workdir, ignore_errors=True)
        for sub in ("log", "run", "mon", "osd", "mgr", "rgw"):
            (workdir / sub).mkdir(parents=True)
        mon_port, http_port, https_port = free_port(), free_port(), free_port()
        ca, cert, key = _self_signed(workdir)
        conf = workdir / "ceph.conf"
        conf.write_text(
            _CONF.format(
                fsid=uuid.uuid4(),
                dir=workdir,
                mon=f"127.0.0.1:{mon_port}",
                memstore_bytes=memstore_bytes,
                frontends=f"beast endpoint=127.0.0.1:{http_port} ssl_endpoint=127.0.0.1:{https_port} tcp_nodelay=1 "
                f"ssl_certificate={cert} ssl_private_key={key}",
            )
        )
        server = cls(
            workdir,
            f"http://127.0.0.1:{http_port}",
            f"https://127.0.0.1:{https_port}",
            str(ca),
            "S3CONNECTRGWKEY",
            "s3connect-rgw-secret-0123456789",
        )
        try:
            server._bring_up(mon_port, timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _ceph(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [args[0], "--conf", str(self.workdir / "ceph.conf"), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def _ceph_until(self, deadline: float, *args: str) -> str:
        """``_ceph(*args)``, asked again each second while it fails, until ``deadline``."""
        while True:
            try:
                return self._ceph(*args, timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def _daemon(self, *args: str) -> None:
        command = [args[0], "--conf", str(self.workdir / "ceph.conf"), "--foreground", *args[1:]]
        self.processes.append(spawn(command, self.workdir / "log" / f"{args[0]}.out"))

    def _bring_up(self, mon_port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        fsid = next(
            line.split("=", 1)[1].strip()
            for line in (self.workdir / "ceph.conf").read_text().splitlines()
            if line.startswith("fsid")
        )
        monmap = str(self.workdir / "monmap")
        self._ceph("monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v1:127.0.0.1:{mon_port}]", monmap)
        self._ceph("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", "/dev/null")
        self._daemon("ceph-mon", "-i", "a")
        self._ceph("ceph", "status", timeout=max(5.0, deadline - time.monotonic()))
        self._daemon("ceph-mgr", "-i", "x")
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph_until(deadline, "ceph", "osd", "new", osd_uuid).strip()
        self._ceph("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        # Under load the monitor may answer "problem getting command descriptions" (EPERM)
        # while the manager registers: asked again until the deadline.
        self._ceph_until(deadline, "ceph", "osd", "crush", "add", f"osd.{osd_id}", "1", "root=default",
                         "host=localhost")  # fmt: skip
        self._daemon("ceph-osd", "-i", osd_id)
        self._daemon("radosgw", "-n", "client.rgw")
        self._ceph_until(
            deadline, "radosgw-admin", "user", "create", "--uid", "s3connect", "--display-name", "s3connect",
            "--access-key", self.access_key, "--secret-key", self.secret_key,
        )  # fmt: skip
        wait_for_s3(self.client(), self.processes, deadline, "radosgw", self.workdir / "log")

    def client(self, https: bool = False, **config: Any) -> Any:
        url, verify = (self.https_url, self.ca_file) if https else (self.http_url, None)
        return admin_client(url, self.access_key, self.secret_key, verify, **config)

    def stop(self) -> None:
        stop_groups(self.processes, grace=15)
        self.processes.clear()


def _self_signed(workdir: Path) -> tuple[Path, Path, Path]:
    """A private CA and the certificate it signs for 127.0.0.1, as a store behind a company CA
    is set up (a self-signed certificate used as its own CA is refused by rustls, which the
    native engine uses): (the CA to verify with, the server's chain, its key)."""
    ca, ca_key = workdir / "ca.crt", workdir / "ca.key"
    cert, key, request = workdir / "rgw.crt", workdir / "rgw.key", workdir / "rgw.csr"
    extensions = workdir / "rgw.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                          "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")  # fmt: skip
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(ca_key), "-out", str(ca),
         "-subj", "/CN=s3connect test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
         "-out", str(cert), "-extfile", str(extensions)],
    ):  # fmt: skip
        subprocess.run(["openssl", *command], check=True, capture_output=True)
    cert.write_bytes(cert.read_bytes() + ca.read_bytes())  # the chain the server presents
    return ca, cert, key


_CONF = """[global]
fsid = {fsid}
mon host = v1:{mon}
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
ms bind msgr2 = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
pid file = {dir}/run/$name.pid
keyring = /dev/null
setuser match path = {dir}

[mon.a]
mon data = {dir}/mon
mon data avail crit = 0
mon allow pool delete = true

[mgr.x]
mgr data = {dir}/mgr

[osd]
osd data = {dir}/osd
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd class load list = *
osd class default list = *
# The OSD places itself in the CRUSH map at start with a command the monitor refuses
# before it knows the cluster's fsid; the launcher adds it instead.
osd class update on start = false
osd crush update on start = false

[client.rgw]
rgw data = {dir}/rgw
rgw frontends = {frontends}
rgw dns name = localhost
rgw enable usage log = false
# Deleted objects' data is freed within seconds, not hours: memstore holds it in RAM.
rgw gc obj min wait = 5
rgw gc processor period = 10
# SSE-KMS with RGW's test key backend: aws:kms with SSEKMSKeyId testkey-1 (HTTPS only, as
# RGW requires for any encryption key on the wire).
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = testkey-1=YmluCmJvb3N0CmJvb3N0LWJ1aWxkCmNlcGguY29uZgo=
"""


def main() -> None:
    serve_by_hand(RgwServer.start, "/tmp/s3connect-rgw", lambda server: {
        "http": server.http_url, "https": server.https_url, "ca": server.ca_file, "key": server.access_key,
        "secret": server.secret_key})  # fmt: skip


if __name__ == "__main__":
    main()
