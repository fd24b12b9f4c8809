"""Prometheus metrics of one app (its own CollectorRegistry, so several apps can coexist)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from loragraph.router.result import RunResult

__all__ = ["PROMETHEUS_CONTENT_TYPE", "ApiMetrics"]

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ApiMetrics:
    """Runs by status, run and per-stage latency, queue depth, guardrail verdicts by action."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            "loragraph_runs", "Finished runs by pipeline and stored status", ["pipeline", "status"], registry=self.registry
        )
        self.failures = Counter(
            "loragraph_run_failures", "Failed runs by reason class (timeout, input, error, interrupted)",
            ["pipeline", "reason"], registry=self.registry,
        )
        self.run_latency = Histogram(
            "loragraph_run_latency_seconds", "Pipeline time of a run (the router's own latency)", ["pipeline"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.stage_latency = Histogram(
            "loragraph_stage_latency_seconds", "Latency of one step, from the run trace", ["pipeline", "stage"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.verdicts = Counter(
            "loragraph_guardrail_verdicts", "Guardrail verdicts by guardrail and action",
            ["pipeline", "guardrail", "action"], registry=self.registry,
        )
        self.queue_depth = Gauge("loragraph_queue_depth", "Runs waiting for a worker", registry=self.registry)
        self.in_progress = Gauge("loragraph_runs_in_progress", "Runs being processed now", registry=self.registry)
        self.rejected = Counter(
            "loragraph_runs_rejected", "Runs refused with 503 because the queue was full", ["pipeline"],
            registry=self.registry,
        )

    def bind_queue_depth(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from ``depth()`` at scrape time."""
        self.queue_depth.set_function(lambda: float(depth()))

    def observe_result(self, result: RunResult) -> None:
        """Count a finished run and its steps' latencies and verdicts."""
        self.runs.labels(result.pipeline, result.status).inc()
        self.run_latency.labels(result.pipeline).observe(result.latency_ms / 1000)
        for step in result.trace:
            if step.status != "skipped":
                self.stage_latency.labels(result.pipeline, step.stage).observe(step.latency_ms / 1000)
        for verdict in result.verdicts:
            self.verdicts.labels(result.pipeline, verdict.guardrail, verdict.action).inc()

    def observe_failure(self, pipeline: str, reason: str) -> None:
        """Count a failed run; ``reason`` is a class: `timeout`, `input`, `error`, `interrupted`."""
        self.runs.labels(pipeline, "failed").inc()
        self.failures.labels(pipeline, reason).inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
