"""The KMS master key against a real (moto) KMS server on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.session import unit_of_work
from socialflow.settings import Settings
from socialflow.vault.keyring import (
    KeyRing,
    KmsMasterKey,
    MasterKeyChain,
    VaultError,
    WrappedKey,
    master_keys_from_settings,
    new_master_key,
)
from socialflow.vault.rotation import rotate_master, vault_status
from socialflow.vault.service import Vault, data_key_context
from tests.integration.moto_server import moto_endpoint
from tests.integration.vault import make_tenants

Factory = async_sessionmaker[AsyncSession]
PURPOSE = "test.kms"


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    with moto_endpoint() as endpoint:
        yield endpoint


def create_kms_key(endpoint: str) -> str:
    client = boto3.client("kms", region_name="us-east-1", endpoint_url=endpoint)
    return client.create_key(Description="socialflow vault test")["KeyMetadata"]["KeyId"]


@pytest.fixture
def kms_settings(settings: Settings, kms_endpoint: str) -> Settings:
    return settings.model_copy(
        update={
            "vault_kms_key_id": create_kms_key(kms_endpoint),
            "vault_kms_endpoint_url": kms_endpoint,
            "vault_kms_region": "us-east-1",
        }
    )


async def test_kms_wraps_data_keys_bound_to_tenant_and_version(
    session_factory: Factory, kms_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    provider = master_keys_from_settings(kms_settings)
    assert isinstance(provider, KmsMasterKey)
    vault = Vault(provider)
    tenant, other = make_tenants(pg, 2)
    async with unit_of_work(session_factory) as session:
        sealed = await vault.encrypt(session, tenant, PURPOSE, "r1", "sk-kms-protected")
    ((master_key_id, blob),) = pg.execute(
        "SELECT master_key_id, wrapped_key FROM shared.tenant_data_keys WHERE tenant_id = %s",
        (tenant,),
    ).fetchall()
    assert master_key_id == f"kms:{kms_settings.vault_kms_key_id}"

    # Another process (cold cache) opens it through KMS.
    fresh = Vault(KmsMasterKey.from_settings(kms_settings))
    async with unit_of_work(session_factory) as session:
        assert await fresh.decrypt(session, tenant, PURPOSE, "r1", sealed) == "sk-kms-protected"

    wrapped = WrappedKey(master_key_id, bytes(blob))
    data_key = provider.unwrap(wrapped, data_key_context(tenant, 1))
    assert len(data_key) == 32
    # KMS enforces the EncryptionContext: the wrapped key of one tenant/version opens for no other.
    for context in (data_key_context(other, 1), data_key_context(tenant, 2)):
        with pytest.raises(VaultError, match="InvalidCiphertextException") as raised:
            provider.unwrap(wrapped, context)
        assert data_key.hex() not in str(raised.value)


async def test_an_unreachable_kms_is_a_vault_error(kms_settings: Settings) -> None:
    # Port 9 on loopback (discard): nothing listens, so the connection is refused at once.
    unreachable = KmsMasterKey(
        kms_settings.vault_kms_key_id or "", endpoint_url="http://127.0.0.1:9"
    )
    with pytest.raises(VaultError, match="unreachable"):
        unreachable.wrap(secrets.token_bytes(32), {"tenant_id": "t", "key_version": "1"})


async def test_data_keys_move_from_the_key_ring_to_kms(
    session_factory: Factory, kms_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    pg.execute("DELETE FROM shared.tenant_data_keys")  # master rotation scans every data key
    ring_key = new_master_key()
    ring_settings = kms_settings.model_copy(
        update={"vault_kms_key_id": None, "vault_master_keys": {"ring-1": SecretStr(ring_key)}}
    )
    ring_vault = Vault(master_keys_from_settings(ring_settings))
    assert isinstance(ring_vault.master_keys, KeyRing)
    tenants = make_tenants(pg, 3)
    sealed = {}
    async with unit_of_work(session_factory) as session:
        for tenant in tenants:
            sealed[tenant] = await ring_vault.encrypt(session, tenant, PURPOSE, "r", str(tenant))

    # Both configured: KMS becomes active and the ring still opens the keys it wrapped.
    bridge_settings = kms_settings.model_copy(
        update={"vault_master_keys": {"ring-1": SecretStr(ring_key)}}
    )
    bridge = Vault(master_keys_from_settings(bridge_settings))
    assert isinstance(bridge.master_keys, MasterKeyChain)
    assert await rotate_master(session_factory, bridge, batch_size=2) == 3
    kms_id = f"kms:{kms_settings.vault_kms_key_id}"
    async with unit_of_work(session_factory) as session:
        assert await vault_status(session) == {kms_id: 3}

    kms_only = Vault(master_keys_from_settings(kms_settings))
    async with unit_of_work(session_factory) as session:
        for tenant, item in sealed.items():
            assert await kms_only.decrypt(session, tenant, PURPOSE, "r", item) == str(tenant)


async def test_a_new_kms_key_takes_over_from_the_previous_one(
    session_factory: Factory,
    kms_settings: Settings,
    kms_endpoint: str,
    pg: psycopg.Connection[Any],
) -> None:
    pg.execute("DELETE FROM shared.tenant_data_keys")
    (tenant,) = make_tenants(pg, 1)
    before = Vault(master_keys_from_settings(kms_settings))
    async with unit_of_work(session_factory) as session:
        sealed = await before.encrypt(session, tenant, PURPOSE, "r", "moves between KMS keys")
    new_settings = kms_settings.model_copy(
        update={"vault_kms_key_id": create_kms_key(kms_endpoint)}
    )
    after = Vault(master_keys_from_settings(new_settings))
    assert await rotate_master(session_factory, after) == 1
    async with unit_of_work(session_factory) as session:
        assert await vault_status(session) == {f"kms:{new_settings.vault_kms_key_id}": 1}
        fresh = Vault(master_keys_from_settings(new_settings))
        assert await fresh.decrypt(session, tenant, PURPOSE, "r", sealed) == (
            "moves between KMS keys"
        )
