"""Key rotation: master keys re-wrap data keys resumably; tenants get new data key versions."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.engine import libpq_url
from socialflow.db.session import unit_of_work
from socialflow.vault.keyring import KeyRing, VaultError
from socialflow.vault.rotation import rotate_master, rotate_tenant_key, vault_status
from socialflow.vault.service import SealedSecret, Vault
from tests.integration.vault import CountingKeys, make_tenants

Factory = async_sessionmaker[AsyncSession]
PURPOSE = "test.token"


@pytest.fixture
def clean_data_keys(pg: psycopg.Connection[Any]) -> None:
    """Master rotation scans every data key: start from none (other tests use other master keys)."""
    pg.execute("DELETE FROM shared.tenant_data_keys")


class Rings:
    """Two master keys and the key rings of each stage of a master key rotation."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.old_id, self.new_id = f"old-{tag}", f"new-{tag}"
        keys = {self.old_id: secrets.token_bytes(32), self.new_id: secrets.token_bytes(32)}
        self.old_only = KeyRing({self.old_id: keys[self.old_id]})
        self.both_old_active = KeyRing(keys, self.old_id)
        self.both_new_active = KeyRing(keys, self.new_id)
        self.new_only = KeyRing({self.new_id: keys[self.new_id]})


@pytest.fixture
def rings() -> Rings:
    return Rings()


async def seal_each(
    factory: Factory, vault: Vault, tenants: list[uuid.UUID], prefix: str
) -> dict[uuid.UUID, SealedSecret]:
    sealed = {}
    async with unit_of_work(factory) as session:
        for tenant in tenants:
            sealed[tenant] = await vault.encrypt(session, tenant, PURPOSE, "r", f"{prefix}{tenant}")
    return sealed


async def assert_all_open(
    factory: Factory, vault: Vault, sealed: dict[uuid.UUID, SealedSecret], prefix: str
) -> None:
    async with unit_of_work(factory) as session:
        for tenant, item in sealed.items():
            assert await vault.decrypt(session, tenant, PURPOSE, "r", item) == f"{prefix}{tenant}"


async def status(factory: Factory) -> dict[str, int]:
    async with unit_of_work(factory) as session:
        return await vault_status(session)


async def test_master_rotation_rewraps_every_data_key_and_the_old_key_can_go(
    session_factory: Factory, pg: psycopg.Connection[Any], rings: Rings, clean_data_keys: None
) -> None:
    tenants = make_tenants(pg, 5)
    # Stage 1: every process has both keys, the old one still active.
    sealed = await seal_each(session_factory, Vault(rings.both_old_active), tenants, "s-")
    assert await status(session_factory) == {rings.old_id: 5}
    # Stage 2: the new one is made active, then the data keys are re-wrapped.

    rotated = await rotate_master(session_factory, Vault(rings.both_new_active), batch_size=2)
    assert rotated == 5
    assert await status(session_factory) == {rings.new_id: 5}
    # Without the old master key at all, every secret still opens: nothing used it any more.
    await assert_all_open(session_factory, Vault(rings.new_only), sealed, "s-")
    assert await rotate_master(session_factory, Vault(rings.both_new_active)) == 0


async def test_an_interrupted_master_rotation_resumes_and_keeps_secrets_written_meanwhile(
    session_factory: Factory, pg: psycopg.Connection[Any], rings: Rings, clean_data_keys: None
) -> None:
    tenants = make_tenants(pg, 6)
    sealed = await seal_each(session_factory, Vault(rings.old_only), tenants[:5], "s-")

    failing = CountingKeys(rings.both_new_active)
    failing.fail_after_wraps = 2  # the first batch of 2 commits, the second dies midway
    with pytest.raises(RuntimeError, match="interrupted"):
        await rotate_master(session_factory, Vault(failing), batch_size=2)
    assert await status(session_factory) == {rings.old_id: 3, rings.new_id: 2}

    # The service runs on with both keys, the new one active: a tenant whose data key is not
    # re-wrapped yet and a tenant seen for the first time both get secrets.
    service = Vault(rings.both_new_active)
    not_yet = next(
        tenant
        for tenant in tenants[:5]
        if pg.execute(
            "SELECT master_key_id FROM shared.tenant_data_keys WHERE tenant_id = %s", (tenant,)
        ).fetchone()
        == (rings.old_id,)
    )
    meanwhile = await seal_each(session_factory, service, [not_yet, tenants[5]], "m-")
    assert await status(session_factory) == {rings.old_id: 3, rings.new_id: 3}

    assert await rotate_master(session_factory, Vault(rings.both_new_active), batch_size=2) == 3
    assert await status(session_factory) == {rings.new_id: 6}
    after = Vault(rings.new_only)
    await assert_all_open(session_factory, after, sealed, "s-")
    await assert_all_open(session_factory, after, meanwhile, "m-")


