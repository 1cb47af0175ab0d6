"""The API's Prometheus metrics: requests and their latency by route template (never the raw
path: a label per URL would grow without bound), method and status; the database pool; Redis
errors met on the request path.

`socialflow api --workers N` runs N processes: they then write their samples to files in
PROMETHEUS_MULTIPROC_DIR (set by api_server before they start) and a scrape of any of them
reads all (`scrape_registry`). No label names a tenant.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # no route: a 404 or a 405 before routing

REQUESTS = Counter(
    "socialflow_api_requests", "HTTP requests answered", ["route", "method", "status"]
)
LATENCY = Histogram(
    "socialflow_api_request_duration_seconds",
    "HTTP request latency, first byte in to last byte out",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POOL_IN_USE = Gauge(
    "socialflow_api_db_pool_in_use",
    "Database connections checked out of the pool",
    multiprocess_mode="livesum",
)
POOL_OVERFLOW = Gauge(
    "socialflow_api_db_pool_overflow",
    "Connections open beyond the pool's size (up to its max overflow)",
    multiprocess_mode="livesum",
)
REDIS_ERRORS = Counter(
    "socialflow_api_redis_errors", "Redis errors met on the request path", ["where"]
)


def method_of(scope: Any) -> str:
    """The request's method as labels and spans name it: a client's invented one is OTHER."""
    method = scope.get("method", "GET")
    return method if method in METHODS else "OTHER"


def observe(scope: Any, status: int, seconds: float) -> None:
    """Count one answered request (called once per request, by the outermost layer)."""
    route = scope.get("path_template") or UNMATCHED
    method = method_of(scope)
    code = str(status)
    REQUESTS.labels(route, method, code).inc()
    LATENCY.labels(route, method, code).observe(seconds)
    app = scope.get("litestar_app")
    engine = getattr(getattr(app, "state", None), "engine", None)
    pool = getattr(getattr(engine, "sync_engine", None), "pool", None)
    if pool is not None and hasattr(pool, "checkedout"):
        POOL_IN_USE.set(pool.checkedout())
        POOL_OVERFLOW.set(max(0, pool.overflow()))


def redis_error(where: str) -> None:
    REDIS_ERRORS.labels(where).inc()


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: every API process's samples when they are several, else this
    process's registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY
