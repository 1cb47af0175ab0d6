"""Key rotation: re-wrapping data keys under a new master key, new data key versions per tenant."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.session import unit_of_work
from socialflow.vault.keyring import VaultError, WrappedKey
from socialflow.vault.service import DataKeyRow, Vault, lock_tenant_keys

log = structlog.get_logger(__name__)

# Re-encrypts a tenant's secrets from data key version `old` to `new`; returns how many.
Reencrypt = Callable[[AsyncSession, int, int], Awaitable[int]]

# Rows another transaction holds (a concurrent run, a tenant rotation) are skipped, not waited
# for: concurrent runs share the work, and a run never stalls behind the service.
_CLAIM = text("""
SELECT tenant_id, version, master_key_id, wrapped_key FROM shared.tenant_data_keys
WHERE master_key_id <> :active
LIMIT :limit
FOR UPDATE SKIP LOCKED
""")
_REWRAP = text("""
UPDATE shared.tenant_data_keys SET master_key_id = :master_key_id, wrapped_key = :wrapped_key
WHERE tenant_id = :tenant_id AND version = :version
""")


async def rotate_master(
    session_factory: async_sessionmaker[AsyncSession], vault: Vault, batch_size: int = 100
) -> int:
    """Re-wrap every data key not wrapped by the active master key; returns how many.

    Each batch is its own transaction, so an interrupted run keeps what it committed and a
    re-run picks up the rest (re-wrapping a row is idempotent: a row already under the active
    key is no longer selected). The data keys themselves do not change, so secrets need no
    re-encryption and the service keeps running throughout. Rows locked by another transaction
    at the time are left for the next run; `vault_status` shows what still uses an old key.
    Start it once every process has the new active key, or rows they create meanwhile under
    the old key need another run.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    active = vault.master_keys.active_key_id
    total = 0
    while True:
        async with unit_of_work(session_factory) as session:
            claimed = (await session.execute(_CLAIM, {"active": active, "limit": batch_size})).all()
            updates = []
            for found in claimed:
                row = DataKeyRow(
                    found.tenant_id,
                    found.version,
                    WrappedKey(found.master_key_id, found.wrapped_key),
                )
                wrapped = await vault.rewrap(row)
                if wrapped.master_key_id != active:
                    raise VaultError(
                        f"re-wrapping produced {wrapped.master_key_id!r}, not {active!r}"
                    )
                updates.append(
                    {
                        "tenant_id": row.tenant_id,
                        "version": row.version,
                        "master_key_id": wrapped.master_key_id,
                        "wrapped_key": wrapped.blob,
                    }
                )
            if updates:
                await session.execute(_REWRAP, updates)
        if not claimed:
            break
        total += len(claimed)
        for tenant_id in {found.tenant_id for found in claimed}:
            vault.invalidate(tenant_id)
        log.info("vault.master_rotation_batch", rewrapped=len(claimed), total=total, to=active)
    log.info("vault.master_rotation_done", rewrapped=total, to=active)
    return total


@dataclass(frozen=True)
class TenantKeyRotation:
    tenant_id: uuid.UUID
    new_version: int
    retired_versions: tuple[int, ...]  # deleted after re-encryption; empty without a callback
    reencrypted: int


async def rotate_tenant_key(
    session: AsyncSession,
    vault: Vault,
    tenant_id: uuid.UUID,
    reencrypt: Reencrypt | None,
) -> TenantKeyRotation:
    """Give the tenant a new data key version, in the caller's transaction.

    New secrets are sealed under the new version from the commit on. With `reencrypt`, it is
    called as `reencrypt(session, old, new)` for each older version (e.g. by `Vault.reseal` on
    each secret of that version), then the older versions are deleted: until then they still
    open what they sealed, and if the callback fails the transaction rolls back whole. Without
    it, the older versions stay, so existing secrets keep opening.

    Sealing for the tenant waits while this runs (the tenant's key lock), so no secret is
    sealed under a version being retired. A callback must see every secret of the tenant: it
    runs in this session, so the caller enters the tenant's schema (or the callback does).
    """
    await lock_tenant_keys(session, tenant_id, exclusive=True)
    try:
        versions = list(
            (
                await session.execute(
                    text(
                        "SELECT version FROM shared.tenant_data_keys WHERE tenant_id = :tenant "
                        "ORDER BY version FOR UPDATE"
                    ),
                    {"tenant": tenant_id},
                )
            ).scalars()
        )
        new_version = (versions[-1] + 1) if versions else 1
        if not await vault.create_data_key(session, tenant_id, new_version):
            raise VaultError(f"tenant {tenant_id} does not exist or is purged: no data key")
        if reencrypt is None or not versions:
            log.info("vault.tenant_key_rotated", tenant_id=str(tenant_id), version=new_version)
            return TenantKeyRotation(tenant_id, new_version, (), 0)
        reencrypted = 0
        for old in versions:
            reencrypted += await reencrypt(session, old, new_version)
        await session.execute(
            text(
                "DELETE FROM shared.tenant_data_keys WHERE tenant_id = :tenant "
                "AND version < :version"
            ),
            {"tenant": tenant_id, "version": new_version},
        )
    except BaseException:
        # The transaction will roll back: forget the new version's key cached on creation.
        vault.invalidate(tenant_id)
        raise
    vault.invalidate(tenant_id)
    log.info(
        "vault.tenant_key_rotated",
        tenant_id=str(tenant_id),
        version=new_version,
        retired=versions,
        reencrypted=reencrypted,
    )
    return TenantKeyRotation(tenant_id, new_version, tuple(versions), reencrypted)


async def vault_status(session: AsyncSession) -> dict[str, int]:
    """How many data keys each master key wraps: an old master key can be retired at 0."""
    counts = await session.execute(
        text(
            "SELECT master_key_id, count(*) FROM shared.tenant_data_keys "
            "GROUP BY master_key_id ORDER BY master_key_id"
        )
    )
    return {master_key_id: int(count) for master_key_id, count in counts.all()}
