"""Prometheus metrics, one registry per app so two apps in a process never mix counts.

Under gunicorn each worker is a process of its own, and a scrape reaches one of them. So
that every scrape reports the whole service, gunicorn's master
(:func:`srcore.gunicorn_worker.on_starting`) gives the workers a private directory in
``PROMETHEUS_MULTIPROC_DIR``: prometheus-client then keeps each process's values in files
there, and :meth:`Metrics.render` adds them up with its ``MultiProcessCollector``. Without
the variable (tests, the Flask debug server) the app's own registry is rendered. A gauge
added here needs a ``multiprocess_mode`` saying how the processes' values combine.

Counting never fails a request, nor stops the service: when the directory cannot hold a
process's values (the variable names no directory, or a cleaner of the temporary
directory removed it, the disk under it is full), the process logs why once, stops
counting, and the metrics page answers 503 with the same reason, which the scraper
reports. Every :data:`RETRY_SECONDS` at most, a request then tries to count again, so the
process counts anew once the directory is usable (room was made), with no restart.

Every label value comes from a short list the service fixes (its routes, the methods of
HTTP, the status codes it answers), never from what a client sends: each new value is a
series kept for the life of the process (and a file's worth of entries under gunicorn),
so a client free to choose one could grow them without end.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Request, Response, abort, request

from srcore.metrics_files import metrics_lock, reserve_space_for_values
from srcore.routing import SrcoreMap
from srcore.service import state

__all__ = [
    "EXTENSION_KEY",
    "FORWARDED_HEADERS",
    "METHODS",
    "MULTIPROC_DIR",
    "RETRY_SECONDS",
    "Metrics",
    "MetricsExtension",
    "init_app",
]

log = logging.getLogger("srcore")

#: The variable naming the directory where the processes of one server keep their values.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: The methods counted by name; any other (``FOO``: a 405 whoever sends it) is ``other``.
#: A HEAD request counts as the GET it is answered as.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: Seconds a process that stopped counting waits before a request tries again. Until
#: then a request pays one look at the clock (no system call); the try costs a look at the
#: directory and at most one file made: never a storm of failing calls under load.
RETRY_SECONDS = 5.0

#: Where an app keeps its :class:`Metrics` (absent when it serves none). The per-request
#: glue (:mod:`srcore.lifecycle`) reads it there to count each request.
EXTENSION_KEY = "srcore.metrics"


class Metrics:
    """Request counters and latency histograms of one service."""

    def __init__(self, service_id: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "srcore_http_requests",
            "HTTP requests handled, by method, route and status.",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "srcore_http_request_seconds",
            "Time spent handling HTTP requests, by route.",
            ["service", "route"],
            registry=self.registry,
        )
        self.service_id = service_id

        #: Why this process does not count now (None while it does); said in the log
        #: once, when it stops.
        self.broken: str | None = None
        #: When (monotonic clock) a request may next try to count, while it does not.
        self._retry_at = 0.0

    def give_up(self, reason: str) -> None:
        """Stop counting in this process, and say why in the log; a request tries again
        after :data:`RETRY_SECONDS`."""
        self._retry_at = time.monotonic() + RETRY_SECONDS
        if self.broken is None:
            self.broken = reason
            log.error(
                "%s; requests are served and not counted until it is fixed (tried again "
                "every %g s, no restart needed)",
                reason,
                RETRY_SECONDS,
            )

    def _may_try_again(self) -> bool:
        """Whether this request, in a process that stopped counting, tries to count: once
        every :data:`RETRY_SECONDS`, and only when the directory is there to write in."""
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + RETRY_SECONDS
        return _multiproc_dir_problem() is None

    def observe(self, request: Request, response: Response, elapsed: float) -> None:
        """Count one request; the route is the URL rule, never the raw path (bounded labels)."""
        if self.broken is not None and not self._may_try_again():
            return
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        method = request.method if request.method in METHODS else "other"
        try:
            self.requests.labels(self.service_id, method, route, str(response.status_code)).inc()
            self.latency.labels(self.service_id, route).observe(elapsed)
        except OSError as exc:  # a process's first value makes its file in the directory
            self.give_up(
                _multiproc_dir_problem()
                or f"metrics: cannot keep the counts in {os.environ.get(MULTIPROC_DIR)}: {exc}"
            )
            return
        if self.broken is not None:
            log.warning(
                "metrics: counting again in this process; the requests it served since it "
                "stopped were not counted"
            )
            self.broken = None

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type.

        Raises :class:`OSError` or :class:`ValueError` when the directory of a server's
        processes cannot be read.
        """
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        directory = os.environ.get(MULTIPROC_DIR)
        if not directory:
            return generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        # A fresh registry each time: the collector reads every process's files, while
        # the master folds none of a dead worker's into the others' (srcore.metrics_files).
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        with metrics_lock(directory, exclusive=False):
            return generate_latest(registry), CONTENT_TYPE_LATEST


