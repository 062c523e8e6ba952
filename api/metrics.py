"""Prometheus metrics: requests by route and status, latency, inference time, queue depth and model info.

Each app owns its registry (no process-global collectors), so several apps in one process never collide.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
INFERENCE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class ServiceMetrics:
    """The collectors of one app, registered in their own `CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "unet3d_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "unet3d_http_request_duration_seconds",
            "HTTP request latency (until the response has been sent).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.inference = Histogram(
            "unet3d_inference_seconds",
            "Time a prediction held an inference slot (load, preprocess, infer, postprocess, encode).",
            buckets=INFERENCE_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "unet3d_queue_depth", "Admitted predictions waiting for an inference slot.", registry=self.registry
        )
        self.in_progress = Gauge(
            "unet3d_inference_in_progress", "Predictions running right now.", registry=self.registry
        )
        self.model = Info("unet3d_model", "The loaded model.", registry=self.registry)
        self.uploads_in_flight = Gauge(
            "unet3d_uploads_in_flight", "Uploads being received (bodies over 64 KiB).", registry=self.registry
        )
        self.temp_bytes = Gauge(
            "unet3d_temp_bytes",
            "Temp storage reserved by uploads plus kept by the UI, in bytes.",
            registry=self.registry,
        )
        self.ui_session_bytes = Gauge(
            "unet3d_ui_session_bytes", "Memory held for the review UI's tabs, in bytes.", registry=self.registry
        )

    def observe_inference(self, seconds: float) -> None:
        self.inference.observe(seconds)


class MetricsMiddleware:
    """Pure ASGI middleware counting every HTTP request under its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        top_app, top_root = scope.get("app"), scope.get("root_path", "")
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            method = scope.get("method", "GET")
            route = route_label(scope, top_app, top_root)
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


def route_label(scope: Scope, top_app: Any, top_root: str) -> str:
    """The matched route template, the mount path ("/ui", "/docs-assets") of a mount, or "unmatched".

    Read after routing: FastAPI records the matched route in the scope; a plain Starlette route (FastAPI's own
    /openapi.json) records only its endpoint; a mount extends `root_path` (and a mounted app replaces
    `scope["app"]`). Raw paths are never labels (unbounded cardinality).
    """
    mount = scope.get("root_path", "")[len(top_root) :]
    if scope.get("app") is not top_app or mount:
        return mount or "/"
    route = scope.get("route")
    if route is None and "endpoint" in scope:
        routes = getattr(top_app, "routes", [])
        route = next((r for r in routes if getattr(r, "endpoint", None) is scope["endpoint"]), None)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
