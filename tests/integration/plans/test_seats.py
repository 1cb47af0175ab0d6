"""Seats: members and open invitations count; the last seats go to exactly as many
invitations however many arrive at once; acceptance counts again."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from sqlalchemy import text

from socialflow.access.directory import TenantDirectory
from socialflow.db.session import unit_of_work
from socialflow.lib.problems import Problem
from socialflow.members.invitations import mint_token
from socialflow.plans import quota
from socialflow.plans.limits import MEMBER_SEATS, Resource
from tests.integration.tenancy_fixtures import PASSWORD, Platform, World, unique


def _seats_used(pg: psycopg.Connection[Any], slug: str) -> tuple[int, int]:
    members, pending = pg.execute(
        "SELECT (SELECT count(*) FROM shared.memberships m WHERE m.tenant_id = t.id), "
        "(SELECT count(*) FROM shared.invitations i WHERE i.tenant_id = t.id "
        " AND i.accepted_at IS NULL) FROM shared.tenants t WHERE t.slug = %s",
        (slug,),
    ).fetchone()  # type: ignore[misc]
    return members, pending


async def _invite(platform: Platform, world: World, email: str | None = None) -> Any:
    return await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/members",
        json={"email": email or f"{unique('invitee')}@example.com", "role": "editor"},
        headers=world.owner_a.headers,
    )


async def test_twenty_concurrent_invitations_for_the_last_three_seats_admit_exactly_three(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    await platform.member(world.tenant_a, "editor")
    members, pending = _seats_used(pg, world.tenant_a)
    assert (members, pending) == (2, 0)
    await platform.entitle(world.operator, world.tenant_a, seats=members + 3)

    answers = await asyncio.gather(*(_invite(platform, world) for _ in range(20)))

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 3 + [409] * 17, [a.text for a in answers if a.status_code >= 500]
    problem = next(a.json() for a in answers if a.status_code == 409)
    assert problem["type"] == "/problems/quota-exceeded"
    assert (problem["resource"], problem["limit"], problem["used"]) == ("seats", 5, 5)
    assert problem["resets_at"] is None  # seats do not reset
    assert _seats_used(pg, world.tenant_a) == (2, 3)


async def test_a_refused_invitation_writes_nothing_but_one_quota_exceeded_event(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    await platform.entitle(world.operator, world.tenant_a, seats=1)  # the owner's
    email = f"{unique('late')}@example.com"
    for _ in range(3):
        refused = await _invite(platform, world, email)
        assert refused.status_code == 409
    assert _seats_used(pg, world.tenant_a) == (1, 0)
    assert pg.execute("SELECT 1 FROM shared.users WHERE email = %s", (email,)).fetchone() is None
    events = pg.execute(
        "SELECT event_type, payload FROM shared.outbox WHERE tenant = %s "
        "AND event_type LIKE 'quota.%%' OR (tenant = %s AND event_type = 'member.invited')",
        (world.tenant_a, world.tenant_a),
    ).fetchall()
    # Three refusals, one notice (a day's, for a resource that does not reset).
    assert [(e[0], e[1]["resource"], e[1]["limit"], e[1]["used"]) for e in events] == [
        ("quota.exceeded", "seats", 1.0, 1.0)
    ]


async def test_the_invitation_holds_its_seat_and_acceptance_takes_none_more(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    await platform.entitle(world.operator, world.tenant_a, seats=2)
    invited = await _invite(platform, world)
    assert invited.status_code == 201, invited.text
    assert (await _invite(platform, world)).status_code == 409  # the open invitation's seat
    token = await _token(platform, invited.json()["invitation_id"])
    accepted = await platform.client.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert accepted.status_code == 200, accepted.text
    assert _seats_used(pg, world.tenant_a) == (2, 0)


async def test_a_limit_lowered_after_the_invitation_blocks_its_acceptance(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    invited = await _invite(platform, world)
    assert invited.status_code == 201, invited.text
    await platform.member(world.tenant_a, "viewer")  # a seat taken another way
    lowered = await platform.entitle(world.operator, world.tenant_a, seats=2)
    assert lowered["over_limit"] == [{"resource": "seats", "limit": 2, "used": 3}]

    token = await _token(platform, invited.json()["invitation_id"])
    refused = await platform.client.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "/problems/quota-exceeded"
    # Nothing changed: the invitation is still open, to accept once a seat is free.
    assert _seats_used(pg, world.tenant_a) == (2, 1)
    await platform.entitle(world.operator, world.tenant_a, seats=None)  # back to the plan's
    accepted = await platform.client.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert accepted.status_code == 200, accepted.text


async def _token(platform: Platform, invitation_id: str) -> str:
    async with unit_of_work(platform.factory) as session:
        minted = await mint_token(session, uuid.UUID(invitation_id))
    assert minted is not None
    return minted.token


async def test_after_a_downgrade_concurrent_acceptances_get_exactly_the_seats_left(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    invitations = [await _invite(platform, world) for _ in range(5)]
    assert all(i.status_code == 201 for i in invitations)
    tokens = [await _token(platform, i.json()["invitation_id"]) for i in invitations]
    await platform.entitle(world.operator, world.tenant_a, seats=3)  # the owner + 2

    answers = await asyncio.gather(
        *(
            platform.client.post(
                "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
            )
            for token in tokens
        )
    )

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 409, 409, 409], [a.text for a in answers]
    assert _seats_used(pg, world.tenant_a) == (3, 3)


async def test_two_transactions_cannot_both_take_the_last_seat(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    """The service itself, with time between the reservation and the row it pays for: each
    transaction waits for the one before it to commit, then counts its member."""
    await platform.entitle(world.operator, world.tenant_a, seats=3)  # the owner + 2
    users = [await platform.user() for _ in range(5)]
    async with unit_of_work(platform.factory) as session:
        tenant = await TenantDirectory(ttl_s=0).find(session, world.tenant_a)
    assert tenant is not None

    async def join(email: str) -> str:
        try:
            async with unit_of_work(platform.factory) as session:
                await quota.reserve(session, tenant, Resource.SEATS, counted_by=MEMBER_SEATS)
                await asyncio.sleep(0.2)  # the others reach their count meanwhile
                await session.execute(
                    text(
                        "INSERT INTO shared.memberships (tenant_id, user_id, role) "
                        "SELECT :tenant, id, 'viewer' FROM shared.users WHERE email = :email"
                    ),
                    {"tenant": tenant.id, "email": email},
                )
        except Problem as refused:
            return refused.kind
        return "joined"

    outcomes = await asyncio.gather(*(join(user.email) for user in users))

    assert sorted(outcomes) == ["joined"] * 2 + ["quota-exceeded"] * 3
    assert _seats_used(pg, world.tenant_a) == (3, 0)
