"""Fixtures: a tenant uploading media whose captions and vectors come from the fake
OpenAI-compatible provider on loopback, through the real litellm calls and the real actors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.app import create_app
from socialflow.event_routing import ROUTES
from socialflow.settings import Settings
from socialflow.workers.actors import WorkerResources
from socialflow.workers.testing import apply_routed_events, worker_settings_for
from tests.integration.ai.fake_openai import GOOD_KEY, FakeProvider, fake_provider
from tests.integration.media.support import Uploader, photo
from tests.integration.tenancy_fixtures import Account, Platform, World

# Every event the caption pipeline reacts to, from the upload on.
PIPELINE_EVENTS = (
    "media.uploaded",
    "media.processed",
    "media.failed",
    "media.updated",
    "media.deleted",
    "media.caption_requested",
    "media.captioned",
    "media.caption_edited",
    "ai.embedding_model_changed",
)


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with fake_provider() as fake:
        yield fake


@pytest.fixture
def ai_settings(
    settings: Settings, provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return settings_for_ai(settings, provider, tmp_path_factory)


def settings_for_ai(
    settings: Settings, provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Local media; tenants may reach the fake provider on loopback over http; the platform's
    own OpenAI key calls it too (for plans that include the platform's keys)."""
    return settings.model_copy(
        update={
            "data_dir": tmp_path_factory.mktemp("media"),
            "outbound_allowed_networks": ("127.0.0.1/32",),
            "outbound_allow_http": True,
            "ai_platform_keys": {"openai": SecretStr(GOOD_KEY)},
            "ai_platform_base_urls": {"openai": provider.base_url},
            "ai_call_timeout_s": 5.0,
        }
    )


@pytest.fixture
def app(ai_settings: Settings) -> Litestar:
    return create_app(ai_settings)


@pytest.fixture
def worker_settings(ai_settings: Settings) -> Iterator[Settings]:
    with worker_settings_for(ai_settings) as settings:
        yield settings


@dataclass
class Studio(Uploader):
    """An editor uploading, its owner configuring AI, and the worker applying what follows."""

    owner: Account = None  # type: ignore[assignment]
    provider: FakeProvider = None  # type: ignore[assignment]

    @property
    def tenant_base(self) -> str:
        return f"/api/v1/tenants/{self.tenant}"

    async def byok(self, key: str = GOOD_KEY) -> None:
        """The tenant's own OpenAI key, calling the fake provider."""
        stored = await self.client.put(
            f"{self.tenant_base}/ai/keys/openai",
            json={"api_key": key, "base_url": self.provider.base_url},
            headers=self.owner.headers,
        )
        assert stored.status_code == 200, stored.text

    async def ai_settings(self, **changes: Any) -> dict[str, Any]:
        answer = await self.client.put(
            f"{self.tenant_base}/ai/settings", json=changes, headers=self.owner.headers
        )
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    async def run(
        self,
        retries: list[int] | None = None,
        *,
        types: tuple[str, ...] = PIPELINE_EVENTS,
        max_rounds: int = 20,
    ) -> int:
        """The worker: the pending events of `types`, until nothing is left (retries at once,
        their delays appended to `retries`)."""
        return await apply_routed_events(
            self.factory, ROUTES, self.tenant_id, *types, retries=retries, max_rounds=max_rounds
        )

    async def process(self) -> int:
        return await self.run()

    async def start_and_confirm(self, data: bytes | None = None, **body: Any) -> str:
        """An upload confirmed but not processed yet; its id."""
        data = data or photo(800, 600)
        started = await self.start(data, **body)
        assert started.status_code == 201, started.text
        sent = await self.send(started.json()["upload"], data)
        assert sent.status_code in (200, 204), sent.text
        media_id: str = started.json()["media_id"]
        confirmed = await self.confirm(media_id)
        assert confirmed.status_code == 200, confirmed.text
        return media_id


async def studio_for(
    platform: Platform,
    client: AsyncTestClient[Litestar],
    factory: async_sessionmaker[AsyncSession],
    pg: psycopg.Connection[tuple[object, ...]],
    provider: FakeProvider,
    tenant: str,
    owner: Account,
) -> Studio:
    editor = await platform.member(tenant, "editor")
    row = pg.execute("SELECT id FROM shared.tenants WHERE slug = %s", (tenant,)).fetchone()
    assert row is not None
    return Studio(
        client,
        factory,
        tenant,
        row[0],  # type: ignore[arg-type]
        editor,
        owner=owner,
        provider=provider,
    )


@pytest.fixture
async def studio(
    platform: Platform,
    world: World,
    client: AsyncTestClient[Litestar],
    session_factory: async_sessionmaker[AsyncSession],
    worker_settings: Settings,
    provider: FakeProvider,
    pg: psycopg.Connection[tuple[object, ...]],
) -> AsyncIterator[Studio]:
    """Tenant A, on plan "pro" (which includes the platform's keys)."""
    yield await studio_for(
        platform, client, session_factory, pg, provider, world.tenant_a, world.owner_a
    )
    await WorkerResources.dispose()


@pytest.fixture
async def keyless_studio(
    platform: Platform,
    world: World,
    client: AsyncTestClient[Litestar],
    session_factory: async_sessionmaker[AsyncSession],
    worker_settings: Settings,
    provider: FakeProvider,
    pg: psycopg.Connection[tuple[object, ...]],
) -> AsyncIterator[Studio]:
    """A tenant on plan "starter" (no platform keys) whose owner stored no key of its own."""
    owner = await platform.user()
    tenant = await platform.tenant(world.admin_x, world.agency_x, owner, plan="starter")
    yield await studio_for(platform, client, session_factory, pg, provider, tenant, owner)
    await WorkerResources.dispose()
