"""Changing and removing a tenant's members, under the role rules. Never commits.

Only owners grant or take away the owner role; nobody grants a role above their own; the last
owner can neither be demoted nor removed (nor leave).
"""

from __future__ import annotations

import uuid

import msgspec
from sqlalchemy import ColumnElement, Text, cast, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.permissions import Role
from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.identity import services as identity
from socialflow.identity.models import User
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.members.bodies import InvitationOut, MemberOut, MemberRoleOut, ReviewerOut
from socialflow.members.events import MemberRemoved, MemberReviewerChanged, MemberRoleChanged
from socialflow.members.invitations import create_invitation
from socialflow.members.models import Membership
from socialflow.settings import Settings


async def _roles(session: AsyncSession, access: TenantAccess) -> dict[uuid.UUID, Role]:
    """Every member's role, locked: concurrent changes cannot both remove the last owner."""
    members = (
        select(Membership.user_id, Membership.role)
        .where(Membership.tenant_id == access.tenant.id)
        .with_for_update()
    )
    return {row.user_id: Role(row.role) for row in await session.execute(members)}


def _membership_of(access: TenantAccess, user_id: uuid.UUID) -> list[ColumnElement[bool]]:
    return [Membership.tenant_id == access.tenant.id, Membership.user_id == user_id]


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
) -> InvitationOut:
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
        tenant=access.tenant,
        user=user,
        role=role,
    )
    return InvitationOut(str(invitation_id), user.email, role.value)


async def change_role(
    session: AsyncSession, access: TenantAccess, user_id: uuid.UUID, role: Role
) -> MemberRoleOut:
    assert access.role is not None
    roles = await _roles(session, access)
    current = roles.get(user_id)
    if current is None:
        raise Problem(404, "not-found", "No such member.")
    check_grant(access.role, current, role)
    if current is role:
        return MemberRoleOut(str(user_id), role.value)
    if current is Role.OWNER:
        _check_not_last_owner(roles, user_id)
    await session.execute(
        update(Membership).where(*_membership_of(access, user_id)).values(role=role.value)
    )
    changed = MemberRoleChanged(user_id=user_id, before=current.value, after=role.value)
    await record_change(session, access.principal, changed, tenant=access.tenant.slug)
    return MemberRoleOut(str(user_id), role.value)


async def set_reviewer(
    session: AsyncSession, access: TenantAccess, user_id: uuid.UUID, *, reviewer: bool
) -> ReviewerOut:
    """Make a member a reviewer (they may approve posts whatever their role), or no longer."""
    changed = await session.execute(
        update(Membership)
        .where(*_membership_of(access, user_id), Membership.reviewer.is_not(reviewer))
        .values(reviewer=reviewer)
        .returning(Membership.user_id)
    )
    if changed.first() is None:
        if (await _roles(session, access)).get(user_id) is None:
            raise Problem(404, "not-found", "No such member.")
        return ReviewerOut(str(user_id), reviewer)  # already so
    event = MemberReviewerChanged(user_id=user_id, reviewer=reviewer)
    await record_change(session, access.principal, event, tenant=access.tenant.slug)
    return ReviewerOut(str(user_id), reviewer)


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
    await session.execute(delete(Membership).where(*_membership_of(access, user_id)))
    removed = MemberRemoved(user_id=user_id, role=current.value, left=leaving)
    await record_change(session, access.principal, removed, tenant=access.tenant.slug)


# A member as shown: its user id as text, as MemberOut has it.
MEMBER_OUT = (
    cast(Membership.user_id, Text).label("user_id"),
    User.email,
    User.name,
    Membership.role,
    Membership.created_at.label("joined_at"),
    Membership.reviewer,
)


async def list_members(
    session: AsyncSession, access: TenantAccess, page: PageRequest, *, role: str | None = None
) -> list[MemberOut]:
    """Members by the time they joined (then user id); one more than the page."""
    query = (
        select(*MEMBER_OUT)
        .select_from(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.tenant_id == access.tenant.id)
        .order_by(Membership.created_at, Membership.user_id)
        .limit(page.limit + 1)
    )
    if role is not None:
        query = query.where(Membership.role == role)
    if page.after:
        query = query.where(tuple_(Membership.created_at, Membership.user_id) > page.after)
    rows = await session.execute(query)
    return msgspec.convert(rows.mappings().all(), list[MemberOut])
