"""Tenant API keys: the secret is shown once and stored as a hash. Never commits."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import msgspec
from sqlalchemy import Text, cast, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.directory import TenantDirectory
from socialflow.access.permissions import Role
from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.identity.auth import API_KEY_PREFIX
from socialflow.identity.models import ApiKey
from socialflow.identity.tokens import hash_token
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.members import bodies
from socialflow.members.events import ApiKeyCreated, ApiKeyRevoked
from socialflow.members.services import check_grant

# A key as shown (never its hash): its id as text, as ApiKeyOut has it.
KEY_OUT = (
    cast(ApiKey.id, Text).label("id"),
    ApiKey.name,
    ApiKey.prefix,
    ApiKey.role,
    ApiKey.created_at,
    ApiKey.expires_at,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
)


# The kind of announcement a revocation makes (identity.auth's key cache listens to it).
API_KEY_CHANGES = "api_key"


async def create_key(
    session: AsyncSession,
    access: TenantAccess,
    *,
    name: str,
    role: Role,
    expires_at: datetime | None,
) -> bodies.ApiKeyCreated:
    assert access.role is not None
    check_grant(access.role, None, role)
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= datetime.now(UTC)):
        raise Problem(
            422,
            "validation-error",
            "expires_at must be a future time with a time zone.",
            errors=[{"field": "expires_at", "message": "future, timezone-aware"}],
        )
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = uuid.uuid4()
    new_key = insert(ApiKey).values(
        id=key_id,
        tenant_id=access.tenant.id,
        name=name,
        prefix=secret[:12],
        key_hash=hash_token(secret),
        role=role.value,
        created_by=await _person_behind(session, access),
        expires_at=expires_at,
    )
    row = (await session.execute(new_key.returning(*KEY_OUT))).mappings().one()
    created = ApiKeyCreated(id=key_id, name=name, prefix=secret[:12], role=role.value)
    await record_change(session, access.principal, created, tenant=access.tenant.slug)
    return msgspec.convert({**row, "key": secret}, bodies.ApiKeyCreated)


async def _person_behind(session: AsyncSession, access: TenantAccess) -> uuid.UUID | None:
    """Who makes a key: the signed-in user, or, for a key made with a key, the person who made
    that one (self-approval and the audit trail follow a key to a person, not to a key)."""
    if access.principal.kind != "api_key":
        return access.principal.user_id
    made_by = select(ApiKey.created_by).where(ApiKey.id == access.principal.user_id)
    return (await session.execute(made_by)).scalar_one_or_none()


async def list_keys(
    session: AsyncSession, access: TenantAccess, page: PageRequest
) -> list[bodies.ApiKeyOut]:
    """The tenant's keys by creation (then id); one more than the page."""
    query = (
        select(*KEY_OUT)
        .where(ApiKey.tenant_id == access.tenant.id)
        .order_by(ApiKey.created_at, ApiKey.id)
        .limit(page.limit + 1)
    )
    if page.after:
        query = query.where(tuple_(ApiKey.created_at, ApiKey.id) > page.after)
    rows = await session.execute(query)
    return msgspec.convert(rows.mappings().all(), list[bodies.ApiKeyOut])


async def revoke_key(
    session: AsyncSession,
    access: TenantAccess,
    key_id: uuid.UUID,
    directory: TenantDirectory | None = None,
) -> None:
    """Revoke the key; `directory` announces it once committed, so every API process forgets
    the key it may have cached and refuses it at once."""
    revoked = await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id, ApiKey.tenant_id == access.tenant.id, ApiKey.revoked_at.is_(None)
        )
        .values(revoked_at=func.now())
        .returning(ApiKey.name, ApiKey.role)
    )
    row = revoked.one_or_none()
    if row is None:
        raise Problem(404, "not-found", "No such active API key.")
    revoked_key = ApiKeyRevoked(id=key_id, name=row.name, role=row.role)
    await record_change(session, access.principal, revoked_key, tenant=access.tenant.slug)
    if directory is not None:
        directory.changed(session, str(key_id), kind=API_KEY_CHANGES)
