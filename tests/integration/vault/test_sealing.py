"""Sealing and opening secrets: bound to tenant, purpose and record; tamper-evident; quiet."""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.session import unit_of_work
from socialflow.vault.keyring import KeyRing, VaultError, WrappedKey
from socialflow.vault.service import SealedSecret, Vault, data_key_context
from tests.integration.vault import CountingKeys, make_tenants, ring
from tests.log_capture import ProcessOutput, process_output_fixture  # noqa: F401

Factory = async_sessionmaker[AsyncSession]
PURPOSE = "test.api_key"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tenants(pg: psycopg.Connection[Any]) -> list[uuid.UUID]:
    return make_tenants(pg, 3)


@pytest.fixture
def keyring() -> tuple[KeyRing, dict[str, bytes]]:
    return ring(f"ring-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def vault(keyring: tuple[KeyRing, dict[str, bytes]]) -> Vault:
    return Vault(keyring[0])


async def seal(
    factory: Factory,
    vault: Vault,
    tenant: uuid.UUID,
    record: str,
    plaintext: str,
    purpose: str = PURPOSE,
) -> SealedSecret:
    async with unit_of_work(factory) as session:
        return await vault.encrypt(session, tenant, purpose, record, plaintext)


async def open_(
    factory: Factory,
    vault: Vault,
    tenant: uuid.UUID,
    record: str,
    sealed: SealedSecret | bytes,
    purpose: str = PURPOSE,
) -> str:
    async with unit_of_work(factory) as session:
        return await vault.decrypt(session, tenant, purpose, record, sealed)


def data_key_rows(pg: psycopg.Connection[Any], tenant: uuid.UUID) -> list[tuple[Any, ...]]:
    return pg.execute(
        "SELECT version, master_key_id, wrapped_key FROM shared.tenant_data_keys "
        "WHERE tenant_id = %s ORDER BY version",
        (tenant,),
    ).fetchall()


async def test_a_secret_round_trips_and_the_tenant_gets_one_data_key(
    session_factory: Factory,
    vault: Vault,
    keyring: tuple[KeyRing, dict[str, bytes]],
    tenants: list[uuid.UUID],
    pg: psycopg.Connection[Any],
) -> None:
    tenant = tenants[0]
    assert data_key_rows(pg, tenant) == []
    first = await seal(session_factory, vault, tenant, "r1", "sk-first-secret-value")
    second = await seal(session_factory, vault, tenant, "r2", "sk-second-secret-value")
    assert first.key_version == second.key_version == 1
    assert b"sk-first" not in first.to_bytes()

    # A vault with a cold cache (another process) opens them from the stored data key.
    fresh = Vault(keyring[0])
    assert await open_(session_factory, fresh, tenant, "r1", first.to_bytes()) == (
        "sk-first-secret-value"
    )
    assert await open_(session_factory, vault, tenant, "r2", second) == "sk-second-secret-value"
    rows = data_key_rows(pg, tenant)
    assert [(version, master) for version, master, _ in rows] == [(1, keyring[0].active_key_id)]
    # The same plaintext seals differently each time (fresh nonce).
    again = await seal(session_factory, vault, tenant, "r1", "sk-first-secret-value")
    assert again.ciphertext != first.ciphertext
    assert await open_(session_factory, fresh, tenant, "r1", again) == "sk-first-secret-value"


async def test_concurrent_first_uses_agree_on_one_data_key(
    session_factory: Factory,
    keyring: tuple[KeyRing, dict[str, bytes]],
    tenants: list[uuid.UUID],
    pg: psycopg.Connection[Any],
) -> None:
    tenant, parties = tenants[0], 4
    keys = CountingKeys(keyring[0])
    # Every sealer must have found no data key and generated its own before any inserts.
    keys.hold_wraps(parties)
    vault = Vault(keys)
    sealed = await asyncio.gather(
        *(seal(session_factory, vault, tenant, f"r{i}", f"secret-{i}") for i in range(parties))
    )
    assert keys.wraps == parties
    assert len(data_key_rows(pg, tenant)) == 1
    fresh = Vault(keyring[0])
    for i, item in enumerate(sealed):
        assert await open_(session_factory, fresh, tenant, f"r{i}", item) == f"secret-{i}"


async def test_a_tampered_secret_is_refused(
    session_factory: Factory,
    vault: Vault,
    keyring: tuple[KeyRing, dict[str, bytes]],
    tenants: list[uuid.UUID],
) -> None:
    sealed = (await seal(session_factory, vault, tenants[0], "r1", "hunter2-but-long")).to_bytes()
    header = 5
    for position in (header, header + 11, header + 12, len(sealed) - 1):  # nonce, body, tag
        tampered = bytearray(sealed)
        tampered[position] ^= 0x80
        for reader in (vault, Vault(keyring[0])):
            with pytest.raises(VaultError, match="altered"):
                await open_(session_factory, reader, tenants[0], "r1", bytes(tampered))
    with pytest.raises(VaultError):
        await open_(session_factory, vault, tenants[0], "r1", sealed[:-1])
    assert await open_(session_factory, vault, tenants[0], "r1", sealed) == "hunter2-but-long"


async def test_a_secret_opens_only_for_its_tenant_purpose_and_record(
    session_factory: Factory, vault: Vault, tenants: list[uuid.UUID]
) -> None:
    tenant_a, tenant_b, tenant_c = tenants
    sealed = await seal(session_factory, vault, tenant_a, "r1", "sk-bound-to-one-row")
    await seal(session_factory, vault, tenant_b, "r1", "sk-b-has-a-key-too")
    await seal(session_factory, vault, tenant_a, "r2", "sk-a-second-row", purpose="other.purpose")

    with pytest.raises(VaultError, match="another tenant, purpose or record"):
        await open_(session_factory, vault, tenant_b, "r1", sealed)
    with pytest.raises(VaultError, match="does not exist"):  # tenant C has no data key at all
        await open_(session_factory, vault, tenant_c, "r1", sealed)
    with pytest.raises(VaultError, match="another tenant, purpose or record"):
        await open_(session_factory, vault, tenant_a, "r2", sealed)
    with pytest.raises(VaultError, match="another tenant, purpose or record"):
        await open_(session_factory, vault, tenant_a, "r1", sealed, purpose="other.purpose")
    assert await open_(session_factory, vault, tenant_a, "r1", sealed) == "sk-bound-to-one-row"


async def test_a_secret_relabelled_with_another_key_version_is_refused(
    session_factory: Factory, vault: Vault, tenants: list[uuid.UUID], pg: psycopg.Connection[Any]
) -> None:
    from socialflow.vault.rotation import rotate_tenant_key

    sealed = await seal(session_factory, vault, tenants[0], "r1", "sk-version-one")
    async with unit_of_work(session_factory) as session:
        await rotate_tenant_key(session, vault, tenants[0], None)
    assert [row[0] for row in data_key_rows(pg, tenants[0])] == [1, 2]
    relabelled = SealedSecret(2, sealed.ciphertext)
    with pytest.raises(VaultError, match="altered"):
        await open_(session_factory, vault, tenants[0], "r1", relabelled)


async def test_data_keys_are_cached_for_the_configured_time(
    session_factory: Factory, keyring: tuple[KeyRing, dict[str, bytes]], tenants: list[uuid.UUID]
) -> None:
    clock = FakeClock()
    keys = CountingKeys(keyring[0])
    vault = Vault(keys, cache_ttl_s=60, clock=clock)
    sealed = await seal(session_factory, vault, tenants[0], "r1", "sk-cached-key")
    for _ in range(3):
        assert await open_(session_factory, vault, tenants[0], "r1", sealed) == "sk-cached-key"
        await seal(session_factory, vault, tenants[0], "r2", "sk-other")
    assert (keys.wraps, keys.unwraps) == (1, 0)
    clock.now += 61
    assert await open_(session_factory, vault, tenants[0], "r1", sealed) == "sk-cached-key"
    assert await open_(session_factory, vault, tenants[0], "r1", sealed) == "sk-cached-key"
    assert keys.unwraps == 1

    uncached_keys = CountingKeys(keyring[0])
    uncached = Vault(uncached_keys, cache_ttl_s=0)
    for _ in range(2):
        assert await open_(session_factory, uncached, tenants[0], "r1", sealed) == "sk-cached-key"
    assert uncached_keys.unwraps == 2


async def test_a_key_cached_before_another_process_replaced_it_is_not_trusted(
    session_factory: Factory, keyring: tuple[KeyRing, dict[str, bytes]], tenants: list[uuid.UUID]
) -> None:
    this_process, other_process = Vault(keyring[0]), Vault(keyring[0])
    old = await seal(session_factory, this_process, tenants[0], "r1", "sk-before-shredding")
    async with unit_of_work(session_factory) as session:
        await other_process.shred_tenant(session, tenants[0])
    new = await seal(session_factory, other_process, tenants[0], "r1", "sk-after-shredding")
    assert new.key_version == old.key_version == 1
    # This process still caches the shredded version 1; the stored row is another key.
    assert await open_(session_factory, this_process, tenants[0], "r1", new) == (
        "sk-after-shredding"
    )
    sealed_here = await seal(session_factory, this_process, tenants[0], "r2", "sk-sealed-here")
    assert await open_(session_factory, Vault(keyring[0]), tenants[0], "r2", sealed_here) == (
        "sk-sealed-here"
    )


async def test_a_rolled_back_first_key_leaves_nothing_behind(
    session_factory: Factory,
    vault: Vault,
    keyring: tuple[KeyRing, dict[str, bytes]],
    tenants: list[uuid.UUID],
    pg: psycopg.Connection[Any],
) -> None:
    async with session_factory() as session:
        await session.begin()
        await vault.encrypt(session, tenants[0], PURPOSE, "r1", "sk-never-stored")
        await session.rollback()
    assert data_key_rows(pg, tenants[0]) == []
    # Another process creates the tenant's real version 1; this one's cached key is stale.
    other = await seal(session_factory, Vault(keyring[0]), tenants[0], "r1", "sk-other-process")
    assert await open_(session_factory, vault, tenants[0], "r1", other) == "sk-other-process"


async def test_no_data_key_for_a_purged_or_unknown_tenant(
    session_factory: Factory, vault: Vault, tenants: list[uuid.UUID], pg: psycopg.Connection[Any]
) -> None:
    pg.execute("UPDATE shared.tenants SET status = 'purged' WHERE id = %s", (tenants[0],))
    with pytest.raises(VaultError, match="purged"):
        await seal(session_factory, vault, tenants[0], "r1", "sk-too-late")
    with pytest.raises(VaultError, match="purged"):
        await seal(session_factory, vault, uuid.uuid4(), "r1", "sk-nobody")
    assert data_key_rows(pg, tenants[0]) == []


async def test_no_log_line_or_error_reveals_a_plaintext_or_a_key(
    session_factory: Factory,
    vault: Vault,
    keyring: tuple[KeyRing, dict[str, bytes]],
    tenants: list[uuid.UUID],
    pg: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
    process_output: ProcessOutput,
) -> None:
    caplog.set_level(logging.DEBUG)
    plaintext = f"sk-live-{uuid.uuid4().hex}"
    tenant_a, tenant_b, _ = tenants
    sealed = await seal(session_factory, vault, tenant_a, "r1", plaintext)
    assert await open_(session_factory, Vault(keyring[0]), tenant_a, "r1", sealed) == plaintext
    await seal(session_factory, vault, tenant_b, "r1", "sk-b")

    errors: list[BaseException] = []
    tampered = bytearray(sealed.to_bytes())
    tampered[-3] ^= 1
    for tenant, record, data in (
        (tenant_a, "r1", bytes(tampered)),
        (tenant_b, "r1", sealed.to_bytes()),
        (tenant_a, "r9", sealed.to_bytes()),
    ):
        with pytest.raises(VaultError) as raised:
            await open_(session_factory, vault, tenant, record, data)
        errors.append(raised.value)
    ((_, master_key_id, blob),) = data_key_rows(pg, tenant_a)
    data_key = keyring[0].unwrap(WrappedKey(master_key_id, blob), data_key_context(tenant_a, 1))
    async with unit_of_work(session_factory) as session:
        await vault.shred_tenant(session, tenant_a)
    with pytest.raises(VaultError) as raised:
        await open_(session_factory, vault, tenant_a, "r1", sealed)
    errors.append(raised.value)

    master_key = keyring[1][master_key_id]
    forbidden = [plaintext]
    for key in (data_key, master_key):
        forbidden += [key.hex(), base64.b64encode(key).decode(), repr(key)[2:-1]]
    lines = [record.getMessage() for record in caplog.records] + [caplog.text]
    vault_lines = [line for line in lines if "vault." in line]
    assert any("data_key_created" in line for line in vault_lines)
    assert any("secret_refused" in line for line in vault_lines)
    # The same lines reached the process's stderr, which is checked too.
    process_output.assert_logged("vault.data_key_created")
    process_output.assert_logged("vault.secret_refused")
    lines.append(process_output.everything())
    texts = lines + ["".join(traceback.format_exception(error)) for error in errors]
    texts += [repr(error) for error in errors]
    for text in texts:
        for secret in forbidden:
            assert secret not in text
