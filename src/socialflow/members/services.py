"""Changing and removing a tenant's members, under the role rules. Never commits.

Only owners grant or take away the owner role; nobody grants a role above their own; the last
owner can neither be demoted nor removed (nor leave).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.permissions import Role
from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.identity import services as identity
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.members.events import MemberRemoved, MemberRoleChanged
from socialflow.members.invitations import create_invitation
from socialflow.settings import Settings

LOCK_MEMBERS = text(
    "SELECT user_id, role FROM shared.memberships WHERE tenant_id = :tenant FOR UPDATE"
)


async def _roles(session: AsyncSession, access: TenantAccess) -> dict[uuid.UUID, Role]:
    """Every member's role, locked: concurrent changes cannot both remove the last owner."""
    rows = await session.execute(LOCK_MEMBERS, {"tenant": access.tenant.id})
    return {row.user_id: Role(row.role) for row in rows}


def check_grant(actor: Role, current: Role | None, wanted: Role | None) -> None:
    """Only owners touch the owner role; nobody grants or manages a role above their own."""
    touches_owner = Role.OWNER in (current, wanted)
    if touches_owner and actor is not Role.OWNER:
        raise Problem(403, "forbidden", "Only owners grant or remove the owner role.")
    for role in (current, wanted):
        if role is not None and role.rank > actor.rank:
            raise Problem(403, "forbidden", f"An {actor} cannot manage an {role}.")


def _check_not_last_owner(roles: dict[uuid.UUID, Role], user_id: uuid.UUID) -> None:
    owners = [u for u, r in roles.items() if r is Role.OWNER]
    if owners == [user_id]:
        raise Problem(409, "last-owner", "A tenant keeps at least one owner.")


async def invite_member(
    session: AsyncSession, settings: Settings, access: TenantAccess, email: str, role: Role
) -> dict[str, Any]:
    """Invite `email` with `role` (the account is created if new); the email job mails it."""
    assert access.role is not None
    check_grant(access.role, None, role)
    user, _ = await identity.get_or_create_user(session, email)
    if user.id in await _roles(session, access):
        raise Problem(409, "already-member", f"{user.email} is already a member.")
    invitation_id = await create_invitation(
        session,
        settings,
        access.principal,
        tenant_id=access.tenant.id,
        tenant_slug=access.tenant.slug,
        user=user,
        role=role,
    )
    return {"invitation_id": str(invitation_id), "email": user.email, "role": role.value}


async def change_role(
    session: AsyncSession, access: TenantAccess, user_id: uuid.UUID, role: Role
) -> dict[str, Any]:
    assert access.role is not None
    roles = await _roles(session, access)
    current = roles.get(user_id)
    if current is None:
        raise Problem(404, "not-found", "No such member.")
    check_grant(access.role, current, role)
    if current is role:
        return {"user_id": str(user_id), "role": role.value}
    if current is Role.OWNER:
        _check_not_last_owner(roles, user_id)
    await session.execute(
        text("UPDATE shared.memberships SET role = :r WHERE tenant_id = :t AND user_id = :u"),
        {"r": role.value, "t": access.tenant.id, "u": user_id},
    )
    changed = MemberRoleChanged(user_id=user_id, before=current.value, after=role.value)
    await record_change(session, access.principal, changed, tenant=access.tenant.slug)
    return {"user_id": str(user_id), "role": role.value}


async def remove_member(session: AsyncSession, access: TenantAccess, user_id: uuid.UUID) -> None:
    leaving = user_id == access.principal.user_id
    roles = await _roles(session, access)
    current = roles.get(user_id)
    if current is None:
        raise Problem(404, "not-found", "No such member.")
    if not leaving:
        assert access.role is not None
        check_grant(access.role, current, None)
    if current is Role.OWNER:
        _check_not_last_owner(roles, user_id)
    await session.execute(
        text("DELETE FROM shared.memberships WHERE tenant_id = :t AND user_id = :u"),
        {"t": access.tenant.id, "u": user_id},
    )
    removed = MemberRemoved(user_id=user_id, role=current.value, left=leaving)
    await record_change(session, access.principal, removed, tenant=access.tenant.slug)


async def list_members(
    session: AsyncSession, access: TenantAccess, page: PageRequest, *, role: str | None = None
) -> list[dict[str, Any]]:
    """Members by the time they joined (then user id); one row more than the page."""
    after_at, after_id = page.after if page.after else (None, None)
    rows = await session.execute(
        text(
            "SELECT u.id AS user_id, u.email, u.name, m.role, m.created_at AS joined_at "
            "FROM shared.memberships m JOIN shared.users u ON u.id = m.user_id "
            "WHERE m.tenant_id = :tenant "
            "AND (CAST(:role AS text) IS NULL OR m.role = :role) "
            "AND (CAST(:after_at AS timestamptz) IS NULL "
            "     OR (m.created_at, m.user_id) > (CAST(:after_at AS timestamptz), "
            "                                     CAST(:after_id AS uuid))) "
            "ORDER BY m.created_at, m.user_id LIMIT :limit"
        ),
        {"tenant": access.tenant.id, "role": role, "after_at": after_at, "after_id": after_id,
         "limit": page.limit + 1},
    )  # fmt: skip
    return [dict(row._mapping) for row in rows]
