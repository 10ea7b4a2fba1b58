"""GET /metrics in Prometheus' text format (prometheus_client): requests by endpoint and status,
tokens in and out, the queue, the rows decoded together at each step, batch sizes of the other
endpoints and latency histograms. One registry per app, so that several apps live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "triform_requests", "HTTP requests answered", ["model", "endpoint", "status"], registry=registry
        )
        self.latency = Histogram(
            "triform_request_seconds",
            "time from arrival to the answer's end",
            ["model", "endpoint"],
            buckets=LATENCY,
            registry=registry,
        )
        self.first_token = Histogram(
            "triform_time_to_first_token_seconds",
            "time from arrival to the first generated text",
            ["model"],
            buckets=LATENCY,
            registry=registry,
        )
        self.prompt_tokens = Counter("triform_prompt_tokens", "tokens read", ["model"], registry=registry)
        self.generated_tokens = Counter("triform_generated_tokens", "tokens generated", ["model"], registry=registry)
        self.queue = Gauge("triform_queue_depth", "requests waiting for their model", ["model"], registry=registry)
        self.running = Gauge("triform_running_rows", "rows in the running batch", ["model"], registry=registry)
        self.step_rows = Histogram(
            "triform_decoding_batch_size",
            "rows decoded together in one step",
            ["model"],
            buckets=SIZES,
            registry=registry,
        )
        self.step_seconds = Histogram(
            "triform_decoding_step_seconds", "time of one decoding step", ["model"], buckets=LATENCY, registry=registry
        )
        self.batch_size = Histogram(
            "triform_batch_size",
            "inputs computed together (embeddings, fill-mask, predict)",
            ["model", "kind"],
            buckets=SIZES,
            registry=registry,
        )

    def step(self, model: str, rows: int, seconds: float, queued: int) -> None:
        self.step_rows.labels(model).observe(rows)
        self.step_seconds.labels(model).observe(seconds)
        self.running.labels(model).set(rows)
        self.queue.labels(model).set(queued)

    def batch(self, model: str, kind: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model, kind).observe(size)

    def answered(self, model: str, endpoint: str, status: int, seconds: float | None = None) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()
        if seconds is not None:
            self.latency.labels(model, endpoint).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
