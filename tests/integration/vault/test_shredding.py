"""Crypto-shredding: once a tenant's data keys are deleted, no copy of its secrets opens."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.session import unit_of_work
from socialflow.vault.keyring import KeyRing
from socialflow.vault.rotation import rotate_tenant_key
from socialflow.vault.service import SealedSecret, Vault, VaultError, shred_tenant_keys
from tests.integration.vault import make_tenants, ring

Factory = async_sessionmaker[AsyncSession]
PURPOSE = "test.shred"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keyring() -> KeyRing:
    return ring(f"shred-{uuid.uuid4().hex[:8]}")[0]


async def seal(factory: Factory, vault: Vault, tenant: uuid.UUID, plaintext: str) -> bytes:
    async with unit_of_work(factory) as session:
        return (await vault.encrypt(session, tenant, PURPOSE, "r", plaintext)).to_bytes()


async def open_(factory: Factory, vault: Vault, tenant: uuid.UUID, sealed: bytes) -> str:
    async with unit_of_work(factory) as session:
        return await vault.decrypt(session, tenant, PURPOSE, "r", sealed)


def data_keys(pg: psycopg.Connection[Any], tenant: uuid.UUID) -> int:
    row = pg.execute(
        "SELECT count(*) FROM shared.tenant_data_keys WHERE tenant_id = %s", (tenant,)
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_after_shredding_no_earlier_copy_of_a_secret_opens(
    session_factory: Factory, keyring: KeyRing, pg: psycopg.Connection[Any]
) -> None:
    tenant, other = make_tenants(pg, 2)
    vault = Vault(keyring)
    backup = await seal(session_factory, vault, tenant, "sk-to-be-shredded")
    other_secret = await seal(session_factory, vault, other, "sk-of-another-tenant")
    async with unit_of_work(session_factory) as session:
        await rotate_tenant_key(session, vault, tenant, None)  # versions 1 and 2 both go
    newer_backup = await seal(session_factory, vault, tenant, "sk-under-version-two")
    assert await open_(session_factory, vault, tenant, backup) == "sk-to-be-shredded"

    async with unit_of_work(session_factory) as session:
        assert await vault.shred_tenant(session, tenant) == 2
    assert data_keys(pg, tenant) == 0
    # Neither this process (whose cache held the keys) nor a fresh one opens the copies.
    for reader in (vault, Vault(keyring)):
        for copy in (backup, newer_backup):
            with pytest.raises(VaultError, match="rotated away or shredded"):
                await open_(session_factory, reader, tenant, copy)
    assert await open_(session_factory, vault, other, other_secret) == "sk-of-another-tenant"

    # A tenant still active after shredding gets a new key: the old copies still do not open.
    fresh_secret = await seal(session_factory, vault, tenant, "sk-after")
    assert SealedSecret.from_bytes(fresh_secret).key_version == 1
    with pytest.raises(VaultError, match="altered"):
        await open_(session_factory, Vault(keyring), tenant, backup)


async def test_shredding_without_a_vault_reaches_other_processes_within_the_cache_ttl(
    session_factory: Factory, keyring: KeyRing, pg: psycopg.Connection[Any]
) -> None:
    (tenant,) = make_tenants(pg, 1)
    clock = FakeClock()
    other_process = Vault(keyring, cache_ttl_s=30, clock=clock)
    sealed = await seal(session_factory, other_process, tenant, "sk-cached-elsewhere")
    assert await open_(session_factory, other_process, tenant, sealed) == "sk-cached-elsewhere"

    # What tenant purging calls: no Vault, no cache of its own.
    async with unit_of_work(session_factory) as session:
        assert await shred_tenant_keys(session, tenant) == 1
    assert data_keys(pg, tenant) == 0
    clock.now += 31
    with pytest.raises(VaultError, match="rotated away or shredded"):
        await open_(session_factory, other_process, tenant, sealed)


async def test_a_rolled_back_shred_keeps_the_keys(
    session_factory: Factory, keyring: KeyRing, pg: psycopg.Connection[Any]
) -> None:
    (tenant,) = make_tenants(pg, 1)
    vault = Vault(keyring)
    sealed = await seal(session_factory, vault, tenant, "sk-survives")
    async with session_factory() as session:
        await session.begin()
        await vault.shred_tenant(session, tenant)
        await session.rollback()
    assert data_keys(pg, tenant) == 1
    assert await open_(session_factory, vault, tenant, sealed) == "sk-survives"
