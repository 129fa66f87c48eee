"""Run moto's server (as ``python -m moto.server`` does) with two races closed.

* moto checks ``If-None-Match: *`` and then stores the object without a lock, so two
  concurrent writers can both pass the check; S3 guarantees that exactly one does. The
  wrapper below serialises conditional requests only.
* moto's request recorder appends each entry with two writes and no lock: concurrent
  requests with large bodies (multipart parts) interleave and corrupt the JSONL file
  tests read. Recording is serialised.

Usage: ``python -m tests.support.moto_launcher HOST PORT``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_api._internal.recorder.models import Recorder
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_CONDITIONAL = threading.Lock()
_RECORDING = threading.Lock()
_record_request = Recorder._record_request


def _record_serially(self: Recorder, request: Any, body: bytes | None = None) -> None:
    with _RECORDING:
        _record_request(self, request, body)


Recorder._record_request = _record_serially  # type: ignore[method-assign]


def atomic_conditional_writes(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_IF_NONE_MATCH") or environ.get("HTTP_IF_MATCH"):
            with _CONDITIONAL:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return serve


def main(host: str, port: int) -> None:
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]
    run_simple(host, port, atomic_conditional_writes(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
