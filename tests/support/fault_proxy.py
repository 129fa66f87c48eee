"""A fault-injecting reverse proxy on loopback, between boto3 and a moto server.

Clients use the proxy's URL as their ``endpoint_url``. Every request is classified as the
S3 operation it is (GetObject, UploadPart, ListObjectsV2, ...) and, when a scheduled fault
matches, gets that fault instead of (or on top of) moto's answer:

- ``500``: InternalError, request not forwarded;
- ``503``: SlowDown, request not forwarded;
- ``501``: NotImplemented, as stores answer a header they do not support; not forwarded;
- ``412``: PreconditionFailed, not forwarded: with ``header="x-amz-copy-source-if-match"``, as
  OpenStack Swift's s3api answers a copy pinned to the multipart ETag of an unchanged object;
- ``reset``: the connection is reset (RST) before any response, request not forwarded;
- ``cut``: moto's answer is forwarded with its full Content-Length but only half its body,
  then the connection is closed;
- ``slow``: the request is forwarded, and its answer held back ``delay`` seconds;
- ``strip``: the request is forwarded without ``header``, as a store that ignores it;
- ``etag``: moto's answer is forwarded with another ETag, as a store that kept other bytes;
- ``short``: moto's answer without its last byte, Content-Length and Content-Range telling
  the truth about the short body, as a store that loses bytes without a network error;
- ``damage``: the request's body is forwarded with its last byte changed, as a faulty
  network or middlebox would deliver it (the store should refuse it by its Content-MD5);
- ``repeat``: a ListObjectsV2 continuation page that starts with the previous page's last
  object again, as a store whose key order is not S3's;
- ``noetag``: moto's answer with an empty ``<ETag>``, as RGW answers CompleteMultipartUpload;
- ``echo``: 400 InvalidArgument whose message quotes the request's session token and
  Authorization header, as a store that echoes what it could not parse; not forwarded;
- ``backdate``: a ListObjectsV2 answer whose objects with ``subject`` in their key carry a
  LastModified ``delay`` seconds earlier, as S3 lists a multipart upload that began before
  newer objects and completed after them (visible late, dated early);
- ``initiated``: a ListMultipartUploads answer whose uploads carry the time of the answer
  as ``Initiated``, as S3 reports it (moto answers a fixed date in 2010);
- ``restoring``: a HeadObject answer whose ``x-amz-restore`` says a restore is done is made
  to say it is still going on (``ongoing-request="true"``), as S3 answers for hours after a
  RestoreObject (moto restores at once); an answer without the header (no restore asked
  yet) is left alone and not counted;
- ``checksum``: moto's answer with ``x-amz-checksum-crc32`` set to ``subject``, or (no
  ``subject``) to the one the request sent, as a store that verifies the checksum header
  and answers it (moto answers none under SSE-KMS);
- ``empty206``: 206 with ``Content-Range: bytes 0-0/0``, ``Content-Length: 1`` and no body,
  as a store answers a ranged GET of an empty object.

``header`` also narrows any fault to requests that carry that header (``501`` for
conditional writes only: ``Fault("501", "PutObject", header="if-none-match")``).

Schedules are deterministic: a fault applies to the first ``times`` matching requests
(``None``: all of them), counted in arrival order. ``injected`` records what was done.
"""

from __future__ import annotations

import datetime
import http.client
import re
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

#: The ETag an ``etag`` fault answers: an MD5, of nothing that was sent.
WRONG_MD5 = "00000000000000000000000000000bad"
FAULT_BODIES = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "501": (501, "NotImplemented", "A header you provided implies functionality that is not implemented."),
    "412": (412, "PreconditionFailed", "At least one of the preconditions you specified did not hold."),
}


