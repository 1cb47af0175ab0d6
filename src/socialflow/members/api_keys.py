"""Tenant API keys: the secret is shown once and stored as a hash. Never commits."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.permissions import Role
from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.identity.auth import API_KEY_PREFIX
from socialflow.identity.tokens import hash_token
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.members.events import ApiKeyCreated, ApiKeyRevoked
from socialflow.members.services import check_grant

COLUMNS = "id, name, prefix, role, created_at, expires_at, last_used_at, revoked_at"


async def create_key(
    session: AsyncSession,
    access: TenantAccess,
    *,
    name: str,
    role: Role,
    expires_at: datetime | None,
) -> dict[str, Any]:
    assert access.role is not None
    check_grant(access.role, None, role)
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= datetime.now(UTC)):
        raise Problem(
            422, "validation-error", "expires_at must be a future time with a time zone.",
            errors=[{"field": "expires_at", "message": "future, timezone-aware"}],
        )  # fmt: skip
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = uuid.uuid4()
    row = (
        await session.execute(
            text(
                "INSERT INTO shared.api_keys (id, tenant_id, name, prefix, key_hash, role, "  # noqa: S608
                "created_by, expires_at) VALUES (:id, :t, :name, :prefix, :hash, :role, :by, "
                f":expires) RETURNING {COLUMNS}"
            ),
            {"id": key_id, "t": access.tenant.id, "name": name, "prefix": secret[:12],
             "hash": hash_token(secret), "role": role.value, "by": access.principal.user_id,
             "expires": expires_at},
        )
    ).one()  # fmt: skip
    created = ApiKeyCreated(id=key_id, name=name, prefix=secret[:12], role=role.value)
    await record_change(session, access.principal, created, tenant=access.tenant.slug)
    return {**dict(row._mapping), "key": secret}


async def list_keys(
    session: AsyncSession, access: TenantAccess, page: PageRequest
) -> list[dict[str, Any]]:
    """The tenant's keys by creation (then id); one row more than the page."""
    after_at, after_id = page.after if page.after else (None, None)
    rows = await session.execute(
        text(
            f"SELECT {COLUMNS} FROM shared.api_keys WHERE tenant_id = :t "  # noqa: S608
            "AND (CAST(:after_at AS timestamptz) IS NULL OR (created_at, id) > "
            "     (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))) "
            "ORDER BY created_at, id LIMIT :limit"
        ),
        {"t": access.tenant.id, "after_at": after_at, "after_id": after_id,
         "limit": page.limit + 1},
    )  # fmt: skip
    return [dict(r._mapping) for r in rows]


async def revoke_key(session: AsyncSession, access: TenantAccess, key_id: uuid.UUID) -> None:
    revoked = await session.execute(
        text(
            "UPDATE shared.api_keys SET revoked_at = now() WHERE id = :id AND tenant_id = :t "
            "AND revoked_at IS NULL RETURNING name, role"
        ),
        {"id": key_id, "t": access.tenant.id},
    )
    row = revoked.one_or_none()
    if row is None:
        raise Problem(404, "not-found", "No such active API key.")
    revoked_key = ApiKeyRevoked(id=key_id, name=row.name, role=row.role)
    await record_change(session, access.principal, revoked_key, tenant=access.tenant.slug)
