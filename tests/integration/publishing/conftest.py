"""Fixtures: a tenant with an editor and an admin, ready media, and destinations on loopback
platforms (a signed webhook receiver, a fake Mastodon instance); the publish engine runs with
the real actors, event by event, as a worker would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.app import create_app
from socialflow.event_routing import ROUTES
from socialflow.settings import Settings
from socialflow.workers.actors import WorkerResources
from socialflow.workers.testing import apply_routed_events, worker_settings_for
from tests.integration.media.support import Uploader, photo
from tests.integration.social.fake_bluesky import FakePds, fake_pds
from tests.integration.social.fake_mastodon import FakeMastodon, fake_mastodon
from tests.integration.social.fake_receiver import FakeReceiver, fake_receiver
from tests.integration.tenancy_fixtures import Account, Platform, World

ENGINE_EVENTS = ("post.publish_due", "post.delivery_due", "post.delivery_check_due")
PLACEHOLDER_SECRET = "whsec_" + "A" * 32


@pytest.fixture
def publishing_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Local media; tenants may reach loopback platforms over http (tests only)."""
    return settings.model_copy(
        update={
            "data_dir": tmp_path_factory.mktemp("media"),
            "outbound_allowed_networks": ("127.0.0.1/32",),
            "outbound_allow_http": True,
            "social_call_timeout_s": 2.0,
        }
    )


@pytest.fixture
def app(publishing_settings: Settings) -> Litestar:
    return create_app(publishing_settings)


@pytest.fixture
def worker_settings(publishing_settings: Settings) -> Iterator[Settings]:
    with worker_settings_for(publishing_settings) as settings:
        yield settings


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    with fake_receiver(PLACEHOLDER_SECRET) as fake:
        yield fake


@pytest.fixture
def instance() -> Iterator[FakeMastodon]:
    with fake_mastodon() as fake:
        yield fake


@pytest.fixture
def pds() -> Iterator[FakePds]:
    with fake_pds() as fake:
        yield fake


@pytest.fixture
def second_receiver() -> Iterator[FakeReceiver]:
    with fake_receiver(PLACEHOLDER_SECRET) as fake:
        yield fake