async def test_master_rotation_skips_a_data_key_another_transaction_holds(
    session_factory: Factory,
    pg: psycopg.Connection[Any],
    rings: Rings,
    clean_data_keys: None,
    database_url: str,
) -> None:
    tenants = make_tenants(pg, 3)
    await seal_each(session_factory, Vault(rings.old_only), tenants, "s-")
    with psycopg.connect(libpq_url(database_url)) as holder:
        holder.execute(
            "SELECT 1 FROM shared.tenant_data_keys WHERE tenant_id = %s FOR UPDATE", (tenants[0],)
        )
        # Bounded: a rotation that waited for the held row would never finish.
        rotated = await asyncio.wait_for(
            rotate_master(session_factory, Vault(rings.both_new_active)), timeout=30
        )
        assert rotated == 2
        holder.rollback()
    assert await status(session_factory) == {rings.old_id: 1, rings.new_id: 2}
    assert await rotate_master(session_factory, Vault(rings.both_new_active)) == 1


async def test_a_rotation_refuses_a_data_key_whose_master_key_is_gone(
    session_factory: Factory, pg: psycopg.Connection[Any], rings: Rings, clean_data_keys: None
) -> None:
    tenants = make_tenants(pg, 1)
    await seal_each(session_factory, Vault(rings.old_only), tenants, "s-")
    with pytest.raises(VaultError, match="not in the key ring"):
        await rotate_master(session_factory, Vault(rings.new_only))
    assert await status(session_factory) == {rings.old_id: 1}


# -- tenant data key rotation -----------------------------------------------------------------


class SecretStore:
    """Stands in for a feature's table of sealed secrets, and its re-encryption callback."""

    def __init__(self, vault: Vault, tenant: uuid.UUID) -> None:
        self.vault, self.tenant = vault, tenant
        self.rows: dict[str, SealedSecret] = {}
        self.calls: list[tuple[int, int]] = []
        self.fail = False

    async def reencrypt(self, session: AsyncSession, old: int, new: int) -> int:
        self.calls.append((old, new))
        count = 0
        for record, sealed in list(self.rows.items()):
            if sealed.key_version == old:
                self.rows[record] = await self.vault.reseal(
                    session, self.tenant, PURPOSE, record, sealed
                )
                count += 1
        if self.fail:
            raise RuntimeError("re-encryption failed (test)")
        return count


def versions(pg: psycopg.Connection[Any], tenant: uuid.UUID) -> list[int]:
    found = pg.execute(
        "SELECT version FROM shared.tenant_data_keys WHERE tenant_id = %s ORDER BY version",
        (tenant,),
    )
    return [row[0] for row in found.fetchall()]


async def test_tenant_key_rotation_reencrypts_then_retires_the_old_versions(
    session_factory: Factory, pg: psycopg.Connection[Any], rings: Rings
) -> None:
    tenant, other = make_tenants(pg, 2)
    vault = Vault(rings.old_only)
    store = SecretStore(vault, tenant)
    async with unit_of_work(session_factory) as session:
        for record in ("a", "b"):
            store.rows[record] = await vault.encrypt(session, tenant, PURPOSE, record, record * 20)
        await vault.encrypt(session, other, PURPOSE, "a", "other tenant")
        await rotate_tenant_key(session, vault, tenant, None)  # version 2, 1 kept
        store.rows["c"] = await vault.encrypt(session, tenant, PURPOSE, "c", "c" * 20)
    before = dict(store.rows)
    assert versions(pg, tenant) == [1, 2]

    async with unit_of_work(session_factory) as session:
        rotation = await rotate_tenant_key(session, vault, tenant, store.reencrypt)
    assert (rotation.new_version, rotation.retired_versions, rotation.reencrypted) == (3, (1, 2), 3)
    assert store.calls == [(1, 3), (2, 3)]
    assert versions(pg, tenant) == [3]
    assert versions(pg, other) == [1]
    fresh = Vault(rings.old_only)
    async with unit_of_work(session_factory) as session:
        for record, sealed in store.rows.items():
            assert sealed.key_version == 3
            assert await fresh.decrypt(session, tenant, PURPOSE, record, sealed) == record * 20
        assert (await vault.encrypt(session, tenant, PURPOSE, "d", "new")).key_version == 3
    # What was sealed under the retired versions is gone for good, in every process.
    for reader in (vault, fresh):
        async with unit_of_work(session_factory) as session:
            with pytest.raises(VaultError, match="does not exist"):
                await reader.decrypt(session, tenant, PURPOSE, "a", before["a"])


