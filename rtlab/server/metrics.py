"""Prometheus metrics of one server, in a registry of its own.

A per-application :class:`~prometheus_client.CollectorRegistry` (not the global one) lets
several servers live in one process, as they do in the test suite.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..core.memory import malloc_usage, resident_bytes


def _or_nan(value: float | None, scale: float = 1) -> float:
    return float("nan") if value is None else value * scale


class _BatchTotals:
    """``rtlab_batched_calls`` and ``rtlab_batched_passes`` from one ``batch_totals()`` per
    scrape: one pass over the backends, and a pair that belongs together (their ratio is
    the mean batch size)."""

    HELP = {
        "rtlab_batched_calls": (
            "Model calls of batching backends (max_batch above 1) so far, each running one batch of passes"
        ),
        "rtlab_batched_passes": "Passes those calls ran (divided by rtlab_batched_calls: the mean batch size)",
    }

    def __init__(self, batch_totals: Callable[[], tuple[int, int]]) -> None:
        self.batch_totals = batch_totals

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The two gauges without values: the registry checks names without a scrape."""
        for name, documentation in self.HELP.items():
            yield GaugeMetricFamily(name, documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Both gauges, from one call of ``batch_totals``."""
        for (name, documentation), value in zip(self.HELP.items(), self.batch_totals()):
            yield GaugeMetricFamily(name, documentation, value=value)


class ServerMetrics:
    """The server's gauges, histograms and counters."""

    def __init__(
        self,
        count_ffmpeg: Callable[[], float],
        count_stuck: Callable[[], float] = lambda: 0,
        batch_totals: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("rtlab_sessions", "Open WebSocket sessions", registry=r)
        self.transcriptions = Gauge(
            "rtlab_active_transcriptions", "Sessions with a running AudioProcessor", registry=r
        )
        self.ffmpeg_processes = Gauge(
            "rtlab_ffmpeg_processes", "FFmpeg child processes of the server process", registry=r
        )
        self.ffmpeg_processes.set_function(count_ffmpeg)
        self.stuck_passes = Gauge(
            "rtlab_stuck_passes",
            "Passes abandoned after the pass deadline whose backend call has not returned",
            registry=r,
        )
        self.stuck_passes.set_function(count_stuck)
        r.register(_BatchTotals(batch_totals))
        self.resident_memory = Gauge(
            "rtlab_resident_memory_bytes", "Resident set of the server process (NaN where /proc has none)", registry=r
        )
        self.resident_memory.set_function(lambda: _or_nan(resident_bytes()))
        self.malloc_free = Gauge(
            "rtlab_malloc_free_bytes",
            "Memory glibc's malloc holds free for reuse, resident until trimmed (NaN with another C library)",
            registry=r,
        )
        self.malloc_free.set_function(lambda: _or_nan((malloc_usage() or {}).get("free"), 2**20))
        self.start_latency = Histogram(
            "rtlab_session_start_seconds",
            "start_transcription received to transcription_started sent",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.commit_latency = Histogram(
            "rtlab_commit_latency_seconds",
            "Per committed word: emitted_at of its commit minus the word's end in the audio",
            buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 6, 10, 30),
            registry=r,
        )
        self.rtf = Histogram(
            "rtlab_rtf",
            "Real-time factor of each finished transcription (compute seconds per audio second)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5),
            registry=r,
        )
        self.rejected = Counter(
            "rtlab_rejected_connections", "Connections refused, by reason", ["reason"], registry=r
        )
        self.errors = Counter(
            "rtlab_errors", "transcription_failed and error messages sent, by code", ["error"], registry=r
        )
        self.dropped_partials = Counter(
            "rtlab_dropped_partials", "Stale partial transcripts not sent to slow clients", registry=r
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
