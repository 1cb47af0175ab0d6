"""argon2 work is bounded per process: a burst of sign-ins never runs more than
PASSWORD_HASH_CONCURRENCY hashes at once, and a saturated process answers 503, not a queue."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.identity.passwords import LOAD, gate
from socialflow.settings import Settings
from tests.integration.identity.conftest import (
    ClientFactory,
    new_user,
    refresh_tokens_of,
    sign_in,
)

# Heavier than the suite's default, so that verifications last long enough to overlap.
HEAVY = {"password_time_cost": 2, "password_memory_kib": 16_384}


async def test_a_burst_of_sign_ins_never_runs_more_hashes_at_once_than_the_setting(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    heavy = settings.model_copy(update=HEAVY)
    users = [await new_user(session_factory, heavy) for _ in range(16)]
    client, _ = await serve(password_hash_concurrency=2, password_hash_wait_s=60.0, **HEAVY)
    LOAD.reset_peak()
    answers = await asyncio.gather(*(sign_in(client, user.email) for user in users))
    assert [a.status_code for a in answers] == [200] * len(users)
    # Exactly the bound: never above it, and the burst did press against it.
    assert LOAD.peak == 2


async def test_a_saturated_process_answers_503_with_retry_after_and_writes_nothing(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    pg: psycopg.Connection[Any],
) -> None:
    user = await new_user(session_factory, settings)
    client, _ = await serve(
        password_hash_concurrency=1, password_hash_wait_s=0.2, signin_failures_per_account=1
    )
    slots = gate(1)  # the app runs in this loop: hold its only argon2 slot
    await slots.acquire()
    try:
        busy = await sign_in(client, user.email)
    finally:
        slots.release()
    assert busy.status_code == 503, busy.text
    assert busy.headers["content-type"].startswith("application/problem+json")
    assert busy.json()["type"] == "/problems/busy"
    assert int(busy.headers["retry-after"]) >= 1
    assert refresh_tokens_of(pg, user.id) == []
    # A 503 is not a failed guess: the account's one allowed failure is still unused.
    assert (await sign_in(client, user.email)).status_code == 200
