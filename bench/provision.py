"""Provisioning benchmark: one tenant through the API with 10 / 1,000 / 10,000 tenants present,
and the cost of the per-request search_path step on a tenant-scoped GET.

Runs against embedded PostgreSQL + Redis (or DATABASE_URL / REDIS_URL); the API runs in this
process behind httpx's ASGI transport (no sockets), so the figures are the server's own cost.

    python bench/provision.py [--json] [--sizes 10,1000,10000] [--samples 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow import embedded
from socialflow.app import create_app
from socialflow.db.migrate import upgrade_shared
from socialflow.db.session import unit_of_work
from socialflow.identity.permissions import Permission
from socialflow.identity.services import ensure_operator
from socialflow.identity.tokens import Principal
from socialflow.settings import Environment, Settings
from socialflow.tenancy.access import (
    TenantAccess,
    count_tenant_request,
    provide_tenant_scope,
    resolve_access,
)
from socialflow.tenancy.services import create_agency, provision_tenant

PASSWORD = "bench-password-0123456789"
AGENCY = "bench-agency"


# Two copies of one handler: with the search_path step (the product's tenant dependency) and
# without it (same access check, the table named by its schema instead).
@get(
    "/bench/with/{tenant:str}",
    dependencies={"member": Provide(provide_tenant_scope)},
    opt={"permission": Permission.SETTINGS_READ},
)
async def with_search_path(
    member: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
) -> dict[str, Any]:
    row = (await session.execute(text("SELECT timezone, locale FROM settings"))).one()
    return {"timezone": row.timezone, "locale": row.locale}


@get("/bench/without/{tenant:str}")
async def without_search_path(
    request: Request[Any, Any, Any],
    tenant: FromPath[str],
    principal: NamedDependency[Principal],
    session: NamedDependency[AsyncSession],
    state: State,
) -> dict[str, Any]:
    access = await resolve_access(session, state.tenant_directory, tenant, principal)
    access.require(Permission.SETTINGS_READ)
    await count_tenant_request(request, state, access)  # as the product's dependency does
    schema = access.tenant.schema_name
    row = (await session.execute(text(f'SELECT timezone, locale FROM "{schema}".settings'))).one()
    return {"timezone": row.timezone, "locale": row.locale}


def bench_settings(urls: embedded.ServiceUrls, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        env=Environment.TEST,
        database_url=urls.database_url,
        redis_url=urls.redis_url,
        jwt_signing_key=SecretStr("bench-" + "k" * 40),
        log_level="WARNING",
        db_pool_size=10,
        # Limits high enough not to throttle the benchmark (they still count in Redis).
        rate_limit_user_per_minute=10_000_000,
        rate_limit_tenant_per_minute={"pro": 10_000_000},
        _env_file=None,  # type: ignore[call-arg]
    )


async def seed_tenants(app: Litestar, settings: Settings, operator: Principal, upto: int) -> None:
    """Bring the number of tenants present to `upto` (through the provisioning service)."""
    factory = app.state.session_factory
    async with unit_of_work(factory) as session:
        present = (await session.execute(text("SELECT count(*) FROM shared.tenants"))).scalar_one()

    async def create(i: int) -> None:
        async with unit_of_work(factory) as session:
            await provision_tenant(
                session, settings, operator, slug=f"seed-{i:06d}", name=f"Seed {i}",
                agency_slug=AGENCY, plan="pro", owner_email=f"seed-{i:06d}@example.com",
            )  # fmt: skip

    next_index = present
    while next_index < upto:
        batch = range(next_index, min(next_index + 4, upto))
        await asyncio.gather(*(create(i) for i in batch))
        next_index += len(batch)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure_provisioning(
    client: httpx.AsyncClient, headers: dict[str, str], samples: int
) -> dict[str, float]:
    timings = []
    for _ in range(samples):
        slug = f"bench-{uuid.uuid4().hex[:12]}"
        body = {"slug": slug, "name": slug, "agency": AGENCY, "plan": "pro",
                "owner_email": f"{slug}@example.com"}  # fmt: skip
        started = time.perf_counter()
        response = await client.post("/api/v1/tenants", json=body, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 201, response.text
    return {
        "p50": percentile(timings, 50),
        "p95": percentile(timings, 95),
        "p99": percentile(timings, 99),
    }


async def measure_overhead(
    client: httpx.AsyncClient, headers: dict[str, str], slug: str, seconds: float, rounds: int = 7
) -> dict[str, Any]:
    async def throughput(path: str) -> float:
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                response = await client.get(path, headers=headers)
                assert response.status_code == 200, response.text
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(8)))
        return done / (time.perf_counter() - started)

    await throughput(f"/bench/with/{slug}")  # warm both paths
    await throughput(f"/bench/without/{slug}")
    with_rates, without_rates, overheads = [], [], []
    for _ in range(rounds):  # interleaved pairs; the median pair ratio resists machine noise
        without_rps = await throughput(f"/bench/without/{slug}")
        with_rps = await throughput(f"/bench/with/{slug}")
        without_rates.append(without_rps)
        with_rates.append(with_rps)
        overheads.append((without_rps - with_rps) / without_rps * 100)
    return {
        "with_rps": statistics.median(with_rates),
        "without_rps": statistics.median(without_rates),
        "overhead_pct": max(0.0, statistics.median(overheads)),
        "overhead_range_pct": (min(overheads), max(overheads)),
        "rounds": rounds,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as data_dir, embedded.services(
        os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL"), Path(data_dir),
        throwaway=True,
    ) as urls:  # fmt: skip
        upgrade_shared(urls.database_url)
        settings = bench_settings(urls, Path(data_dir))
        app = create_app(settings)
        app.register(with_search_path)
        app.register(without_search_path)
        result: dict[str, Any] = {
            "provision_p50_ms": {}, "provision_p95_ms": {}, "provision_p99_ms": {},
        }  # fmt: skip
        transport = httpx.ASGITransport(app=app)
        async with (
            app.lifespan(),
            httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
        ):
            async with unit_of_work(app.state.session_factory) as session:
                user = await ensure_operator(
                    session, settings, email="bench-operator@example.com", password=PASSWORD
                )
                operator = Principal(user.id, user.email, True)
                await create_agency(session, operator, slug=AGENCY, name="Bench")
            token = (
                await client.post(
                    "/api/v1/auth/token",
                    json={"email": "bench-operator@example.com", "password": PASSWORD},
                )
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            for size in sizes:
                await seed_tenants(app, settings, operator, size)
                figures = await measure_provisioning(client, headers, args.samples)
                for q in ("p50", "p95", "p99"):
                    result[f"provision_{q}_ms"][str(size)] = round(figures[q], 2)
            # A tenant the operator is a member of, for the tenant-scoped GET.
            owned = await client.post(
                "/api/v1/tenants",
                json={"slug": "bench-owned", "name": "Owned", "agency": AGENCY, "plan": "pro",
                      "owner_email": "bench-operator@example.com"},
                headers=headers,
            )  # fmt: skip
            assert owned.status_code == 201, owned.text
            overhead = await measure_overhead(client, headers, "bench-owned", args.overhead_s)
        result["tenancy_overhead_pct"] = round(overhead["overhead_pct"], 2)
        result["_detail"] = {"overhead": overhead, "sizes": sizes, "samples": args.samples}
        return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'tenants present':>16} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}"
        "   target p50<=50, p99<=200"
    )
    for size in result["_detail"]["sizes"]:
        key = str(size)
        print(
            f"{size:>16,} {result['provision_p50_ms'][key]:>9.2f} "
            f"{result['provision_p95_ms'][key]:>9.2f} {result['provision_p99_ms'][key]:>9.2f}"
        )
    o = result["_detail"]["overhead"]
    print(
        f"\ntenant-scoped GET: {o['without_rps']:,.0f} req/s without the search_path step, "
        f"{o['with_rps']:,.0f} req/s with it → overhead {result['tenancy_overhead_pct']:.2f}% "
        f"(median of {o['rounds']} rounds, range "
        f"{o['overhead_range_pct'][0]:.1f}% to {o['overhead_range_pct'][1]:.1f}%; target <= 10%)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--overhead-s", type=float, default=2.0)
    arguments = parser.parse_args()
    outcome = asyncio.run(run(arguments))
    if arguments.json:
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))
    else:
        print_table(outcome)