async def test_tenant_key_rotation_without_reencryption_keeps_old_secrets_open(
    session_factory: Factory, pg: psycopg.Connection[Any], rings: Rings
) -> None:
    (tenant,) = make_tenants(pg, 1)
    vault = Vault(rings.old_only)
    async with unit_of_work(session_factory) as session:
        old = await vault.encrypt(session, tenant, PURPOSE, "a", "sealed under one")
        rotation = await rotate_tenant_key(session, vault, tenant, None)
    assert (rotation.new_version, rotation.retired_versions) == (2, ())
    async with unit_of_work(session_factory) as session:
        new = await vault.encrypt(session, tenant, PURPOSE, "b", "sealed under two")
    assert (old.key_version, new.key_version) == (1, 2)
    fresh = Vault(rings.old_only)
    async with unit_of_work(session_factory) as session:
        assert await fresh.decrypt(session, tenant, PURPOSE, "a", old) == "sealed under one"
        assert await fresh.decrypt(session, tenant, PURPOSE, "b", new) == "sealed under two"


async def test_a_failed_reencryption_rolls_back_to_the_old_key(
    session_factory: Factory, pg: psycopg.Connection[Any], rings: Rings
) -> None:
    (tenant,) = make_tenants(pg, 1)
    vault = Vault(rings.old_only)
    store = SecretStore(vault, tenant)
    async with unit_of_work(session_factory) as session:
        store.rows["a"] = await vault.encrypt(session, tenant, PURPOSE, "a", "still version one")
    original = dict(store.rows)
    store.fail = True
    with pytest.raises(RuntimeError, match="re-encryption failed"):
        async with unit_of_work(session_factory) as session:
            await rotate_tenant_key(session, vault, tenant, store.reencrypt)
    assert versions(pg, tenant) == [1]
    async with unit_of_work(session_factory) as session:
        assert await vault.decrypt(session, tenant, PURPOSE, "a", original["a"]) == (
            "still version one"
        )
        assert (await vault.encrypt(session, tenant, PURPOSE, "b", "x")).key_version == 1


@pytest.fixture
def observer(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


async def test_sealing_waits_for_a_tenant_key_rotation_in_flight(
    session_factory: Factory,
    pg: psycopg.Connection[Any],
    rings: Rings,
    observer: psycopg.Connection[Any],
) -> None:
    (tenant,) = make_tenants(pg, 1)
    vault = Vault(rings.old_only)
    store = SecretStore(vault, tenant)
    async with unit_of_work(session_factory) as session:
        store.rows["a"] = await vault.encrypt(session, tenant, PURPOSE, "a", "first")
    reencrypted, release = asyncio.Event(), asyncio.Event()

    async def reencrypt_then_wait(session: AsyncSession, old: int, new: int) -> int:
        count = await store.reencrypt(session, old, new)
        reencrypted.set()
        await release.wait()
        return count

    async def rotate() -> None:
        async with unit_of_work(session_factory) as session:
            await rotate_tenant_key(session, vault, tenant, reencrypt_then_wait)

    async def seal_meanwhile() -> SealedSecret:
        async with unit_of_work(session_factory) as session:
            await session.execute(text("SET LOCAL application_name = 'vault-sealer'"))
            return await vault.encrypt(session, tenant, PURPOSE, "b", "sealed meanwhile")

    rotation = asyncio.create_task(rotate())
    await asyncio.wait_for(reencrypted.wait(), timeout=30)
    sealer = asyncio.create_task(seal_meanwhile())
    # The sealer must block on the tenant's key lock while the rotation is open.
    async with asyncio.timeout(30):
        while not observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'vault-sealer' "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchone():
            assert not sealer.done(), "sealed while the tenant's key was being rotated"
            await asyncio.sleep(0.01)
    release.set()
    await rotation
    sealed = await sealer
    assert sealed.key_version == 2
    assert versions(pg, tenant) == [2]
    async with unit_of_work(session_factory) as session:
        fresh = Vault(rings.old_only)
        assert await fresh.decrypt(session, tenant, PURPOSE, "b", sealed) == "sealed meanwhile"
        assert await fresh.decrypt(session, tenant, PURPOSE, "a", store.rows["a"]) == "first"
