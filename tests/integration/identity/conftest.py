"""Fixtures for identity tests: the app served in the test's own event loop, so that requests
sent together really run together (the Litestar test client runs one request at a time)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.app import create_app
from socialflow.db.session import unit_of_work
from socialflow.identity.models import User
from socialflow.identity.services import create_user
from socialflow.settings import Settings
from tests.integration.tenancy_fixtures import PASSWORD, unique

ClientFactory = Callable[..., Awaitable[tuple[httpx.AsyncClient, Litestar]]]


async def _run(app: Litestar, started: asyncio.Event, stop: asyncio.Event) -> None:
    # The lifespan holds a task group: it must end in the task that began it.
    async with app.lifespan():
        started.set()
        await stop.wait()


@pytest.fixture
async def serve(settings: Settings, redis_client: Any) -> AsyncIterator[ClientFactory]:
    """`await serve(**setting overrides)`: a client of a fresh app started in this loop."""
    stop = asyncio.Event()
    apps: list[asyncio.Task[None]] = []
    clients: list[httpx.AsyncClient] = []

    async def start(
        client_address: str = "192.0.2.10", **overrides: Any
    ) -> tuple[httpx.AsyncClient, Litestar]:
        app = create_app(settings.model_copy(update=overrides))
        started = asyncio.Event()
        apps.append(asyncio.create_task(_run(app, started, stop)))
        await asyncio.wait_for(started.wait(), timeout=30)
        transport = httpx.ASGITransport(app=app, client=(client_address, 40000))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://socialflow.test"))
        return clients[-1], app

    yield start
    for client in clients:
        await client.aclose()
    stop.set()
    await asyncio.gather(*apps)


async def new_user(
    factory: async_sessionmaker[AsyncSession], settings: Settings, prefix: str = "user"
) -> User:
    async with unit_of_work(factory) as session:
        return await create_user(
            session, settings, email=f"{unique(prefix)}@example.com", password=PASSWORD
        )


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post("/api/v1/auth/token", json={"email": email, "password": password})


def refresh_tokens_of(pg: Any, user_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """(family, used, revoked) of each refresh token of the user, oldest first."""
    return [
        tuple(row)
        for row in pg.execute(
            "SELECT family_id, used_at IS NOT NULL, revoked_at IS NOT NULL "
            "FROM shared.refresh_tokens WHERE user_id = %s ORDER BY created_at, id",
            (user_id,),
        )
    ]
