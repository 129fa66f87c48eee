"""moto's server for the benchmark, with two additions that make it behave more like S3
where stock moto would dominate every figure:

- a route that fills a bucket from inside the server process (100,000 PUTs over HTTP would
  take longer than the benchmark itself): ``GET /_bench/populate?bucket=B&prefix=P&count=N&size=S``;
- ListObjectsV2 pages found by bisection in a sorted list of the prefix's names, kept while
  the bucket's key count is unchanged. Stock moto filters and sorts the whole bucket for
  every page, about 0.5 s per page at 150,000 keys, which made list_100k a measure of moto;
- ranged GETs served from the stored object at a cost proportional to the range. Stock moto
  copies the whole object for every range (``FakeKey.value`` then a slice), so 128 ranged GETs
  of a 1 GiB object copy 128 GiB and run at about 12 MB/s whoever the client is. Anything this
  path does not handle exactly (conditions other than a matching If-Match, versions, multiple
  ranges, unsatisfiable ranges) falls through to moto unchanged.

The benchmark never deletes under a listed prefix, so a count-keyed cache of names is exact
for it; each page still reads the current FakeKey of every name.

Both sides of every scenario, and the raw-HTTP ceiling, talk to the same server.

Usage: ``python -m bench.server PORT``.
"""

from __future__ import annotations

import bisect
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote

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


def ranged_get(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes] | None:
    """Serve ``GET /bucket/key`` with ``Range: bytes=a-b`` by seeking in the stored object,
    or return None to let moto answer."""
    from moto.s3.models import s3_backends

    conditional = {"HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE"}
    spec = environ.get("HTTP_RANGE", "")
    if environ["REQUEST_METHOD"] != "GET" or not spec.startswith("bytes=") or environ.get("QUERY_STRING"):
        return None
    if "," in spec or conditional & environ.keys():
        return None
    bucket, _, key_name = unquote(environ.get("PATH_INFO", "")).lstrip("/").partition("/")
    first, _, last = spec[len("bytes=") :].partition("-")
    if not key_name or not first.isdigit() or not last.isdigit():
        return None
    key = s3_backends[ACCOUNT]["aws"].get_object(bucket, key_name)
    if key is None or int(first) > int(last) or int(first) >= key.size:
        return None
    if environ.get("HTTP_IF_MATCH", key.etag) != key.etag:
        return None
    begin, end = int(first), min(int(last), key.size - 1)
    with key.lock:
        key._value_buffer.seek(begin)
        body = key._value_buffer.read(end - begin + 1)
    headers = {k: v for k, v in key.response_dict.items() if not k.startswith("x-amz-checksum-")}
    headers.update(key.metadata)
    headers.update(
        {
            "content-length": str(len(body)),
            "content-range": f"bytes {begin}-{end}/{key.size}",
            "accept-ranges": "bytes",
        }
    )
    start_response("206 Partial Content", list(headers.items()))
    return [body]


def bisecting_list_objects_v2() -> None:
    """Replace S3Backend.list_objects_v2 for listings without a delimiter (see the module doc)."""
    from moto.s3.models import FakeDeleteMarker, S3Backend

    original = S3Backend.list_objects_v2
    names: dict[tuple[int, str], tuple[int, list[str]]] = {}
    lock = threading.Lock()

    def list_objects_v2(
        self: S3Backend,
        bucket: Any,
        prefix: str | None,
        delimiter: str | None,
        continuation_token: str | None,
        start_after: str | None,
        max_keys: int,
    ) -> Any:
        if delimiter:
            return original(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
        prefix = prefix or ""
        with lock:
            count, sorted_names = names.get((id(bucket), prefix), (-1, []))
            if count != len(bucket.keys):
                sorted_names = sorted(n for n in list(bucket.keys) if n.startswith(prefix))
                names[(id(bucket), prefix)] = (len(bucket.keys), sorted_names)
        after = self._pagination_tokens.get(continuation_token) if continuation_token else start_after
        start = bisect.bisect_right(sorted_names, after) if after else 0
        page = []
        for name in sorted_names[start:]:
            key = bucket.keys.get(name)
            if key is not None and not isinstance(key, FakeDeleteMarker):
                page.append(key)
            if len(page) > max_keys:
                break
        return self._truncate_result(page, max_keys)

    S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]


def main(port: int) -> None:
    bisecting_list_objects_v2()
    # One log line per request is server CPU that S3 does not spend on the client's behalf.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/_bench/populate":
            return populate(environ, start_response)
        return ranged_get(environ, start_response) or app(environ, start_response)

    run_simple("127.0.0.1", port, serve, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]))
