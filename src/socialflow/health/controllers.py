"""`GET /health` (the process answers), `GET /ready` (its database and Redis answer) and
`GET /metrics` (Prometheus; on a port of its own with API_METRICS_PORT, api_server)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from socialflow.lib.http_metrics import scrape_registry
from socialflow.lib.problems import problem_response


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, str]


async def _check_database(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check_redis(redis: Redis) -> None:
    await redis.ping()


async def _outcome(name: str, check: Any, timeout_s: float) -> tuple[str, str]:
    try:
        await asyncio.wait_for(check, timeout=timeout_s)
    except TimeoutError:
        return name, f"no answer within {timeout_s:g} s"
    except Exception as exc:
        return name, f"unavailable ({type(exc).__name__})"
    return name, "ok"


class HealthController(Controller):
    tags = ["operations"]  # noqa: RUF012 - Litestar reads this class attribute

    @get("/health", summary="Liveness: the process is up")
    async def health(self) -> Health:
        return Health(status="ok")

    @get("/ready", summary="Readiness: PostgreSQL and Redis answer", opt={"problems": (503,)})
    async def ready(self, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
        timeout_s: float = state.settings.ready_timeout_s
        results = dict(
            await asyncio.gather(
                _outcome("database", _check_database(state.engine), timeout_s),
                _outcome("redis", _check_redis(state.redis), timeout_s),
            )
        )
        failed = sorted(name for name, outcome in results.items() if outcome != "ok")
        if failed:
            return problem_response(
                request,
                status=503,
                kind="not-ready",
                title="Service not ready",
                detail="Not ready: " + "; ".join(f"{n} {results[n]}" for n in failed),
                checks=results,
            )
        return Response(Readiness(status="ready", checks=results))


class MetricsController(Controller):
    """`GET /metrics` on the API's port (not there when API_METRICS_PORT serves it)."""

    tags = ["operations"]  # noqa: RUF012 - Litestar reads this class attribute

    @get(
        "/metrics",
        summary="Prometheus metrics of the API (all its processes)",
        description=(
            "Requests and latency by route template, method and status; the database pool; "
            "Redis errors. Meant for the platform's Prometheus: restrict it at the ingress."
        ),
        media_type=CONTENT_TYPE_LATEST,
        sync_to_thread=False,
    )
    def metrics(self) -> Response[bytes]:
        return Response(generate_latest(scrape_registry()), media_type=CONTENT_TYPE_LATEST)
