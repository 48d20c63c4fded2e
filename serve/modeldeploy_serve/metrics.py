"""Prometheus metrics (``/metrics``), on a registry of the server's own."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "modeldeploy_serve"
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/health",
                       "/metrics"})
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Metrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram(f"{PREFIX}_request_duration_seconds",
                                 "Request latency until the last byte is sent", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds",
                              "Time from submission to the first generated token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens processed",
                                     registry=r)
        self.generated_tokens = Counter(f"{PREFIX}_generated_tokens", "Completion tokens generated",
                                        registry=r)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Sequences waiting for the model",
                                 registry=r)
        self.running = Gauge(f"{PREFIX}_running_sequences", "Sequences in the running batch",
                             registry=r)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Sequences per generate() batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.model_loaded = Gauge(f"{PREFIX}_model_loaded", "1 once the model is loaded",
                                  ["model"], registry=r)
        self.model_loaded.labels(model=model_name).set(0)
        self.load_seconds = Gauge(f"{PREFIX}_model_load_seconds", "Time the model took to load",
                                  registry=r)

    # the engine's hooks
    def set_queue_depth(self, n: int) -> None:
        self.queue_depth.set(n)

    def set_running(self, n: int) -> None:
        self.running.set(n)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware: counts requests by status, times them until the last body byte."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        endpoint = path if path in ENDPOINTS else "other"
        start = time.perf_counter()
        status = {"code": 500, "recorded": False}

        def record() -> None:
            if not status["recorded"]:
                status["recorded"] = True
                self.metrics.requests.labels(endpoint=endpoint, status=str(status["code"])).inc()
                self.metrics.latency.labels(endpoint=endpoint).observe(
                    time.perf_counter() - start)

        async def wrapped_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message.get("status", 500))
            await send(message)
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                record()

        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            record()
