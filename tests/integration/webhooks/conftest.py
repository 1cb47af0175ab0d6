"""Fixtures: an app and workers that may reach loopback receivers over http (tests only), a
Standard Webhooks receiver, and a hook on a tenant whose deliveries run as a worker runs them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.app import create_app
from socialflow.event_routing import SUBSCRIBED
from socialflow.settings import Settings
from socialflow.webhooks.events import WebhookEndpointDue
from socialflow.workers.actors import WorkerResources, apply_named_event
from socialflow.workers.testing import envelope_of, pending_rows, worker_settings_for
from tests.integration.social.fake_receiver import FakeReceiver, fake_receiver
from tests.integration.tenancy_fixtures import Account, Platform, World

PLACEHOLDER_SECRET = "whsec_" + "A" * 32


@pytest.fixture
def hook_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "data_dir": tmp_path,
            "outbound_allowed_networks": ("127.0.0.1/32",),
            "outbound_allow_http": True,
            "webhook_timeout_s": 2.0,
            "webhook_replay_interval_s": 60,
        }
    )


@pytest.fixture
def app(hook_settings: Settings) -> Litestar:
    return create_app(hook_settings)


@pytest.fixture
def worker_settings(hook_settings: Settings) -> Iterator[Settings]:
    with worker_settings_for(hook_settings) as settings:
        yield settings


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    with fake_receiver(PLACEHOLDER_SECRET) as fake:
        yield fake


@dataclass
class Hooks:
    """A tenant's admin managing webhooks through the API; deliveries run when the test says,
    as the relay and a worker would run them."""

    platform: Platform
    pg: psycopg.Connection[tuple[object, ...]]
    factory: async_sessionmaker[AsyncSession]
    tenant: str
    tenant_id: uuid.UUID
    admin: Account
    settings: Settings

    @property
    def base(self) -> str:
        return f"/api/v1/tenants/{self.tenant}/webhooks"

    async def create(self, receiver: FakeReceiver, *types: str, **extra: Any) -> dict[str, Any]:
        body = {"url": receiver.url, "event_types": list(types or ("*",)), **extra}
        answer = await self.platform.client.post(self.base, json=body, headers=self.admin.headers)
        assert answer.status_code == 201, answer.text
        receiver.secret = answer.json()["signing_secret"]
        return answer.json()  # type: ignore[no-any-return]

    async def call(self, method: str, path: str = "", **body: Any) -> Any:
        return await self.platform.client.request(
            method, f"{self.base}{path}", json=body or None, headers=self.admin.headers
        )

    async def change_settings(self, name: str) -> None:
        answer = await self.platform.client.put(
            f"/api/v1/tenants/{self.tenant}/settings",
            json={"display_name": name},
            headers=self.admin.headers,
        )
        assert answer.status_code == 200, answer.text

    async def run(self, *, later_s: float = 0.0, max_rounds: int = 20) -> int:
        """Apply `deliver_webhooks` to the tenant's outbox events due (after `later_s` seconds
        pass: see `age`): those a subscribed tenant's relay routes to it, and the endpoints'
        drains. Rounds until nothing new; returns how many events it applied."""
        if later_s:
            self.age(later_s)
        due_by = datetime.now(UTC)
        applied = 0
        for _ in range(max_rounds):
            this_round = 0
            for row in await pending_rows(self.factory, self.tenant_id, *_ROUTED, due_by=due_by):
                envelope = envelope_of(row)
                this_round += await apply_named_event("deliver_webhooks", envelope, self.factory)
            if not this_round:
                return applied
            applied += this_round
        raise RuntimeError("deliveries kept coming")

    def age(self, seconds: float) -> None:
        """As if `seconds` had passed: for the tenant's deliveries, endpoints and deferred
        events (the database's clock decides what is due)."""
        schema, shift = self.schema, (seconds,)
        self.pg.execute(
            f'UPDATE "{schema}".webhook_deliveries SET '
            "next_attempt_at = next_attempt_at - make_interval(secs => %s), "
            "created_at = created_at - make_interval(secs => %s)",
            shift * 2,
        )
        self.pg.execute(
            f'UPDATE "{schema}".webhook_endpoints SET '
            "retry_at = retry_at - make_interval(secs => %s), "
            "failing_since = failing_since - make_interval(secs => %s), "
            "drain_at = drain_at - make_interval(secs => %s)",
            shift * 3,
        )
        self.pg.execute(
            "UPDATE shared.outbox SET available_at = available_at - make_interval(secs => %s) "
            "WHERE tenant_id = %s",
            (seconds, self.tenant_id),
        )

    def deliveries(self) -> list[dict[str, Any]]:
        rows = self.pg.execute(
            f"SELECT event_id, event_type, state, attempts, last_status, next_attempt_at "
            f'FROM "{self.schema}".webhook_deliveries ORDER BY id'
        )
        names = ("event_id", "event_type", "state", "attempts", "last_status", "next_attempt_at")
        return [dict(zip(names, row, strict=True)) for row in rows]

    @property
    def schema(self) -> str:
        row = self.pg.execute(
            "SELECT schema_name FROM shared.tenants WHERE id = %s", (self.tenant_id,)
        ).fetchone()
        assert row is not None
        return str(row[0])

    def outbox(self, event_type: str) -> list[dict[str, Any]]:
        rows = self.pg.execute(
            "SELECT payload FROM shared.outbox WHERE tenant_id = %s AND event_type = %s",
            (self.tenant_id, event_type),
        )
        return [row[0] for row in rows]  # type: ignore[misc]


_ROUTED = (*sorted(SUBSCRIBED.event_types), WebhookEndpointDue.event_type)


@pytest.fixture
async def hooks(
    platform: Platform,
    world: World,
    pg: psycopg.Connection[tuple[object, ...]],
    session_factory: async_sessionmaker[AsyncSession],
    worker_settings: Settings,
) -> Any:
    row = pg.execute("SELECT id FROM shared.tenants WHERE slug = %s", (world.tenant_a,)).fetchone()
    assert row is not None
    yield Hooks(
        platform,
        pg,
        session_factory,
        world.tenant_a,
        uuid.UUID(str(row[0])),
        world.owner_a,
        worker_settings,
    )
    await WorkerResources.dispose()
