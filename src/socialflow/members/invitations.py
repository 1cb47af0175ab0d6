"""Invitations: issued by admins (and by provisioning for a new owner), mailed by a job that
mints the token, accepted once before they expire. Never commits."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
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
from socialflow.members.events import MemberInvited, MemberJoined
from socialflow.members.models import Invitation
from socialflow.settings import Settings

TOKEN_PREFIX = "sfi_"  # noqa: S105 - a prefix, not a secret


def _placeholder_hash() -> str:
    # Until the email job mints the real token, no token hashes to this.
    return hashlib.sha256(b"unsent:" + secrets.token_bytes(32)).hexdigest()


async def create_invitation(
    session: AsyncSession,
    settings: Settings,
    inviter: Principal,
    *,
    tenant_id: uuid.UUID,
    tenant_slug: str,
    user: User,
    role: Role,
) -> uuid.UUID:
    """A pending invitation (replacing an earlier pending one), its `member.invited` event and
    its entry in the tenant's audit log (the session is in the tenant's schema)."""
    await session.execute(
        text(
            "DELETE FROM shared.invitations WHERE tenant_id = :t AND user_id = :u "
            "AND accepted_at IS NULL"
        ),
        {"t": tenant_id, "u": user.id},
    )
    invitation = Invitation(
        id=uuid.uuid4(), tenant_id=tenant_id, user_id=user.id, role=role.value,
        token_hash=_placeholder_hash(), invited_by=inviter.user_id,
        expires_at=datetime.now(UTC) + timedelta(hours=settings.invitation_ttl_hours),
    )  # fmt: skip
    session.add(invitation)
    await session.flush()
    invited = MemberInvited(invitation_id=invitation.id, email=user.email, role=role.value)
    await record_change(session, inviter, invited, tenant=tenant_slug)
    return invitation.id


async def mint_token(session: AsyncSession, invitation_id: uuid.UUID) -> tuple[str, Any] | None:
    """The email job's step: a fresh token for a pending invitation (its hash stored), or None
    when the invitation is gone, accepted or expired."""
    row = (
        await session.execute(
            text(
                "SELECT i.id, u.email, t.name AS tenant_name, t.slug, i.role, i.expires_at "
                "FROM shared.invitations i JOIN shared.users u ON u.id = i.user_id "
                "JOIN shared.tenants t ON t.id = i.tenant_id "
                "WHERE i.id = :id AND i.accepted_at IS NULL AND i.expires_at > now() "
                "FOR UPDATE OF i"
            ),
            {"id": invitation_id},
        )
    ).one_or_none()
    if row is None:
        return None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await session.execute(
        text("UPDATE shared.invitations SET token_hash = :h, sent_at = now() WHERE id = :id"),
        {"h": hash_token(token), "id": invitation_id},
    )
    return token, row


@dataclass(frozen=True)
class Accepted:
    user_id: uuid.UUID
    tenant: str
    role: str


async def accept_invitation(
    session: AsyncSession, settings: Settings, *, token: str, name: str | None, password: str
) -> Accepted:
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
    tenant = (
        await session.execute(
            text(
                "SELECT slug, schema_name FROM shared.tenants WHERE id = :id "
                "AND status IN ('active', 'suspended')"
            ),
            {"id": invitation.tenant_id},
        )
    ).one_or_none()
    if tenant is None:
        raise Problem(404, "invalid-invitation", "This invitation's tenant no longer exists.")
    invitation.accepted_at = datetime.now(UTC)
    await session.execute(
        text(
            "INSERT INTO shared.memberships (tenant_id, user_id, role) VALUES (:t, :u, :r) "
            "ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = EXCLUDED.role"
        ),
        {"t": invitation.tenant_id, "u": user.id, "r": invitation.role},
    )
    await enter_tenant_schema(session, tenant.schema_name)
    joiner = Principal(user_id=user.id, email=user.email, is_operator=user.is_operator)
    joined = MemberJoined(user_id=user.id, role=invitation.role)
    await record_change(session, joiner, joined, tenant=tenant.slug)
    return Accepted(user.id, tenant.slug, invitation.role)
