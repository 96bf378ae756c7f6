"""Prometheus metrics, one registry per app so two apps in a process never mix counts."""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response

__all__ = ["Metrics", "init_app"]


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
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def init_app(app: Flask, *, path: str) -> Metrics:
    """Serve this app's metrics at *path* (only when the operator configured one)."""
    metrics = Metrics(app.extensions["srcore"].service_id)

    def view() -> Any:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    app.add_url_rule("/" + path.lstrip("/"), endpoint="srcore_metrics", view_func=view)
    return metrics
