"""`/health` answers while the process lives; `/ready` only when PostgreSQL and Redis do."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient

from socialflow.app import create_app
from socialflow.embedded import EmbeddedRedis
from socialflow.settings import Settings


async def test_ready_when_database_and_redis_answer(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


async def test_not_ready_names_the_database_when_it_is_down(
    settings: Settings, tmp_path: Path
) -> None:
    # A socket directory with no server in it: connections are refused, as with a stopped one.
    down = settings.model_copy(
        update={"database_url": f"postgresql+psycopg://postgres@/socialflow?host={tmp_path}"}
    )
    async with AsyncTestClient(create_app(down)) as client:
        health = await client.get("/health")
        response = await client.get("/ready")
    assert health.status_code == 200
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "/problems/not-ready"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["database"] != "ok"
    assert "database" in body["detail"]
    assert "redis" not in body["detail"]


async def test_readiness_follows_redis_going_down_and_coming_back(
    settings: Settings, tmp_path: Path
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "r", throwaway=True)
    own = settings.model_copy(update={"redis_url": redis_server.start()})
    try:
        async with AsyncTestClient(create_app(own)) as client:
            assert (await client.get("/ready")).status_code == 200
            redis_server.stop()
            down = await client.get("/ready")
            assert down.status_code == 503
            assert down.json()["checks"]["database"] == "ok"
            assert "redis" in down.json()["detail"]
            redis_server.start()
            assert (await client.get("/ready")).status_code == 200
    finally:
        redis_server.stop()
