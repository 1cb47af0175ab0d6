"""A new password ends every session signed in with the old one."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.session import unit_of_work
from socialflow.identity.services import ensure_operator
from socialflow.settings import Settings
from tests.integration.identity.conftest import refresh_tokens_of
from tests.integration.tenancy_fixtures import PASSWORD, Platform

NEW_PASSWORD = "a brand new passphrase"


async def _pair(platform: Platform, email: str, password: str = PASSWORD) -> Any:
    return await platform.client.post(
        "/api/v1/auth/token", json={"email": email, "password": password}
    )


async def _refresh(platform: Platform, token: str) -> Any:
    return await platform.client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_resetting_a_password_revokes_every_refresh_token_family_of_that_user(
    platform: Platform,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    pg: psycopg.Connection[Any],
) -> None:
    user, bystander = await platform.user(), await platform.user()
    laptop = (await _pair(platform, user.email)).json()
    phone = (await _pair(platform, user.email)).json()
    rotated = (await _refresh(platform, laptop["refresh_token"])).json()
    elsewhere = (await _pair(platform, bystander.email)).json()

    # What `socialflow admin create-operator` does to an existing account.
    async with unit_of_work(session_factory) as session:
        reset = await ensure_operator(session, settings, email=user.email, password=NEW_PASSWORD)

    tokens = refresh_tokens_of(pg, reset.id)
    assert len({family for family, _, _ in tokens}) == 3  # the fixture's, laptop's and phone's
    assert all(revoked for _, _, revoked in tokens)
    for spent in (rotated["refresh_token"], phone["refresh_token"]):
        assert (await _refresh(platform, spent)).status_code == 401
    assert (await _pair(platform, user.email)).status_code == 401
    fresh = (await _pair(platform, user.email, NEW_PASSWORD)).json()
    assert (await _refresh(platform, fresh["refresh_token"])).status_code == 200
    # Nobody else's sessions end.
    assert (await _refresh(platform, elsewhere["refresh_token"])).status_code == 200
