"""Operator results: one shape per ``results``, and manifests written and read back.

An operator's result goes to XCom, which is a database row: a listing of 100,000 keys does
not belong there, and Airflow maps at most ``max_map_length`` tasks over a list. So the DAG
author chooses the shape, and it never changes with how many results there were:

* ``"list"``: the results themselves; more than ``max_xcom_objects`` fail the task
  (before anything is written, where the operator can know the count first);
* ``"manifest"``: every result as one JSON line of a file (in S3 by default), and XCom holds
  ``{"manifest", "count", "bytes"}``;
* ``"batches"``: the same file, and XCom holds one ``{"manifest", "start", "count",
  "bytes"}`` per ``batch_size`` lines, for ``.expand(manifest=...)``.

Get, Copy and Delete take any of these manifest references (or the manifest's location)
as input. No Airflow and no S3 here: the operator opens the files.
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, Literal

from airflow_s3connect.errors import ArgumentError, TooManyResultsError

Results = Literal["list", "manifest", "batches"]
RESULTS: tuple[Results, ...] = ("list", "manifest", "batches")
#: XCom key of ``{"count", "bytes", "truncated", "requests"}``, pushed by every operator
#: whatever its results shape: the figures are found in one place.
SUMMARY_XCOM_KEY = "s3connect_summary"


def check_results(results: str, batch_size: int) -> Results:
    if results not in RESULTS:
        raise ArgumentError(f"results={results!r}: use 'list', 'manifest' or 'batches'.")
    if batch_size < 1:
        raise ArgumentError(f"batch_size={batch_size}: give at least 1.")
    return results  # type: ignore[return-value]


class ResultSink:
    """Collects an operator's per-object results in the shape of its ``results``.

    ``open_manifest`` is called once, at the first result (or at the end when there was
    none: a manifest asked for always exists), and returns the writable text file plus
    where readers will find it. Memory holds the results only for ``results="list"``.
    """

    def __init__(
        self, results: Results, cap: int, batch_size: int, open_manifest: Callable[[], tuple[IO[str], str]]
    ) -> None:
        self.results = results
        self.cap = cap
        self.batch_size = batch_size
        self._open_manifest = open_manifest
        self.items: list[Any] = []
        self.count = 0
        self.bytes = 0
        self._batch_bytes: list[int] = []
        self._file: IO[str] | None = None
        self.location: str | None = None

    def check_count(self, count: int, what: str = "results", exact: bool = True) -> None:
        """Refuse, before anything is written, what ``results="list"`` cannot return
        (``exact=False``: ``count`` is as far as the plan was read, there may be more)."""
        if self.results == "list" and count > self.cap:
            amount = count if exact else f"More than {self.cap}"
            raise TooManyResultsError(
                f"{amount} {what}, and results='list' returns at most max_xcom_objects={self.cap} through XCom; "
                "nothing was done. Set results='manifest' (one task reads them all) or results='batches' "
                "(mapped tasks), or narrow the selection."
            )

    def bounded(self, planned: Iterable[Any], what: str) -> Iterable[Any]:
        """For ``results="list"``, ``planned`` read in full if it can be returned, else the
        refusal; other shapes stream it as it comes."""
        if self.results != "list":
            return planned
        taken = list(itertools.islice(planned, self.cap + 1))
        self.check_count(len(taken), what, exact=False)
        return taken

    def add(self, item: Any, size: int = 0) -> None:
        self.check_count(self.count + 1)
        if self.results == "list":
            self.items.append(item)
        else:
            self._file_handle().write(json.dumps(item) + "\n")
            if self.count % self.batch_size == 0:
                self._batch_bytes.append(0)
            self._batch_bytes[-1] += size
        self.count += 1
        self.bytes += size

    def _file_handle(self) -> IO[str]:
        if self._file is None:
            self._file, self.location = self._open_manifest()
        return self._file

    def close(self) -> None:
        """Finish the manifest (created empty if nothing was added)."""
        if self.results != "list":
            self._file_handle().close()

    def result(self) -> Any:
        """What goes to XCom: one shape per ``results``."""
        if self.results == "list":
            return self.items
        if self.results == "manifest":
            return {"manifest": self.location, "count": self.count, "bytes": self.bytes}
        return [
            {"manifest": self.location, "start": index * self.batch_size,
             "count": min(self.batch_size, self.count - index * self.batch_size), "bytes": size}
            for index, size in enumerate(self._batch_bytes)
        ]  # fmt: skip


def manifest_slice(reference: str | Mapping[str, Any]) -> tuple[str, int, int | None]:
    """Where a manifest is and which lines to read: ``(location, start, count or None for all)``.

    Takes a ``"manifest"`` or ``"batches"`` result (one batch) or the location itself.
    """
    if isinstance(reference, str):
        return reference, 0, None
    if isinstance(reference, Mapping) and isinstance(reference.get("manifest"), str):
        start = int(reference.get("start", 0))
        return reference["manifest"], start, int(reference["count"]) if "start" in reference else None
    raise ArgumentError(
        f"manifest={reference!r}: give an operator's results='manifest' / 'batches' result or the manifest's location."
    )


def read_entries(lines: Iterable[str], start: int, count: int | None) -> Iterator[Any]:
    """The JSON entries of a manifest's lines ``[start, start + count)``."""
    stop = None if count is None else start + count
    for number, line in enumerate(itertools.islice(lines, start, stop), start + 1):
        try:
            yield json.loads(line)
        except ValueError:
            raise ArgumentError(f"Line {number} of the manifest is not JSON: {line[:80]!r}.") from None


def entry_location(entry: Any) -> str | None:
    """The object a manifest entry names: its ``uri`` (results of every operator), or the
    key itself (a List of keys). None for a directory of a delimited listing."""
    if isinstance(entry, str):
        return None if entry.endswith("/") else entry
    if isinstance(entry, Mapping):
        if "prefix" in entry:
            return None
        if isinstance(entry.get("uri"), str):
            return str(entry["uri"])
    raise ArgumentError(f"Manifest entry {entry!r} names no object: expected a key or a result with 'uri'.")


def entry_listing(entry: Any) -> tuple[int, str, datetime.datetime] | None:
    """``(size, etag, last_modified)`` when the entry carries all three (a listing's or a
    download's result): the reader then needs no request to learn them, and pins the ETag."""
    if not isinstance(entry, Mapping):
        return None
    size, etag, modified = entry.get("size"), entry.get("etag"), entry.get("last_modified")
    if not (isinstance(size, int) and isinstance(etag, str) and etag and isinstance(modified, str)):
        return None
    try:
        return size, etag, datetime.datetime.fromisoformat(modified)
    except ValueError:
        return None
