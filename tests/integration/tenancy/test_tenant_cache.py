"""The tenant cache: a change applies in every API process at once, and never re-caches the
row it replaced."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.access.directory import TenantDirectory
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess
from socialflow.app import create_app
from socialflow.db.session import unit_of_work
from socialflow.settings import Settings
from socialflow.tenancy import services
from tests.integration.tenancy_fixtures import Platform, World


async def test_a_suspension_made_in_one_api_process_applies_in_another_within_a_second(
    platform: Platform, world: World, settings: Settings
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/settings"
    other_process = create_app(settings)  # its own tenant cache, as another API process has
    async with AsyncTestClient(other_process) as other:
        assert (await other.get(url, headers=world.owner_a.headers)).status_code == 200  # cached
        suspended = await platform.client.post(
            f"/api/v1/tenants/{world.tenant_a}/suspend", headers=world.admin_x.headers
        )
        assert suspended.status_code == 200
        deadline = time.monotonic() + 1.0
        status = 200
        while status != 403 and time.monotonic() < deadline:
            status = (await other.get(url, headers=world.owner_a.headers)).status_code
            await asyncio.sleep(0.02)
        assert status == 403, "the other process still serves the tenant as active"


async def test_a_lookup_while_a_change_commits_does_not_keep_the_old_row(
    world: World, settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    directory = TenantDirectory(ttl_s=60)  # only the announcement can refresh it in time
    async with unit_of_work(session_factory) as session:
        before = await directory.find(session, world.tenant_a)
    assert before is not None
    assert before.status == "active"
    operator = Principal(user_id=uuid.uuid4(), email="", is_operator=True)
    async with unit_of_work(session_factory) as session:
        access = TenantAccess(before, operator, None, False)
        await services.change_status(session, settings, directory, access, "suspend")
        # A request running meanwhile, in its own transaction, still sees the committed row …
        async with unit_of_work(session_factory) as concurrent:
            seen = await directory.find(concurrent, world.tenant_a)
        assert seen is not None
        assert seen.status == "active"
    # … and once the change commits, nobody keeps it.
    async with unit_of_work(session_factory) as session:
        after = await directory.find(session, world.tenant_a)
    assert after is not None
    assert after.status == "suspended"


async def test_a_lookup_that_read_the_row_before_an_announcement_does_not_cache_it(
    world: World, session_factory: async_sessionmaker[AsyncSession], pg: psycopg.Connection[Any]
) -> None:
    directory = TenantDirectory(ttl_s=60)
    read, release = asyncio.Event(), asyncio.Event()

    class PausedAfterReading:
        """The request's real session, paused after its next query has read."""

        def __init__(self, session: AsyncSession) -> None:
            self.session = session

        async def execute(self, *args: Any, **kwargs: Any) -> Any:
            result = await self.session.execute(*args, **kwargs)
            read.set()
            await release.wait()
            return result

    async with unit_of_work(session_factory) as session:
        paused: Any = PausedAfterReading(session)
        lookup = asyncio.create_task(directory.find(paused, world.tenant_a))
        await asyncio.wait_for(read.wait(), timeout=10)
        # The change commits and is announced while the old row is in hand …
        pg.execute(
            "UPDATE shared.tenants SET status = 'suspended' WHERE slug = %s", (world.tenant_a,)
        )
        directory.invalidate(world.tenant_a)
        release.set()
        assert (await lookup) is not None
    # … so what that lookup read is not what the next one gets.
    async with unit_of_work(session_factory) as session:
        after = await directory.find(session, world.tenant_a)
    assert after is not None
    assert after.status == "suspended"


async def test_an_api_key_revoked_in_one_api_process_is_refused_in_another_at_once(
    platform: Platform, world: World, settings: Settings
) -> None:
    created = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": "cached", "role": "viewer"},
        headers=world.owner_a.headers,
    )
    assert created.status_code == 201
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    url = f"/api/v1/tenants/{world.tenant_a}/settings"
    # Keys stay cached for a minute here: only the announcement can make the refusal prompt.
    other_process = create_app(settings.model_copy(update={"auth_user_cache_s": 60.0}))
    async with AsyncTestClient(other_process) as other:
        assert (await other.get(url, headers=key)).status_code == 200  # cached there now
        revoked = await platform.client.delete(
            f"/api/v1/tenants/{world.tenant_a}/api-keys/{created.json()['id']}",
            headers=world.owner_a.headers,
        )
        assert revoked.status_code == 204
        deadline = time.monotonic() + 1.0
        status = 200
        while status != 401 and time.monotonic() < deadline:
            status = (await other.get(url, headers=key)).status_code
            await asyncio.sleep(0.02)
        assert status == 401, "the other process still accepts the revoked key"