class _WithoutCreated:
    """A process's own registry as srcore serves it: the series of the operators' guide only.

    prometheus-client adds a ``<name>_created`` sample (a timestamp) to each series of a
    counter or histogram in a process's own registry, which the text format can only
    expose as a gauge family of its own: one more series for each, which a scrape of the
    server's processes (``MultiProcessCollector``) never has. So whichever way the app is
    served, a scrape holds the same series; these are left out.
    """

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        for metric in self.registry.collect():
            if metric.type in _WITH_CREATED:
                created = metric.name + "_created"
                metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


#: The metric types prometheus-client gives a ``_created`` sample in a process's registry.
_WITH_CREATED = frozenset({"counter", "histogram", "summary"})


class MetricsExtension:
    """The metrics feature: counts and latencies of an app's requests, served at a path.

    The path is the service's ``metrics-path`` setting unless given; with none, the app
    serves and counts nothing (prometheus-client is not even imported).
    """

    def __init__(self, *, path: str | None = None) -> None:
        self.path = path

    def init_app(self, app: Flask) -> Metrics | None:
        """Serve the metrics and keep them in ``app.extensions["srcore.metrics"]``.

        A route of the service matching the configured path, whenever it is added, is
        a :class:`~srcore.config.ConfigError` naming ``metrics-path`` and the route.
        """
        path = self.path
        if path is not None:
            return init_app(app, path=path) if path else None
        section = state(app).section
        path = str(section.get("metrics-path") or "")
        if not path:
            return None

        def refuse(route: str, endpoint: str) -> Exception:
            from srcore.config import ConfigError

            return ConfigError([section.problem("metrics-path", _collision(path, route, endpoint))])

        return init_app(app, path=path, refuse=refuse)


def _multiproc_dir_problem() -> str | None:
    """What is wrong with ``PROMETHEUS_MULTIPROC_DIR`` for this process, if anything.

    prometheus-client makes a process's files there at its first count, and reads every
    process's at a scrape: a directory that is missing, not a directory or not writable
    would fail the request being counted (a 500 from the after-request hook).
    """
    path = os.environ.get(MULTIPROC_DIR)
    if not path:
        return None
    if not os.path.isdir(path):
        what = "is not a directory" if os.path.exists(path) else "does not exist"
    elif not os.access(path, os.W_OK | os.X_OK):
        what = "is not writable by this process"
    else:
        return None
    return (
        f"metrics: the environment variable {MULTIPROC_DIR} names {path!r}, which {what}:"
        " each process keeps its counts in files there (srcore serve makes a fresh one"
        " itself; elsewhere create the directory or unset the variable, and restart)"
    )


#: Headers a reverse proxy adds to what it forwards; a scraper reaching the service
#: directly sends none of them.
FORWARDED_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-Ip")


def _collision(path: str, route: str, endpoint: str) -> str:
    return (
        f"{path!r} is also answered by the route {route} ({endpoint}), and one would hide "
        "the other: choose a path no route of the service matches"
    )


def init_app(
    app: Flask, *, path: str, refuse: Callable[[str, str], Exception] | None = None
) -> Metrics:
    """Serve this app's metrics at *path* (only when the operator configured one).

    They are for a scraper on the service's own network, which reaches the backend's
    address directly: a request a proxy forwarded (from anywhere) is answered 404, as if
    nothing were there, in case the proxy's rule blocking the path is missing.

    No other route may match *path*, now or when added later: the router would pick
    one of the two, and the metrics would take a page over (``/create``, a ticket whose
    placeholder takes the path) or the page hide them. ``refuse(route, endpoint)`` makes
    the exception raised then (a :class:`ValueError` by default).
    """
    metrics = Metrics(state(app).service_id)
    reserve_space_for_values()  # a full disk: no more counts, not a worker killed by SIGBUS
    problem = _multiproc_dir_problem()
    if problem is not None:
        metrics.give_up(problem)
    app.extensions[EXTENSION_KEY] = metrics

    def view() -> Any:
        # Each scrape is read afresh: no cache between the scraper and the service.
        fresh = {"Cache-Control": "no-store"}
        if any(name in request.headers for name in FORWARDED_HEADERS):
            abort(404)
        try:
            body, content_type = metrics.render()
        except (OSError, ValueError):
            reason = _multiproc_dir_problem() or metrics.broken or "metrics: cannot be read"
            metrics.give_up(reason)
            return Response(reason + "\n", 503, content_type="text/plain", headers=fresh)
        return Response(body, content_type=content_type, headers=fresh)

    rule = "/" + path.lstrip("/")
    if refuse is None:

        def refuse(route: str, endpoint: str) -> Exception:
            return ValueError(_collision(rule, route, endpoint))

    if isinstance(app.url_map, SrcoreMap):
        made = refuse
        app.url_map.claim(rule, "srcore_metrics", lambda taken: made(taken.rule, taken.endpoint))
    app.add_url_rule(rule, endpoint="srcore_metrics", view_func=view)
    return metrics
