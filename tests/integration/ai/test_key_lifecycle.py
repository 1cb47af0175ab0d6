"""A tenant's AI keys through data-key rotation and through purge (crypto-shredding)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from socialflow.ai.credentials import KEY_PURPOSE, key_record
from socialflow.ai.providers import Provider
from socialflow.db.session import unit_of_work
from socialflow.tenancy import services as tenancy_services
from socialflow.vault.keyring import VaultError
from socialflow.vault.service import SealedSecret, Vault
from tests.integration.ai.test_credentials import TENANT_KEY, _credentials
from tests.integration.tenancy_fixtures import Platform, World


def _sealed(pg: psycopg.Connection[Any], slug: str) -> tuple[bytes, int]:
    schema = "t_" + slug.replace("-", "_")
    sealed, version = pg.execute(
        f'SELECT sealed_key, key_version FROM "{schema}".ai_provider_keys '
        "WHERE provider = 'openai'"
    ).fetchone()  # type: ignore[misc]
    return bytes(sealed), version


async def test_rotating_a_tenants_data_key_reencrypts_its_keys(
    platform: Platform,
    world: World,
    pg: psycopg.Connection[Any],
    database_url: str,
    project_root: Path,
    tmp_path: Path,
) -> None:
    await platform.client.put(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai",
        json={"api_key": TENANT_KEY},
        headers=world.owner_a.headers,
    )
    before, version_before = _sealed(pg, world.tenant_a)
    # The CLI process must use the same master keys as the app (the test settings' dev ring).
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENV": "test",
        "DATA_DIR": str(platform.settings.data_dir),
    }
    result = subprocess.run(  # noqa: ASYNC221 - one short command
        [sys.executable, "-m", "socialflow", "vault", "rotate-tenant-key", world.tenant_a],
        env=env,
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    after, version_after = _sealed(pg, world.tenant_a)
    assert version_after == version_before + 1
    assert after != before
    found = await _credentials(platform.factory, platform.settings, world.tenant_a, Provider.OPENAI)
    assert found.api_key == TENANT_KEY  # type: ignore[attr-defined]


async def test_purging_a_tenant_makes_copies_of_its_secrets_unreadable(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    await platform.client.put(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai",
        json={"api_key": TENANT_KEY},
        headers=world.owner_a.headers,
    )
    backup, _ = _sealed(pg, world.tenant_a)  # what a database backup would hold
    tenant_id = pg.execute(
        "SELECT id FROM shared.tenants WHERE slug = %s", (world.tenant_a,)
    ).fetchone()[0]  # type: ignore[index]
    vault = Vault.from_settings(platform.settings)
    async with unit_of_work(platform.factory) as session:  # still readable before the purge
        opened = await vault.decrypt(
            session,
            tenant_id,
            KEY_PURPOSE,
            key_record(Provider.OPENAI),
            SealedSecret.from_bytes(backup),
        )
    assert opened == TENANT_KEY

    await platform.client.delete(f"/api/v1/tenants/{world.tenant_a}", headers=world.admin_x.headers)
    pg.execute("UPDATE shared.tenants SET purge_after = now() WHERE slug = %s", (world.tenant_a,))
    async with unit_of_work(platform.factory) as session:
        assert world.tenant_a in await tenancy_services.purge_expired(session, vault)

    fresh = Vault.from_settings(platform.settings)  # no cached key: as after a restart
    assert pg.execute(
        "SELECT count(*) FROM shared.tenant_data_keys WHERE tenant_id = %s", (tenant_id,)
    ).fetchone() == (0,)
    async with unit_of_work(platform.factory) as session:
        with pytest.raises(VaultError):
            await fresh.decrypt(
                session,
                tenant_id,
                KEY_PURPOSE,
                key_record(Provider.OPENAI),
                SealedSecret.from_bytes(backup),
            )
