"""Prometheus metrics for the fallback (GET /metrics): traffic, tokens, load and latency.

Each app gets its own registry, so several apps in one process (tests) do not collide. Metrics carry
counts and timings only; no label holds request content.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RATE_BUCKETS = (1, 5, 10, 20, 50, 100, 150, 200, 300, 500)


class Metrics:
    def __init__(self, admission, engine):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "lantern_fallback_requests",
            "Fallback API requests by endpoint and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "lantern_fallback_request_duration_seconds",
            "Whole request time, including streaming",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "lantern_fallback_rejected",
            "Requests that never got a slot (queue_full, client_limit, queue_timeout, client_gone)",
            ["reason"],
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            "lantern_fallback_tokenize_seconds",
            "Prompt tokenization time (runs only with a slot held)",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.cached_tokens = Counter(
            "lantern_fallback_prompt_cached_tokens",
            "Prompt tokens taken from a slot's KV cache (only ever the same client's earlier prompt)",
            registry=r,
        )
        self.generations = Counter(
            "lantern_fallback_generations",
            "Finished generations by outcome (stop, length, timeout, disconnected, error)",
            ["outcome"],
            registry=r,
        )
        self.prompt_tokens = Counter("lantern_fallback_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("lantern_fallback_completion_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram(
            "lantern_fallback_time_to_first_token_seconds",
            "Request start to first generated token",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "lantern_fallback_queue_wait_seconds", "Time spent waiting for a slot", buckets=FAST_BUCKETS, registry=r
        )
        self.decode_rate = Histogram(
            "lantern_fallback_decode_tokens_per_second",
            "Per-request generation speed after the first token",
            buckets=RATE_BUCKETS,
            registry=r,
        )
        self.engine_restarts = Counter(
            "lantern_fallback_engine_restarts", "Times the engine process died and was restarted", registry=r
        )
        Gauge("lantern_fallback_queue_depth", "Requests waiting for a slot", registry=r).set_function(
            lambda: admission.queued
        )
        Gauge("lantern_fallback_active_generations", "Slots in use", registry=r).set_function(lambda: admission.active)
        Gauge("lantern_fallback_slots", "Concurrent generation slots", registry=r).set(admission.slots)
        Gauge("lantern_fallback_queue_capacity", "Maximum queued requests", registry=r).set(admission.max_queue)
        Gauge("lantern_fallback_engine_ready", "1 when the engine can generate now", registry=r).set_function(
            lambda: 1.0 if engine.state == "ready" else 0.0
        )

    def finished(self, job, outcome: str, started: float) -> None:
        """Record one generation that held a slot."""
        self.generations.labels(outcome).inc()
        if job.prompt_tokens:
            self.prompt_tokens.inc(job.prompt_tokens)
        if job.completion_tokens:
            self.completion_tokens.inc(job.completion_tokens)
        if job.cached_tokens:
            self.cached_tokens.inc(job.cached_tokens)
        if job.first_token_at is not None:
            self.ttft.observe(max(0.0, job.first_token_at - started))
            decode = time.monotonic() - job.first_token_at
            if job.completion_tokens > 1 and decode > 0:
                self.decode_rate.observe((job.completion_tokens - 1) / decode)


bp = Blueprint("fallback_metrics", __name__)


@bp.get("/metrics")
def metrics_view():
    service = current_app.extensions["lantern_fallback"]
    service.keys.check(request.headers.get("Authorization"))
    return Response(generate_latest(service.metrics.registry), mimetype=CONTENT_TYPE_LATEST)
