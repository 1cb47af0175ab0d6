"""The relay's Prometheus metrics (served with its probes: outbox_relay/probes.py)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

EVENTS_DISPATCHED = Counter(
    "socialflow_relay_events_dispatched", "Outbox events enqueued to the broker"
)
MESSAGES_ENQUEUED = Counter(
    "socialflow_relay_messages_enqueued", "Dramatiq messages written (one per route)"
)
EVENTS_DEAD_LETTERED = Counter(
    "socialflow_relay_events_dead_lettered", "Outbox events moved to the dead-letter table"
)
EVENTS_RETRIED = Counter(
    "socialflow_relay_events_retried",
    "Outbox events put back for later because their queue answered a command error",
)
BATCH_FAILURES = Counter(
    "socialflow_relay_batch_failures", "Claims rolled back because the broker or database failed"
)
BATCH_SIZE = Histogram(
    "socialflow_relay_batch_size",
    "Rows claimed per batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000),
)


class BatchHistogram(Collector):
    """A histogram fed a whole batch of observations at once.

    prometheus_client's Histogram takes one value per call under a lock; at tens of thousands
    of events a second that costs more than encoding them, so batches are counted here.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        values = list(values)
        slots = [bisect.bisect_left(self.bounds, v) for v in values]
        with self._lock:
            for slot in slots:
                self._counts[slot] += 1
            self._sum += sum(values)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], cumulative, total)
        yield family


ENQUEUE_LATENCY = BatchHistogram(
    "socialflow_relay_commit_to_enqueue_seconds",
    "From the event's insert to the broker's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REGISTRY.register(ENQUEUE_LATENCY)
