"""A moto server in its own process on a free loopback port, and an IAM factory for it.

Tests talk to it over real HTTP with SigV4. Its recorder keeps every request it
received, so tests assert on what reached the server (request counts, AssumeRole
parameters, headers) rather than on what the client meant to send.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import boto3
from botocore.config import Config

ACCOUNT = "123456789012"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query, keep_blank_values=True)

    @property
    def form(self) -> dict[str, str]:
        """Form parameters of a query-protocol call (STS, IAM)."""
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}

    @property
    def sts_action(self) -> str | None:
        return self.form.get("Action") if self.method == "POST" and self.path == "/" else None


@dataclass
class Recording:
    requests: list[Recorded] = field(default_factory=list)

    def sts(self, action: str) -> list[Recorded]:
        return [r for r in self.requests if r.sts_action == action]

    def s3(self) -> list[Recorded]:
        return [r for r in self.requests if r.sts_action is None and not _target(r).startswith("AmazonSQS.")]

    def sqs(self, action: str) -> list[Recorded]:
        """SQS requests of ``action`` (JSON protocol: named by the X-Amz-Target header)."""
        return [r for r in self.requests if _target(r) == f"AmazonSQS.{action}"]


def _target(request: Recorded) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == "x-amz-target"), "")


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @classmethod
    def start(cls, workdir: Path) -> MotoServer:
        """moto's server, with conditional writes atomic as on S3 (see tests/support/moto_launcher.py)."""
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, MOTO_RECORDER_FILEPATH=str(workdir / "recording.jsonl"), PYTHONPATH=root)
        log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_launcher", "127.0.0.1", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        server = cls(f"http://127.0.0.1:{port}", process, workdir)
        deadline = time.monotonic() + 60
        while True:
            try:
                server._api("GET", "/moto-api/data.json")
                return server
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {(workdir / 'server.log').read_text()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def _api(self, method: str, path: str, body: bytes | None = None) -> bytes:
        # A JSON content type keeps werkzeug from parsing the body as a form (reset-auth reads it raw).
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def reset(self) -> None:
        self.set_auth(enforced=False)
        self._api("POST", "/moto-api/reset")

    def set_auth(self, enforced: bool) -> None:
        """Turn IAM enforcement (SigV4 check + policy evaluation) on or off."""
        self._api("POST", "/moto-api/reset-auth", b"0" if enforced else b"inf")

    @contextmanager
    def recording(self) -> Iterator[Recording]:
        """Record every request received inside the block."""
        result = Recording()
        self._api("POST", "/moto-api/recorder/reset-recording")
        self._api("POST", "/moto-api/recorder/start-recording")
        try:
            yield result
        finally:
            self._api("POST", "/moto-api/recorder/stop-recording")
            for line in (self.workdir / "recording.jsonl").read_text().splitlines():
                entry = json.loads(line)
                body = entry.get("body") or ""
                raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
                result.requests.append(Recorded(entry["method"], entry["url"], entry["headers"], raw))

    @contextmanager
    def arrival_after_request(
        self, bucket: str, key: str, body: bytes, delay: float = 1.5, seen: str | None = None
    ) -> Iterator[None]:
        """Put ``key`` ``delay`` seconds after the recording shows a request naming ``seen``
        (default: the key itself; a listing's prefix for a pattern).

        For deferrable sensors and triggers: the first poke misses the object, so only a
        later one can find it. Use inside :meth:`recording`.
        """
        stop = threading.Event()
        marker = quote(seen or key, safe="")

        def arrive() -> None:
            recording = self.workdir / "recording.jsonl"
            while not stop.wait(0.2):
                if recording.exists() and marker in recording.read_text():
                    time.sleep(delay)
                    self.admin_client("s3").put_object(Bucket=bucket, Key=key, Body=body)
                    return

        arrival = threading.Thread(target=arrive)
        arrival.start()
        try:
            yield
        finally:
            stop.set()
            arrival.join()

    def client(self, service: str, key: str, secret: str, token: str | None = None) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="eu-west-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )

    def admin_client(self, service: str) -> Any:
        """A client for setup and checks while enforcement is off."""
        return self.client(service, "setup", "setup")


@dataclass
class Identity:
    arn: str
    key: str
    secret: str


class IamFactory:
    """Creates users, roles and inline policies while enforcement is off."""

    def __init__(self, server: MotoServer, region: str) -> None:
        self.server = server
        self.region = region
        self._iam = server.admin_client("iam")
        self.admin = self.user("admin", ["*"], resources=["*"])

    def admin_client(self, service: str) -> Any:
        """A client allowed everything, usable once enforcement is on."""
        return self.server.client(service, self.admin.key, self.admin.secret)

    def bucket(self, name: str) -> None:
        self.server.admin_client("s3").create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region}
        )

    @staticmethod
    def policy(actions: list[str], resources: list[str]) -> str:
        return json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}
        )

    def user(self, name: str, actions: list[str], resources: list[str] | None = None) -> Identity:
        user = self._iam.create_user(UserName=name)["User"]
        if actions:
            self._iam.put_user_policy(
                UserName=name,
                PolicyName=f"{name}-policy",
                PolicyDocument=self.policy(actions, resources or ["*"]),
            )
        key = self._iam.create_access_key(UserName=name)["AccessKey"]
        return Identity(user["Arn"], key["AccessKeyId"], key["SecretAccessKey"])

    def role(
        self,
        name: str,
        actions: list[str],
        resources: list[str] | None = None,
        trusted: str = f"arn:aws:iam::{ACCOUNT}:root",
        external_id: str | None = None,
    ) -> str:
        """A role trusting ``trusted`` (moto matches the principal exactly), with the
        ``sts:ExternalId`` condition when ``external_id`` is given, allowed ``actions``."""
        statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"AWS": trusted}, "Action": "sts:AssumeRole"}
        if external_id:
            statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
        trust = {"Version": "2012-10-17", "Statement": [statement]}
        arn = str(self._iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])
        if actions:
            self._iam.put_role_policy(
                RoleName=name, PolicyName=f"{name}-policy", PolicyDocument=self.policy(actions, resources or ["*"])
            )
        return arn

    def enforce(self) -> None:
        self.server.set_auth(enforced=True)
