"""Fixtures (a pytest plugin, loaded by the root conftest) for identity and tenancy: accounts,
tokens, agencies and tenants through the API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.session import unit_of_work
from socialflow.identity.services import create_user, ensure_operator
from socialflow.plans.limits import MAY_BE_UNLIMITED
from socialflow.settings import Settings

PASSWORD = "correct horse battery staple"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


class Platform:
    """Drives the API as operators, agency admins and members would."""

    def __init__(
        self,
        client: AsyncTestClient[Litestar],
        factory: async_sessionmaker[AsyncSession],
        settings: Settings,
    ) -> None:
        self.client = client
        self.factory = factory
        self.settings = settings

    async def login(self, email: str, password: str = PASSWORD) -> Account:
        response = await self.client.post(
            "/api/v1/auth/token", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        return Account(email, response.json()["access_token"])

    async def operator(self) -> Account:
        email = f"{unique('op')}@example.com"
        async with unit_of_work(self.factory) as session:
            await ensure_operator(session, self.settings, email=email, password=PASSWORD)
        return await self.login(email)

    async def user(self) -> Account:
        email = f"{unique('user')}@example.com"
        async with unit_of_work(self.factory) as session:
            await create_user(session, self.settings, email=email, password=PASSWORD)
        return await self.login(email)

    async def member(self, tenant: str, role: str) -> Account:
        """A new user who is already a member of `tenant` with `role` (no invitation)."""
        account = await self.user()
        async with unit_of_work(self.factory) as session:
            await session.execute(
                text(
                    "INSERT INTO shared.memberships (tenant_id, user_id, role) "
                    "SELECT t.id, u.id, :role FROM shared.tenants t, shared.users u "
                    "WHERE t.slug = :tenant AND lower(u.email) = lower(:email)"
                ),
                {"role": role, "tenant": tenant, "email": account.email},
            )
        return account

    async def agency(self, operator: Account) -> str:
        slug = unique("agency")
        response = await self.client.post(
            "/api/v1/agencies", json={"slug": slug, "name": slug}, headers=operator.headers
        )
        assert response.status_code == 201, response.text
        return slug

    async def agency_admin(self, operator: Account, agency: str) -> Account:
        email = f"{unique('admin')}@example.com"
        response = await self.client.post(
            f"/api/v1/agencies/{agency}/admins",
            json={"email": email, "password": PASSWORD},
            headers=operator.headers,
        )
        assert response.status_code == 201, response.text
        return await self.login(email)

    async def tenant(
        self, by: Account, agency: str, owner: Account | None = None, *, plan: str = "pro"
    ) -> str:
        slug = unique("t")
        response = await self.provision(by, slug=slug, agency=agency, owner=owner, plan=plan)
        assert response.status_code == 201, response.text
        return slug

    async def plan(self, operator: Account, **limits: Any) -> str:
        """A new plan of the catalogue, unlimited but for what `limits` say."""
        name = unique("plan")
        body = {
            "name": name,
            "display_name": name,
            **dict.fromkeys(MAY_BE_UNLIMITED),
            "api_requests_per_minute": 1_000_000,
            "event_retention_days": 30,
            "platform_ai_keys": False,
            **limits,
        }
        response = await self.client.post("/api/v1/plans", json=body, headers=operator.headers)
        assert response.status_code == 201, response.text
        return name

    async def entitle(self, by: Account, tenant: str, **overrides: Any) -> Any:
        """Override the tenant's plan limits (`seats=3`, `posts_per_month="unlimited"` …)."""
        response = await self.client.patch(
            f"/api/v1/tenants/{tenant}/entitlements",
            json={"overrides": overrides},
            headers=by.headers,
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def provision(
        self, by: Account, *, slug: str, agency: str, owner: Account | None = None, **extra: Any
    ) -> Any:
        body = {
            "slug": slug,
            "name": f"Tenant {slug}",
            "agency": agency,
            "owner_email": owner.email if owner else f"{unique('owner')}@example.com",
            "plan": "pro",
            **extra,
        }
        return await self.client.post("/api/v1/tenants", json=body, headers=by.headers)


@pytest.fixture
async def platform(
    client: AsyncTestClient[Litestar],
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> Platform:
    return Platform(client, session_factory, settings)


@dataclass
class World:
    """Two agencies, each with an admin and a tenant whose owner is a separate user."""

    operator: Account
    agency_x: str
    agency_y: str
    admin_x: Account
    admin_y: Account
    owner_a: Account
    owner_b: Account
    tenant_a: str  # in agency X
    tenant_b: str  # in agency Y


@pytest.fixture
async def world(platform: Platform) -> World:
    operator = await platform.operator()
    agency_x, agency_y = await platform.agency(operator), await platform.agency(operator)
    admin_x = await platform.agency_admin(operator, agency_x)
    admin_y = await platform.agency_admin(operator, agency_y)
    owner_a, owner_b = await platform.user(), await platform.user()
    tenant_a = await platform.tenant(admin_x, agency_x, owner_a)
    tenant_b = await platform.tenant(admin_y, agency_y, owner_b)
    return World(
        operator, agency_x, agency_y, admin_x, admin_y, owner_a, owner_b, tenant_a, tenant_b
    )
