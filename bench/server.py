"""moto's server for the benchmark, plus one route that fills a bucket from inside the server
process (100,000 PUTs over HTTP would take longer than the benchmark itself).

Usage: ``python -m bench.server PORT``; ``GET /_bench/populate?bucket=B&prefix=P&count=N&size=S``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

ACCOUNT = "123456789012"


def populate(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    from moto.s3.models import s3_backends

    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    backend = s3_backends[ACCOUNT]["aws"]
    body = b"x" * int(query.get("size", "0"))
    start, count = int(query.get("start", "0")), int(query["count"])
    for i in range(start, start + count):
        backend.put_object(query["bucket"], f"{query['prefix']}{i:06d}{query.get('suffix', '.dat')}", body)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(count).encode()]


def main(port: int) -> None:
    app = DomainDispatcherApplication(create_backend_app)

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/_bench/populate":
            return populate(environ, start_response)
        return app(environ, start_response)

    run_simple("127.0.0.1", port, serve, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]))