@dataclass
class Studio:
    """A tenant's editor and admin writing, reviewing and publishing posts through the API; the
    engine's events applied when the test says time has come."""

    client: AsyncTestClient[Litestar]
    factory: async_sessionmaker[AsyncSession]
    pg: psycopg.Connection[tuple[object, ...]]
    tenant: str
    tenant_id: uuid.UUID
    editor: Account
    admin: Account
    uploader: Uploader
    platform: Platform

    @property
    def base(self) -> str:
        return f"/api/v1/tenants/{self.tenant}"

    @property
    def tenant_schema(self) -> str:
        row = self.pg.execute(
            "SELECT schema_name FROM shared.tenants WHERE id = %s", (self.tenant_id,)
        ).fetchone()
        assert row is not None
        return str(row[0])

    async def media(self, width: int = 640) -> str:
        item = await self.uploader.upload(photo(width, 480, gps=True))
        assert item["status"] == "ready", item
        return str(item["id"])

    async def webhook(self, receiver: FakeReceiver, name: str = "hook") -> dict[str, Any]:
        """A webhook destination pointing at `receiver`, which then verifies with its secret."""
        answer = await self.client.post(
            f"{self.base}/social-accounts/connect/webhook",
            json={"url": receiver.url, "name": name},
            headers=self.admin.headers,
        )
        assert answer.status_code == 201, answer.text
        receiver.secret = answer.json()["signing_secret"]
        return answer.json()  # type: ignore[no-any-return]

    async def mastodon(self, instance: FakeMastodon, username: str = "brand") -> dict[str, Any]:
        """A Mastodon account connected through the OAuth flow (PKCE), by the admin."""
        started = await self.client.post(
            f"{self.base}/social-accounts/connect/mastodon",
            json={"instance_url": instance.origin},
            headers=self.admin.headers,
        )
        assert started.status_code == 200, started.text
        back = instance.approve(started.json()["authorization_url"], instance.add_account(username))
        done = await self.client.get(
            f"/api/v1/oauth/callback?{urlsplit(back).query}", headers=self.admin.headers
        )
        assert done.status_code == 201, done.text
        return done.json()  # type: ignore[no-any-return]

    async def bluesky(self, pds: FakePds, handle: str = "brand.test") -> dict[str, Any]:
        pds.add_account(handle, "app-pass-1234")
        answer = await self.client.post(
            f"{self.base}/social-accounts/connect/bluesky",
            json={"identifier": handle, "app_password": "app-pass-1234", "service_url": pds.url},
            headers=self.admin.headers,
        )
        assert answer.status_code == 201, answer.text
        return answer.json()  # type: ignore[no-any-return]

    async def settings(self, **changes: Any) -> None:
        answer = await self.client.put(
            f"{self.base}/settings", json=changes, headers=self.admin.headers
        )
        assert answer.status_code == 200, answer.text

    async def call(self, method: str, path: str, who: Account | None = None, **body: Any) -> Any:
        """The API's answer (status checked by the caller)."""
        headers = (who or self.editor).headers
        url = f"{self.base}/posts{path}"
        if method == "GET":
            return await self.client.get(url, headers=headers)
        return await self.client.request(method, url, json=body or None, headers=headers)

    async def draft(self, **body: Any) -> dict[str, Any]:
        answer = await self.call("POST", "", **body)
        assert answer.status_code == 201, answer.text
        return answer.json()  # type: ignore[no-any-return]

    async def approved(self, **body: Any) -> dict[str, Any]:
        """A post written by the editor, submitted and approved by the admin."""
        post = await self.draft(**body)
        submitted = await self.call("POST", f"/{post['id']}/submit")
        assert submitted.status_code == 200, submitted.text
        approved = await self.call("POST", f"/{post['id']}/approve", self.admin)
        assert approved.status_code == 200, approved.text
        return approved.json()  # type: ignore[no-any-return]

    async def post(self, post_id: str) -> dict[str, Any]:
        answer = await self.call("GET", f"/{post_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    async def run_engine(self, *, at: datetime | None = None) -> int:
        """Apply the engine's events due by `at` (now by default), as the relay and a worker
        would; what they write that is due too is applied in the next round."""
        return await apply_routed_events(
            self.factory, ROUTES, self.tenant_id, *ENGINE_EVENTS, due_by=at or datetime.now(UTC)
        )

    async def run_engine_later(self, seconds: float) -> int:
        return await self.run_engine(at=datetime.now(UTC) + timedelta(seconds=seconds))

    def age_deliveries(self, seconds: float) -> None:
        """As if `seconds` had passed since the deliveries under way started sending."""
        self.pg.execute(
            f'UPDATE "{self.tenant_schema}".post_destinations '
            "SET sending_since = sending_since - make_interval(secs => %s) "
            "WHERE sending_since IS NOT NULL",
            (seconds,),
        )

    def events(self, *types: str) -> list[dict[str, Any]]:
        rows = self.pg.execute(
            "SELECT event_type, payload FROM shared.outbox WHERE tenant = %s "
            "AND event_type = ANY(%s) ORDER BY id",
            (self.tenant, list(types)),
        )
        return [{"type": t, **p} for t, p in rows]  # type: ignore[dict-item]


@pytest.fixture
async def studio(
    platform: Platform,
    world: World,
    client: AsyncTestClient[Litestar],
    session_factory: async_sessionmaker[AsyncSession],
    worker_settings: Settings,
    pg: psycopg.Connection[tuple[object, ...]],
) -> AsyncIterator[Studio]:
    editor = await platform.member(world.tenant_a, "editor")
    admin = await platform.member(world.tenant_a, "admin")
    row = pg.execute("SELECT id FROM shared.tenants WHERE slug = %s", (world.tenant_a,)).fetchone()
    assert row is not None
    tenant_id: uuid.UUID = row[0]  # type: ignore[assignment]
    uploader = Uploader(client, session_factory, world.tenant_a, tenant_id, editor)
    yield Studio(
        client, session_factory, pg, world.tenant_a, tenant_id, editor, admin, uploader, platform
    )
    await WorkerResources.dispose()
