"""What a transfer has done so far, told while it runs: one meter per transfer.

A Get of 200,000 objects or a 40 GiB Put would otherwise be silent until it ends, and a
silent task log cannot tell a slow store from a hung task. A :class:`Meter` is attached to
the clients a transfer uses; the engines (downloads, uploads, copies, deletes) tell the
meter of their client what they queued, moved and finished (:func:`of`), and the meter
counts the requests and retries those clients send through their own events, so every
door (operators, the hook's calls, ``s3connect://``) reports the same figures without
repeating the counting. Every ``interval`` seconds a line is logged and the figures are
handed to ``metrics`` (Airflow's Stats, wired by the Airflow layer); a transfer that ends
sooner logs nothing here.

No Airflow here, and no I/O but the log: the clock is injected so that lines and rates
are tested without sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from airflow_s3connect import native

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds between two progress lines when nothing else is configured
DEFAULT_INTERVAL = 30.0
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


class Metrics(Protocol):
    """Where the figures go besides the log (Airflow's Stats in a task): counters of what
    was done since the last call, and the duration once the transfer ended."""

    def incr(self, name: str, count: int) -> None: ...

    def timing(self, name: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Figures:
    """A transfer's figures at one moment; totals are None while not known (a listing still
    running, a stream of unknown length)."""

    objects: int = 0
    objects_total: int | None = None
    bytes: int = 0
    bytes_total: int | None = None
    requests: int = 0
    retries: int = 0
    elapsed: float = 0.0


def size_text(amount: float) -> str:
    """``3.1 GiB``: binary units, one decimal above bytes."""
    unit = 0
    while abs(amount) >= 1024 and unit < len(UNITS) - 1:
        amount /= 1024
        unit += 1
    return f"{int(amount)} B" if unit == 0 else f"{amount:.1f} {UNITS[unit]}"


def duration_text(seconds: float) -> str:
    """``3m38s``, ``1h02m``, ``12s``."""
    seconds = max(0, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def line(operation: str, now: Figures, rate: float, *, final: bool = False) -> str:
    """``Get: 12,400 / 200,000 objects, 3.1 / 48.2 GiB, 212.0 MiB/s, ETA 3m38s, 2 retries``.

    ``rate`` is bytes per second over the last interval (the whole run for the final line).
    A total not known yet (a listing not read to its end) is left out, and so is the ETA,
    given only when the remaining bytes (or, for deletes, objects) are known.
    """
    parts = [f"{now.objects:,} / {now.objects_total:,} objects" if now.objects_total is not None
             else f"{now.objects:,} objects"]  # fmt: skip
    if now.bytes or now.bytes_total:
        done = size_text(now.bytes)
        if now.bytes_total is not None:
            total = size_text(now.bytes_total)
            unit = total.rpartition(" ")[2]
            done = f"{done.removesuffix(' ' + unit)} / {total}"  # "3.1 / 48.2 GiB"
        parts.append(done)
        parts.append(f"{size_text(rate)}/s")
    if final:
        parts.append(f"in {duration_text(now.elapsed)}")
    elif (eta := _eta(now, rate)) is not None:
        parts.append(f"ETA {duration_text(eta)}")
    parts.append(f"{now.requests:,} requests")
    parts.append(f"{now.retries:,} {'retry' if now.retries == 1 else 'retries'}")
    return f"{operation}{' done' if final else ''}: {', '.join(parts)}"


def _eta(now: Figures, rate: float) -> float | None:
    if now.bytes_total is not None and now.bytes_total > 0:
        return (now.bytes_total - now.bytes) / rate if rate > 0 else None
    if now.objects_total is not None and now.objects and now.elapsed > 0:
        return (now.objects_total - now.objects) * now.elapsed / now.objects
    return None


class Meter:
    """The figures of one transfer, reported every ``interval`` seconds while it runs.

    Attach it to the transfer's clients (``with Meter("Get").attached(client):``); the engines
    find it with :func:`of`. A meter entered on clients that already carry one (a hook call
    inside an operator's transfer, a streamed copy's uploads, two calls of one hook from two
    threads) adds its work to that one and logs nothing of its own; the outer one ends only
    once the last inner one has ended, so nothing done meanwhile is lost.

    :param interval: seconds between lines; 0 or less: no lines.
    :param metrics: also given each interval's counts (and the duration at the end).
    :param open_ended: the transfer is a loop of calls that each plan their own objects (a
        filesystem's bulk copy, a user's loop of hook calls): their "nothing more" does not
        make the totals final, which stay unknown.
    :param clock: seconds, monotonic; tests pass their own.
    """

    def __init__(
        self,
        operation: str,
        *,
        interval: float = DEFAULT_INTERVAL,
        metrics: Metrics | None = None,
        open_ended: bool = False,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.operation = operation
        self.interval = interval
        self.metrics = metrics
        self.open_ended = open_ended
        self.clock = clock
        self.logger = logger
        self._lock = threading.Lock()
        self._figures = Figures()
        self._known_total = True  # every queued object's size known so far
        self._planned = False
        self._counting = True
        self._started = clock()
        self._last: tuple[float, Figures] = (self._started, self._figures)
        self._sent: dict[str, int] = {}  # what metrics were given so far
        self._clients: list[Any] = []
        self._id = f"s3connect-meter-{id(self)}"
        self.lines = 0
        self.nested: Meter | None = None  # the meter this one adds to
        self._inner = 0  # meters adding to this one, still open
        self._ending: bool | None = None  # close() was called (with failed=...) while inner ones ran
        self._closed = False
        self._reporting = threading.Lock()

    # -- what the engines tell ------------------------------------------------------------
    def queued(self, size: int | None) -> None:
        """One more object is part of the transfer (``size``: its bytes, if known)."""
        with self._lock:
            if not self._counting:
                return
            f = self._figures
            self._known_total = self._known_total and size is not None
            self._figures = replace(f, objects_total=(f.objects_total or 0) + 1,
                                    bytes_total=(f.bytes_total or 0) + (size or 0))  # fmt: skip
            self._planned = False

    def planned(self) -> None:
        """Nothing more will be queued: the totals are final (not for an open-ended meter)."""
        with self._lock:
            self._planned = not self.open_ended

    def planning(
        self, items: Iterable[T], size: Callable[[T], int | None], counted: Callable[[T], bool] = lambda _: True
    ) -> Iterator[T]:
        """``items``, each queued with ``size(item)`` (unless not ``counted``): a list at once
        (its totals are known before the first byte), a lazy plan (a listing) as it is read;
        planned at its end."""
        if isinstance(items, Sized):
            for item in items:
                if counted(item):
                    self.queued(size(item))
            self.planned()
            yield from items
            return
        for item in items:
            if counted(item):
                self.queued(size(item))
            yield item
        self.planned()

    def moved(self, amount: int) -> None:
        """Bytes sent or received (negative: s3transfer rewinding a retried part)."""
        with self._lock:
            if self._counting:
                self._figures = replace(self._figures, bytes=max(0, self._figures.bytes + amount))

    def finished(self, count: int = 1) -> None:
        with self._lock:
            if self._counting:
                self._figures = replace(self._figures, objects=self._figures.objects + count)

    def skipped(self, size: int | None) -> None:
        """A queued object done without moving its bytes (unchanged): they leave the total."""
        with self._lock:
            if not self._counting:
                return
            f = self._figures
            total = None if f.bytes_total is None else max(0, f.bytes_total - (size or 0))
            self._figures = replace(f, objects=f.objects + 1, bytes_total=total)

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """Requests made in the block count; the objects and bytes they move do not (the
        deletes of a move, an operator's own manifest)."""
        with self._lock:
            before, self._counting = self._counting, False
        try:
            yield
        finally:
            with self._lock:
                self._counting = before

    # -- requests, from the clients' events ------------------------------------------------
    def _request(self, attempt: int | None = None, **_: Any) -> None:
        with self._lock:
            f, retried = self._figures, attempt is not None and attempt > 1
            self._figures = replace(f, requests=f.requests + 1, retries=f.retries + retried)

    def _created(self, request: Any = None, **_: Any) -> None:
        """botocore's retries: each attempt is a new request whose context counts it."""
        attempt = (getattr(request, "context", None) or {}).get("retries", {}).get("attempt")
        if attempt is not None and attempt > 1:
            with self._lock:
                self._figures = replace(self._figures, retries=self._figures.retries + 1)

    @property
    def requests(self) -> int:
        return self._figures.requests

    # -- reading ------------------------------------------------------------------------------
    def figures(self) -> Figures:
        """Now's figures; totals only once final."""
        with self._lock:
            f = replace(self._figures, elapsed=self.clock() - self._started)
            if not self._planned:
                return replace(f, objects_total=None, bytes_total=None)
            return f if self._known_total else replace(f, bytes_total=None)

    def due(self, now: float) -> bool:
        return self.interval > 0 and not self._closed and now - self._last[0] >= self.interval

    def report(self) -> str:
        """Log one progress line (rate over the time since the previous one); hand the counts
        since then to ``metrics``."""
        with self._reporting:  # never after (nor during) the final line
            if self._closed:
                return ""
            now = self.figures()
            at = self.clock()
            then, before = self._last
            rate = max(0.0, (now.bytes - before.bytes) / (at - then)) if at > then else 0.0
            self._last = (at, now)
            text = line(self.operation, now, rate)
            self.logger.info("%s", text)
            self.lines += 1
            self._send(now)
            return text

    def _send(self, now: Figures) -> None:
        """Counts since the last send; a count that went down (a rewound part) waits."""
        if self.metrics is None:
            return
        for name in ("objects", "bytes", "requests", "retries"):
            if (delta := getattr(now, name) - self._sent.get(name, 0)) > 0:
                self.metrics.incr(name, delta)
                self._sent[name] = getattr(now, name)

    # -- lifetime -----------------------------------------------------------------------------
    def attached(self, *clients: Any) -> Meter:
        """Attach to ``clients`` and start reporting (or add to the meter they carry); ``with``
        detaches."""
        with _ATTACHING:
            outer = next((m for c in clients if (m := of(c)) is not NULL and m is not self), None)
            if outer is not None:
                self.nested = outer
                outer._inner += 1
                return self
            for client in {id(c): c for c in clients}.values():
                client.s3connect_meter = self
                client.meta.events.register("before-send.s3", self._request, unique_id=self._id)
                client.meta.events.register("request-created.s3", self._created, unique_id=f"{self._id}-created")
                if (engine := native.engine_of(client)) is not None:
                    engine.events.register("before-send.s3", self._request, unique_id=self._id)
                self._clients.append(client)
        self._started = self.clock()
        self._last = (self._started, self._figures)
        if self.interval > 0:
            _REPORTER.add(self)
        return self

    def __enter__(self) -> Meter:
        return self if self._clients or self.nested else self.attached()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.close(failed=exc_type is not None)

    def close(self, *, failed: bool = False) -> Figures:
        """Detach, stop reporting and, if a line was logged, log the summary (and give the
        metrics what remains plus the duration). Safe to call twice. While meters inside
        this one are open, the end waits for the last of them."""
        with _ATTACHING:
            if (outer := self.nested) is not None:
                if not self._closed:
                    self._closed = True
                    outer._inner -= 1
                    if outer._inner == 0 and outer._ending is not None:
                        outer._end(outer._ending)
                return outer.figures()
            if self._inner:
                self._ending = self._ending or failed
                return self.figures()
            return self._end(failed)

    def _end(self, failed: bool) -> Figures:
        for client in self._clients:
            client.meta.events.unregister("before-send.s3", unique_id=self._id)
            client.meta.events.unregister("request-created.s3", unique_id=f"{self._id}-created")
            if (engine := native.engine_of(client)) is not None:
                engine.events.unregister("before-send.s3", unique_id=self._id)
            if getattr(client, "s3connect_meter", None) is self:
                del client.s3connect_meter
        self._clients = []
        _REPORTER.discard(self)
        with self._reporting:
            now = self.figures()
            if self._closed:
                return now
            self._closed = True
            if self.lines:
                rate = now.bytes / now.elapsed if now.elapsed > 0 else 0.0
                text = line(self.operation, now, rate, final=True)
                self.logger.info("%s%s", text, " (failed)" if failed else "")
            if self.metrics is not None:
                self._send(now)
                self.metrics.timing("duration", now.elapsed)
        return now


class _Reporter:
    """One daemon thread for every meter of the process: a hook call costs no thread of its
    own, and a meter nobody closed (a task that failed before its end) is held weakly."""

    def __init__(self) -> None:
        self._meters: weakref.WeakSet[Meter] = weakref.WeakSet()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, meter: Meter) -> None:
        with self._wake:
            self._meters.add(meter)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="s3connect-progress", daemon=True)
                self._thread.start()
            self._wake.notify()

    def discard(self, meter: Meter) -> None:
        with self._wake:
            self._meters.discard(meter)

    def _run(self) -> None:
        while True:
            with self._wake:
                meters = list(self._meters)
                if not meters:
                    self._wake.wait()
                    continue
                # a quarter of the shortest interval: lines come within 25 % of when they are due
                self._wake.wait(max(0.05, min(1.0, min(m.interval for m in meters) / 4)))
                meters = list(self._meters)
            for meter in meters:
                try:
                    if meter.due(meter.clock()):
                        meter.report()
                except Exception:  # a broken metrics backend must not end the reporting of the rest
                    log.debug("Progress report failed", exc_info=True)
            del meters


_REPORTER = _Reporter()
_ATTACHING = threading.Lock()


class _NullMeter(Meter):
    """What an engine's client without a meter reports to: nothing is kept."""

    def queued(self, size: int | None) -> None:
        pass

    def planned(self) -> None:
        pass

    def moved(self, amount: int) -> None:
        pass

    def finished(self, count: int = 1) -> None:
        pass

    def skipped(self, size: int | None) -> None:
        pass


NULL = _NullMeter("nothing", interval=0)


def of(client: Any) -> Meter:
    """The meter attached to ``client``, or one that keeps nothing.

    Read from the instance's own attributes: for an attribute it lacks, a botocore client's
    ``__getattr__`` emits an event and raises, which cost a tenth of the client CPU of an
    unmetered upload of many small files (asked several times per object)."""
    return getattr(client, "__dict__", {}).get("s3connect_meter") or NULL