def operation_of(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """The S3 operation a path-style request is (enough of them for the tests' schedules)."""
    has_key = "/" in path.lstrip("/")
    if method == "GET" and "list-type" in query:
        return "ListObjectsV2"
    if method == "GET" and "uploads" in query:
        return "ListMultipartUploads"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "GET" and "uploads" in query:
        return "ListMultipartUploads"
    if method == "POST" and "restore" in query:
        return "RestoreObject"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    if method == "PUT" and "partNumber" in query:
        return "UploadPart"
    if method == "PUT" and has_key:
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    if method == "GET" and has_key:
        return "GetObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "DELETE" and has_key:
        return "DeleteObject"
    return f"{method} {path}"


@dataclass
class Fault:
    kind: str  # one of the kinds listed in the module docstring
    operation: str
    times: int | None = 1
    delay: float = 0.0
    ranged: bool | None = None  # GetObject only: True ranged GETs, False whole ones, None both
    key_contains: str = ""
    header: str = ""
    subject: str = ""
    seen: int = 0

    def matches(self, operation: str, path: str, headers: dict[str, str]) -> bool:
        if operation != self.operation or self.key_contains not in path:
            return False
        if self.header and self.header not in headers:
            return False
        if self.ranged is not None and ("range" in headers) != self.ranged:
            return False
        return self.times is None or self.seen < self.times


@dataclass
class Injected:
    kind: str
    operation: str
    path: str


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    injected: list[Injected] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    last_listed: bytes = b""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def schedule(self, *faults: Fault) -> None:
        """Replace the schedule; clears what was recorded."""
        with self._lock:
            self.faults = list(faults)
            self.injected.clear()
            self.operations.clear()

    def unpick(self, fault: Fault) -> None:
        """``fault`` did not apply after all (its condition is in the answer): not counted."""
        with self._lock:
            fault.seen -= 1
            self.injected.pop(max(i for i, done in enumerate(self.injected) if done.kind == fault.kind))

    def _pick(self, operation: str, path: str, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.operations.append(operation)
            for fault in self.faults:
                if fault.matches(operation, path, headers):
                    fault.seen += 1
                    self.injected.append(Injected(fault.kind, operation, path))
                    return fault
        return None


def _backdated(listing: bytes, subject: str, seconds: float) -> bytes:
    def move(block: re.Match[bytes]) -> bytes:
        text = block.group(0)
        key = re.search(rb"<Key>(.*?)</Key>", text)
        if key is None or subject.encode() not in key.group(1):
            return text

        def earlier(stamp: re.Match[bytes]) -> bytes:
            moment = datetime.datetime.fromisoformat(stamp.group(1).decode().replace("Z", "+00:00"))
            moved = (moment - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            return b"<LastModified>" + moved.encode() + b"</LastModified>"

        return re.sub(rb"<LastModified>(.*?)</LastModified>", earlier, text)

    return re.sub(rb"<Contents>.*?</Contents>", move, listing, flags=re.S)


def _one_byte_less(content_range: str) -> str:
    """``bytes 0-99/500`` → ``bytes 0-98/500``: the range a short body really covers."""
    return re.sub(r"(\d+)-(\d+)/", lambda m: f"{m[1]}-{int(m[2]) - 1}/", content_range)


class _QuietServer(socketserver.ThreadingTCPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up (timed out, retried) closed its socket: expected here."""


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        operation = operation_of(self.command, split.path, parse_qs(split.query, keep_blank_values=True), headers)
        fault = self.owner._pick(operation, split.path, headers)
        self.close_connection = True
        if fault is not None and fault.kind in FAULT_BODIES:
            status, code, message = FAULT_BODIES[fault.kind]
            xml = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            )
            self._respond(status, [("Content-Type", "application/xml")], xml.encode())
            return
        if fault is not None and fault.kind == "echo":
            echoed = (
                f"Unsupported value {headers.get('x-amz-security-token', '')} from {headers.get('authorization', '')}"
            )
            xml = f"<?xml version='1.0'?><Error><Code>InvalidArgument</Code><Message>{echoed}</Message></Error>"
            self._respond(400, [("Content-Type", "application/xml")], xml.encode())
            return
        if fault is not None and fault.kind == "reset":
            # SO_LINGER 0: close() sends RST, as a crashed middlebox would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        dropped = fault.header if fault is not None and fault.kind == "strip" else ""
        if fault is not None and fault.kind == "damage" and body:
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        status, reason, upstream_headers, answer = self._forward(body, dropped)
        if fault is not None and fault.kind == "etag":
            upstream_headers = [(k, '"00000000000000000000000000000bad"' if k.lower() == "etag" else v)
                                for k, v in upstream_headers]  # fmt: skip
            answer = re.sub(
                rb"<ETag>[^<]*</ETag>", b"<ETag>&quot;00000000000000000000000000000bad&quot;</ETag>", answer
            )
        if fault is not None and fault.kind == "initiated":
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            answer = re.sub(rb"<Initiated>[^<]*</Initiated>", f"<Initiated>{now}</Initiated>".encode(), answer)
        if fault is not None and fault.kind == "backdate":
            answer = _backdated(answer, fault.subject, fault.delay)
        if fault is not None and fault.kind == "checksum":
            answered = fault.subject or headers.get("x-amz-checksum-crc32", "")
            upstream_headers = [(k, v) for k, v in upstream_headers if k.lower() != "x-amz-checksum-crc32"]
            upstream_headers.append(("x-amz-checksum-crc32", answered))
        if fault is not None and fault.kind == "noetag":
            answer = re.sub(rb"<ETag>[^<]*</ETag>", b"<ETag></ETag>", answer)
        if fault is not None and fault.kind == "restoring":
            if any(k.lower() == "x-amz-restore" for k, _ in upstream_headers):
                upstream_headers = [(k, v) for k, v in upstream_headers if k.lower() != "x-amz-restore"]
                upstream_headers.append(("x-amz-restore", 'ongoing-request="true"'))
            else:
                self.owner.unpick(fault)
        if operation == "ListObjectsV2":
            blocks = re.findall(rb"<Contents>.*?</Contents>", answer, re.S)
            if fault is not None and fault.kind == "repeat" and self.owner.last_listed:
                answer = answer.replace(b"<Contents>", self.owner.last_listed + b"<Contents>", 1)
            self.owner.last_listed = blocks[-1] if blocks else b""
        if fault is not None and fault.kind == "short" and answer:
            answer = answer[:-1]
            upstream_headers = [
                (
                    k,
                    re.sub(r"(\d+)-(\d+)/", lambda m: f"{m[1]}-{int(m[2]) - 1}/", v)
                    if k.lower() == "content-range"
                    else v,
                )
                for k, v in upstream_headers
            ]
        if fault is not None and fault.kind == "empty206":
            self.send_response(206)
            self.send_header("Content-Range", "bytes 0-0/0")
            self.send_header("Content-Length", "1")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            self.connection.close()
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        if fault is not None and fault.kind == "cut":
            self.send_response(status, reason)
            for name, value in upstream_headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        self._respond(status, upstream_headers, answer, reason)

    def _forward(self, body: bytes, dropped: str = "") -> tuple[int, str, list[tuple[str, str]], bytes]:
        upstream = urlsplit(self.owner.upstream)
        connection = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=120)
        try:
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() != dropped:
                    connection.putheader(name, value)
            connection.endheaders(body if body else None)
            response = connection.getresponse()
            answer = response.read()
            skip = {"transfer-encoding", "connection", "keep-alive"}
            if self.command != "HEAD":  # a HEAD's Content-Length is the object's: kept as is
                skip.add("content-length")
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in skip]
            return response.status, response.reason, kept, answer
        finally:
            connection.close()

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes, reason: str | None = None) -> None:
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
