"""Identity use cases: accounts, sign-in, token rotation, the caller's profile. Never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import msgspec
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.principal import Principal, unauthorized
from socialflow.identity.bodies import AgencyRole, Me, Membership
from socialflow.identity.models import RefreshToken, User
from socialflow.identity.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    hash_password,
    verify_password,
)
from socialflow.identity.tokens import hash_token, issue_access_token, new_refresh_token
from socialflow.lib.problems import Problem
from socialflow.settings import Settings


def normalise_email(email: str) -> str:
    email = email.strip()
    local, _, domain = email.rpartition("@")
    if not local or not domain or "." not in domain or len(email) > 320 or " " in email:
        raise Problem(422, "invalid-email", f"{email!r} is not an email address.")
    return f"{local}@{domain.lower()}"


def check_password_strength(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise Problem(
            422,
            "weak-password",
            f"Passwords have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
        )


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(
        select(User).where(func.lower(User.email) == normalise_email(email).lower())
    )
    return result.scalar_one_or_none()


async def create_user(
    session: AsyncSession,
    settings: Settings,
    *,
    email: str,
    password: str | None,
    name: str | None = None,
    is_operator: bool = False,
) -> User:
    """A new account; a taken email (in any case) is a 409 problem."""
    email = normalise_email(email)
    if password is not None:
        check_password_strength(password)
    if await find_user_by_email(session, email) is not None:
        raise Problem(409, "email-taken", "An account with this email exists.")
    user = User(
        id=uuid.uuid4(),
        email=email,
        name=name,
        password_hash=await hash_password(settings, password) if password else None,
        is_operator=is_operator,
    )
    session.add(user)
    await session.flush()
    return user


async def ensure_operator(
    session: AsyncSession, settings: Settings, *, email: str, password: str
) -> User:
    """An operator account with this password: created, or promoted and its password reset."""
    check_password_strength(password)
    user = await find_user_by_email(session, email)
    if user is None:
        return await create_user(
            session, settings, email=email, password=password, is_operator=True
        )
    await set_password(session, settings, user, password)
    user.is_operator = True
    user.is_active = True
    await session.flush()
    return user


async def set_password(
    session: AsyncSession, settings: Settings, user: User, password: str
) -> None:
    """Give `user` a new password and end every session signed in with the old one: each
    refresh-token family is revoked (access tokens still run out within ACCESS_TOKEN_TTL_S)."""
    check_password_strength(password)
    user.password_hash = await hash_password(settings, password)
    await revoke_user_refresh_tokens(session, user.id)


async def get_or_create_user(session: AsyncSession, email: str) -> tuple[User, bool]:
    """The account for `email`, created without a password (to be set by invitation) if new."""
    existing = await find_user_by_email(session, email)
    if existing is not None:
        return existing, False
    # Concurrent creation of one email: the unique index decides, the loser reads the winner.
    new_user = insert(User).values(id=uuid.uuid4(), email=normalise_email(email))
    result = await session.execute(new_user.on_conflict_do_nothing().returning(User.id))
    created = result.scalar_one_or_none() is not None
    user = await find_user_by_email(session, email)
    assert user is not None
    return user, created


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


async def _issue_pair(
    session: AsyncSession, settings: Settings, user: User, family_id: uuid.UUID
) -> TokenPair:
    token, token_hash = new_refresh_token()
    session.add(
        RefreshToken(
            id=uuid.uuid4(),
            family_id=family_id,
            user_id=user.id,
            token_hash=token_hash,
            expires_at=datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_s),
        )
    )
    await session.flush()
    principal = Principal(user_id=user.id, email=user.email, is_operator=user.is_operator)
    return TokenPair(
        access_token=issue_access_token(settings, principal),
        refresh_token=token,
        expires_in=settings.access_token_ttl_s,
    )


async def sign_in(
    session: AsyncSession, settings: Settings, email: str, password: str
) -> TokenPair:
    try:
        user = await find_user_by_email(session, email)
    except Problem:
        user = None
    ok = await verify_password(settings, user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise unauthorized("Email or password is wrong.")
    return await _issue_pair(session, settings, user, family_id=uuid.uuid4())


class RefreshOutcome(Enum):
    ROTATED = "rotated"
    REUSED = "reused"


async def rotate_refresh_token(
    session: AsyncSession, settings: Settings, token: str
) -> tuple[RefreshOutcome, TokenPair | uuid.UUID]:
    """Spend `token` for a new pair; a token spent before means theft: report its family."""
    row = (
        await session.execute(
            select(RefreshToken)
            .where(RefreshToken.token_hash == hash_token(token))
            .with_for_update()
        )
    ).scalar_one_or_none()
    now = datetime.now(UTC)
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise unauthorized("The refresh token is invalid or expired.")
    if row.used_at is not None:
        return RefreshOutcome.REUSED, row.family_id
    row.used_at = now
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise unauthorized("The refresh token is invalid or expired.")
    return RefreshOutcome.ROTATED, await _issue_pair(session, settings, user, row.family_id)


async def revoke_token_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def revoke_user_refresh_tokens(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Revoke every refresh-token family of `user_id` (a password change, a disabled account)."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


# Memberships and agencies are tables of the layers above identity (members, tenancy): named in
# SQL here, not imported.
MEMBERSHIPS = text(
    "SELECT t.slug AS tenant, t.name AS tenant_name, t.status, m.role FROM shared.memberships m "
    "JOIN shared.tenants t ON t.id = m.tenant_id "
    "WHERE m.user_id = :u AND t.status IN ('active', 'suspended') ORDER BY t.slug"
)
AGENCY_ROLES = text(
    "SELECT a.slug AS agency, a.name FROM shared.agency_admins aa "
    "JOIN shared.agencies a ON a.id = aa.agency_id WHERE aa.user_id = :u ORDER BY a.slug"
)


async def profile(session: AsyncSession, principal: Principal) -> Me:
    """The caller, their tenant memberships and their agency roles."""
    user = await session.get(User, principal.user_id)
    if user is None or not user.is_active:
        raise unauthorized("This account no longer exists.")
    memberships = await session.execute(MEMBERSHIPS, {"u": user.id})
    agencies = await session.execute(AGENCY_ROLES, {"u": user.id})
    return Me(
        id=str(user.id),
        email=user.email,
        name=user.name,
        is_operator=user.is_operator,
        memberships=msgspec.convert(memberships.mappings().all(), list[Membership]),
        agency_roles=[AgencyRole(r.agency, r.name, role="admin") for r in agencies],
    )
