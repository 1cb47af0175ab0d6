"""Invitations: issued by admins (and by provisioning for a new owner), mailed by a job that
mints the token, accepted once before they expire. Never commits."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.permissions import Role
from socialflow.access.principal import Principal
from socialflow.audit.record import record_change
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.identity import services as identity
from socialflow.identity.models import User
from socialflow.identity.passwords import verify_password
from socialflow.identity.tokens import hash_token
from socialflow.lib.problems import Problem
from socialflow.members.bodies import InvitationAccepted
from socialflow.members.events import MemberInvited, MemberJoined
from socialflow.members.models import Invitation, Membership
from socialflow.plans import quota
from socialflow.plans.limits import MEMBER_SEATS, Resource
from socialflow.plans.quota import QuotaTenant, TenantKey
from socialflow.settings import Settings

# shared.tenants belongs to tenancy, a layer above members: named in SQL here, not imported.
PENDING_INVITATION = text("""
SELECT u.email, t.name AS tenant_name, i.role, i.expires_at
FROM shared.invitations i JOIN shared.users u ON u.id = i.user_id
JOIN shared.tenants t ON t.id = i.tenant_id
WHERE i.id = :id AND i.accepted_at IS NULL AND i.expires_at > now()
FOR UPDATE OF i
""")
LIVE_TENANT = text(
    "SELECT slug, schema_name FROM shared.tenants WHERE id = :id "
    "AND status IN ('active', 'suspended')"
)

TOKEN_PREFIX = "sfi_"  # noqa: S105 - a prefix, not a secret


def _placeholder_hash() -> str:
    # Until the email job mints the real token, no token hashes to this.
    return hashlib.sha256(b"unsent:" + secrets.token_bytes(32)).hexdigest()


async def create_invitation(
    session: AsyncSession,
    settings: Settings,
    inviter: Principal,
    *,
    tenant: QuotaTenant,
    user: User,
    role: Role,
) -> uuid.UUID:
    """A pending invitation (replacing an earlier pending one), its `member.invited` event and
    its entry in the tenant's audit log (the session is in the tenant's schema).

    An invitation for someone who is not a member yet holds a seat (the plan's `seats`) until
    it is accepted or expires: the last seat cannot go to two invitations."""
    # Seats are counted under this lock: the earlier invitation is replaced under it too.
    await quota.hold(session, tenant, Resource.SEATS)
    await session.execute(
        delete(Invitation).where(
            Invitation.tenant_id == tenant.id,
            Invitation.user_id == user.id,
            Invitation.accepted_at.is_(None),
        )
    )
    if await session.get(Membership, (tenant.id, user.id)) is None:
        await quota.reserve(session, tenant, Resource.SEATS)
    invitation = Invitation(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        user_id=user.id,
        role=role.value,
        token_hash=_placeholder_hash(),
        invited_by=inviter.user_id,
        expires_at=datetime.now(UTC) + timedelta(hours=settings.invitation_ttl_hours),
    )
    session.add(invitation)
    await session.flush()
    invited = MemberInvited(invitation_id=invitation.id, email=user.email, role=role.value)
    await record_change(session, inviter, invited, tenant=tenant.slug)
    return invitation.id


class MintedInvitation(msgspec.Struct, frozen=True):
    """What the invitation email says: a fresh token, whom it invites, to what, until when."""

    token: str
    email: str
    tenant_name: str
    role: str
    expires_at: datetime


async def mint_token(session: AsyncSession, invitation_id: uuid.UUID) -> MintedInvitation | None:
    """The email job's step: a fresh token for a pending invitation (its hash stored), or None
    when the invitation is gone, accepted or expired."""
    pending = await session.execute(PENDING_INVITATION, {"id": invitation_id})
    row = pending.mappings().one_or_none()
    if row is None:
        return None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation_id)
        .values(token_hash=hash_token(token), sent_at=func.now())
    )
    return msgspec.convert({**row, "token": token}, MintedInvitation)


async def accept_invitation(
    session: AsyncSession, settings: Settings, *, token: str, name: str | None, password: str
) -> InvitationAccepted:
    """Join the tenant: single use, before expiry; a new account sets its password here."""
    invitation = (
        await session.execute(
            select(Invitation).where(Invitation.token_hash == hash_token(token)).with_for_update()
        )
    ).scalar_one_or_none()
    if invitation is None or invitation.accepted_at is not None:
        raise Problem(404, "invalid-invitation", "This invitation is unknown or already used.")
    if invitation.expires_at <= datetime.now(UTC):
        raise Problem(410, "invitation-expired", "This invitation has expired; ask for a new one.")
    user = await session.get(User, invitation.user_id)
    assert user is not None
    if user.password_hash is None:
        await identity.set_password(session, settings, user, password)
        user.name = name or user.name
    elif not await verify_password(settings, user.password_hash, password):
        raise Problem(401, "unauthorized", "Give this account's current password to accept.")
    tenant = (await session.execute(LIVE_TENANT, {"id": invitation.tenant_id})).one_or_none()
    if tenant is None:
        raise Problem(404, "invalid-invitation", "This invitation's tenant no longer exists.")
    invitation.accepted_at = datetime.now(UTC)
    await session.flush()  # no longer pending: its seat becomes the member's
    if await session.get(Membership, (invitation.tenant_id, user.id)) is None:
        joined_tenant = TenantKey(invitation.tenant_id, tenant.slug, tenant.schema_name)
        # Its held seat becomes the member's, counted against the members alone: after a
        # limit was lowered, the first to accept get the seats left, the others are refused.
        await quota.reserve(session, joined_tenant, Resource.SEATS, counted_by=MEMBER_SEATS)
    joining = insert(Membership).values(
        tenant_id=invitation.tenant_id, user_id=user.id, role=invitation.role
    )
    await session.execute(
        joining.on_conflict_do_update(
            index_elements=[Membership.tenant_id, Membership.user_id],
            set_={"role": joining.excluded.role},
        )
    )
    await enter_tenant_schema(session, tenant.schema_name)
    joiner = Principal(user_id=user.id, email=user.email, is_operator=user.is_operator)
    joined = MemberJoined(user_id=user.id, role=invitation.role)
    await record_change(session, joiner, joined, tenant=tenant.slug)
    return InvitationAccepted(str(user.id), tenant.slug, invitation.role)
