"""Sign-in throttling: attempts per client address, failures per account, checked before argon2
and before anything is written."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.session import unit_of_work
from socialflow.identity.passwords import LOAD
from socialflow.members.invitations import mint_token
from socialflow.settings import Settings
from tests.integration.identity.conftest import (
    ClientFactory,
    new_user,
    refresh_tokens_of,
    sign_in,
)
from tests.integration.tenancy_fixtures import PASSWORD, Platform, World, unique


def _assert_throttled(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "/problems/rate-limited"
    assert int(response.headers["retry-after"]) > 0


async def test_sign_ins_past_the_per_address_limit_get_429_with_retry_after(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    client, _ = await serve(signin_attempts_per_address_per_minute=3)
    users = [await new_user(session_factory, settings) for _ in range(4)]
    answers = [await sign_in(client, user.email) for user in users]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    _assert_throttled(answers[3])
    # Another address is counted apart.
    other, _ = await serve(client_address="198.51.100.7", signin_attempts_per_address_per_minute=3)
    assert (await sign_in(other, users[3].email)).status_code == 200


async def test_failed_sign_ins_throttle_the_account_before_argon2_runs_and_write_nothing(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    pg: psycopg.Connection[Any],
) -> None:
    client, _ = await serve(signin_failures_per_account=3)
    user = await new_user(session_factory, settings)
    for _ in range(3):
        assert (await sign_in(client, user.email, "wrong password, again")).status_code == 401
    verifications = LOAD.total
    throttled = await sign_in(client, user.email)  # the right password, but too late
    _assert_throttled(throttled)
    assert LOAD.total == verifications, "a throttled sign-in must not run argon2"
    assert refresh_tokens_of(pg, user.id) == []
    # The email is what is throttled, in any case, not the address.
    _assert_throttled(await sign_in(client, user.email.upper()))
    someone_else = await new_user(session_factory, settings)
    assert (await sign_in(client, someone_else.email)).status_code == 200


async def test_unknown_emails_are_throttled_like_real_accounts(serve: ClientFactory) -> None:
    client, _ = await serve(signin_failures_per_account=2)
    email = f"{unique('nobody')}@example.com"
    answers = [await sign_in(client, email) for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 429]


async def test_successful_sign_ins_do_not_use_up_the_accounts_failures(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    client, _ = await serve(signin_failures_per_account=2)
    user = await new_user(session_factory, settings)
    for _ in range(5):
        assert (await sign_in(client, user.email)).status_code == 200


async def test_a_burst_of_guesses_at_one_account_runs_no_more_verifications_than_the_limit(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    client, _ = await serve(signin_failures_per_account=3)
    user = await new_user(session_factory, settings)
    verifications = LOAD.total
    answers = await asyncio.gather(
        *(sign_in(client, user.email, f"guess number {n:04d}") for n in range(12))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * 3 + [429] * 9
    assert LOAD.total - verifications == 3


async def test_refresh_is_throttled_per_address_and_a_throttled_refresh_spends_nothing(
    serve: ClientFactory,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    pg: psycopg.Connection[Any],
) -> None:
    client, _ = await serve(signin_attempts_per_address_per_minute=2)
    user = await new_user(session_factory, settings)
    pair = (await sign_in(client, user.email)).json()
    for n in range(2):  # the refresh endpoint's own count for this address
        made_up = {"refresh_token": f"sfr_made-up-{n}"}
        assert (await client.post("/api/v1/auth/refresh", json=made_up)).status_code == 401
    before = refresh_tokens_of(pg, user.id)
    throttled = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    _assert_throttled(throttled)
    assert refresh_tokens_of(pg, user.id) == before  # not spent, nothing issued


async def test_guesses_at_one_refresh_token_are_throttled(serve: ClientFactory) -> None:
    client, _ = await serve(signin_failures_per_account=2)
    body = {"refresh_token": f"sfr_{unique('guess')}"}
    answers = [await client.post("/api/v1/auth/refresh", json=body) for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 429]


async def test_wrong_passwords_on_an_invitation_throttle_it_and_it_stays_pending(
    serve: ClientFactory,
    platform: Platform,
    world: World,
    session_factory: async_sessionmaker[AsyncSession],
    pg: psycopg.Connection[Any],
) -> None:
    existing = await platform.user()  # has a password: accepting asks for it
    invited = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/members",
        json={"email": existing.email, "role": "editor"},
        headers=world.owner_a.headers,
    )
    assert invited.status_code in (200, 201, 202), invited.text
    (invitation_id,) = pg.execute(
        "SELECT i.id FROM shared.invitations i JOIN shared.users u ON u.id = i.user_id "
        "WHERE u.email = %s",
        (existing.email,),
    ).fetchone()  # type: ignore[misc]
    async with unit_of_work(session_factory) as session:
        minted = await mint_token(session, invitation_id)  # what the email job does
    assert minted is not None
    token = minted.token

    client, _ = await serve(signin_failures_per_account=2)
    wrong = {"token": token, "password": "not this account's password"}
    for _ in range(2):
        answer = await client.post("/api/v1/invitations/accept", json=wrong)
        assert answer.status_code == 401
    verifications = LOAD.total
    right = {"token": token, "password": PASSWORD}
    _assert_throttled(await client.post("/api/v1/invitations/accept", json=right))
    assert LOAD.total == verifications
    assert pg.execute(
        "SELECT accepted_at FROM shared.invitations WHERE id = %s", (invitation_id,)
    ).fetchone() == (None,)
    assert pg.execute(
        "SELECT count(*) FROM shared.memberships m JOIN shared.users u ON u.id = m.user_id "
        "WHERE u.email = %s",
        (existing.email,),
    ).fetchone() == (0,)


async def test_ipv6_callers_are_counted_per_64_network(serve: ClientFactory) -> None:
    first, _ = await serve(
        client_address="2001:db8:1:2::1", signin_attempts_per_address_per_minute=1
    )
    same_network, _ = await serve(
        client_address="2001:db8:1:2:ffff::9", signin_attempts_per_address_per_minute=1
    )
    other_network, _ = await serve(
        client_address="2001:db8:1:3::1", signin_attempts_per_address_per_minute=1
    )
    body = {"email": f"{unique('v6')}@example.com", "password": PASSWORD}
    assert (await first.post("/api/v1/auth/token", json=body)).status_code == 401
    _assert_throttled(await same_network.post("/api/v1/auth/token", json=body))
    assert (await other_network.post("/api/v1/auth/token", json=body)).status_code == 401
