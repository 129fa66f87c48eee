"""Run moto's server (as ``python -m moto.server`` does) with S3's conditional writes made atomic.

moto checks ``If-None-Match: *`` and then stores the object without a lock, so two
concurrent writers can both pass the check; S3 guarantees that exactly one does. The
wrapper below serialises conditional requests only, which gives the server S3's
guarantee without slowing anything else.

Usage: ``python -m tests.moto_launcher HOST PORT``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_CONDITIONAL = threading.Lock()


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
