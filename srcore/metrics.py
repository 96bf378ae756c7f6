"""Prometheus metrics, one registry per app so two apps in a process never mix counts.

Under gunicorn each worker is a process of its own, and a scrape reaches one of them. So
that every scrape reports the whole service, gunicorn's master
(:func:`srcore.gunicorn_worker.on_starting`) gives the workers a private directory in
``PROMETHEUS_MULTIPROC_DIR``: prometheus-client then keeps each process's values in files
there, and :meth:`Metrics.render` adds them up with its ``MultiProcessCollector``. Without
the variable (tests, the Flask debug server) the app's own registry is rendered. A gauge
added here needs a ``multiprocess_mode`` saying how the processes' values combine.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Request, Response

from srcore.service import state

__all__ = ["EXTENSION_KEY", "MULTIPROC_DIR", "Metrics", "MetricsExtension", "init_app"]

#: The variable naming the directory where the processes of one server keep their values.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

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

    def observe(self, request: Request, response: Response, elapsed: float) -> None:
        """Count one request; the route is the URL rule, never the raw path (bounded labels)."""
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        self.requests.labels(
            self.service_id, request.method, route, str(response.status_code)
        ).inc()
        self.latency.labels(self.service_id, route).observe(elapsed)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self.registry
        if os.environ.get(MULTIPROC_DIR):
            from prometheus_client.multiprocess import MultiProcessCollector

            # A fresh registry each time: the collector reads every process's files.
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsExtension:
    """The metrics feature: counts and latencies of an app's requests, served at a path.

    The path is the service's ``metrics-path`` setting unless given; with none, the app
    serves and counts nothing (prometheus-client is not even imported).
    """

    def __init__(self, *, path: str | None = None) -> None:
        self.path = path

    def init_app(self, app: Flask) -> Metrics | None:
        """Serve the metrics and keep them in ``app.extensions["srcore.metrics"]``."""
        path = self.path
        if path is None:
            path = str(state(app).section.get("metrics-path") or "")
        if not path:
            return None
        return init_app(app, path=path)


def init_app(app: Flask, *, path: str) -> Metrics:
    """Serve this app's metrics at *path* (only when the operator configured one)."""
    metrics = Metrics(state(app).service_id)
    app.extensions[EXTENSION_KEY] = metrics

    def view() -> Any:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    app.add_url_rule("/" + path.lstrip("/"), endpoint="srcore_metrics", view_func=view)
    return metrics
