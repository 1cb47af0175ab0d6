"""Provisioning benchmark: one tenant through the API with 10 / 1,000 / 10,000 tenants present,
and the cost of the per-request search_path step on a tenant-scoped GET.

What is timed: `POST /api/v1/tenants` through the whole application (authentication, input
validation, the provisioning service, and the commit of the request's unit of work, which
happens before the response is sent), in this process behind httpx's ASGI transport: no
socket, no HTTP server, so the figures are the application's and the database's own cost.
The servers are durable (PostgreSQL with fsync and synchronous_commit on, Redis with
`appendfsync always`; see bench/_servers.py), or DATABASE_URL / REDIS_URL as they are.

"Tenants present" is counted, not assumed: the tenants provisioned by the samples count too,
so a row measured from 10 tenants ends with 10 + --samples of them, and the table shows that
range. Each sample tenant is then read back: active, its schema holding every tenant table,
its ledger row at head, its owner and its `tenant.created` event.

    python bench/provision.py [--json] [--sizes 10,1000,10000] [--samples 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from _servers import (
    Servers,
    check,
    durable_servers,
    prepare_shared,
    print_settings,
    quiet_logging,
    server_settings,
)
from _servers import settings_lines as server_lines
from socialflow.access.guards import authenticated, count_request, requires
from socialflow.access.permissions import Permission
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess, resolve_access
from socialflow.app import create_app
from socialflow.db.session import unit_of_work
from socialflow.identity.services import ensure_operator
from socialflow.settings import Environment, Settings
from socialflow.tenancy.fleet.ddl import tenant_ddl, tenant_head
from socialflow.tenancy.services import create_agency, provision_tenant

PASSWORD = "bench-password-0123456789"
AGENCY = "bench-agency"


# Two copies of one handler: with the search_path step (the product's tenant dependency) and
# without it (same access check, the table named by its schema instead).
@get("/bench/with/{tenant:str}", guards=[requires(Permission.SETTINGS_READ)])
async def with_search_path(
    access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
) -> dict[str, Any]:
    row = (await session.execute(text("SELECT timezone, locale FROM settings"))).one()
    return {"timezone": row.timezone, "locale": row.locale}


@get("/bench/without/{tenant:str}", guards=[authenticated])
async def without_search_path(
    request: Request[Any, Any, Any],
    tenant: FromPath[str],
    principal: NamedDependency[Principal],
    session: NamedDependency[AsyncSession],
    state: State,
) -> dict[str, Any]:
    access = await resolve_access(session, state.tenant_directory, tenant, principal)
    access.require(Permission.SETTINGS_READ)
    await count_request(state, request.scope, principal, access.tenant)  # as the guard does
    schema = access.tenant.schema_name
    row = (await session.execute(text(f'SELECT timezone, locale FROM "{schema}".settings'))).one()
    return {"timezone": row.timezone, "locale": row.locale}


def bench_settings(servers: Servers, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        env=Environment.TEST,
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        jwt_signing_key=SecretStr("bench-" + "k" * 40),
        log_level="WARNING",
        db_pool_size=10,
        # Limits high enough not to throttle the benchmark (they still count in Redis).
        rate_limit_user_per_minute=10_000_000,
        rate_limit_tenant_per_minute={"pro": 10_000_000},
        _env_file=None,
    )


async def seed_tenants(app: Litestar, settings: Settings, operator: Principal, upto: int) -> None:
    """Bring the number of tenants present to `upto` (through the provisioning service)."""
    factory = app.state.session_factory
    async with unit_of_work(factory) as session:
        present = (await session.execute(text("SELECT count(*) FROM shared.tenants"))).scalar_one()

    async def create(i: int) -> None:
        async with unit_of_work(factory) as session:
            await provision_tenant(
                session,
                settings,
                operator,
                slug=f"seed-{i:06d}",
                name=f"Seed {i}",
                agency_slug=AGENCY,
                plan="pro",
                owner_email=f"seed-{i:06d}@example.com",
            )

    next_index = present
    while next_index < upto:
        batch = range(next_index, min(next_index + 4, upto))
        await asyncio.gather(*(create(i) for i in batch))
        next_index += len(batch)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure_provisioning(
    client: httpx.AsyncClient, headers: dict[str, str], samples: int
) -> tuple[dict[str, float], list[str]]:
    timings, slugs = [], []
    for _ in range(samples):
        slug = f"bench-{uuid.uuid4().hex[:12]}"
        body = {
            "slug": slug,
            "name": slug,
            "agency": AGENCY,
            "plan": "pro",
            "owner_email": f"{slug}@example.com",
        }
        started = time.perf_counter()
        response = await client.post("/api/v1/tenants", json=body, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        check(response.status_code == 201, f"{response.status_code}: {response.text}")
        slugs.append(slug)
    figures = {q: percentile(timings, int(q[1:])) for q in ("p50", "p95", "p99")}
    return figures, slugs


async def tenants_present(session_factory: async_sessionmaker[AsyncSession]) -> int:
    async with unit_of_work(session_factory) as session:
        return int(
            (await session.execute(text("SELECT count(*) FROM shared.tenants"))).scalar_one()
        )


# Each sample tenant as provisioning promises it, all in one transaction: active, its schema
# with every tenant table, its ledger row, one owner and its `tenant.created` event (no relay
# runs here, so the event is still in the outbox).
PROVISIONED_SQL = text("""
SELECT t.slug, t.status,
       (SELECT count(*) FROM pg_tables p WHERE p.schemaname = t.schema_name) AS tables,
       (SELECT l.revision FROM shared.tenant_schema_migrations l WHERE l.tenant_id = t.id),
       (SELECT count(*) FROM shared.memberships m
        WHERE m.tenant_id = t.id AND m.role = 'owner') AS owners,
       (SELECT count(*) FROM shared.outbox o
        WHERE o.tenant_id = t.id AND o.event_type = 'tenant.created') AS events
FROM shared.tenants t WHERE t.slug = ANY(:slugs)
""")


async def verify_provisioned(
    session_factory: async_sessionmaker[AsyncSession], slugs: list[str]
) -> None:
    """What each timed request committed, read back."""
    head = tenant_head()
    tables = tenant_ddl(head).count("CREATE TABLE")
    async with unit_of_work(session_factory) as session:
        rows = (await session.execute(PROVISIONED_SQL, {"slugs": slugs})).all()
    check(len(rows) == len(slugs), f"{len(rows)} of {len(slugs)} sample tenants exist")
    wrong = [
        row
        for row in rows
        if (row.status, row.tables, row.revision, row.owners, row.events)
        != ("active", tables, head, 1, 1)
    ]
    check(
        not wrong,
        f"{len(wrong)} sample tenants incomplete, e.g. {wrong[:1]} "
        f"(want active, {tables} tables, {head}, 1 owner, 1 event)",
    )


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
                check(response.status_code == 200, response.text)
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
        "overhead_pct": statistics.median(overheads),  # not clamped: negative is noise
        "overhead_range_pct": (min(overheads), max(overheads)),
        "rounds": rounds,
    }


async def measure_sizes(
    app: Litestar,
    settings: Settings,
    operator: Principal,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Provisioning percentiles per size, and the tenants present before and after sampling."""
    result: dict[str, Any] = {
        "provision_p50_ms": {},
        "provision_p95_ms": {},
        "provision_p99_ms": {},
    }
    present: dict[str, tuple[int, int]] = {}
    factory = app.state.session_factory
    for size in [int(s) for s in args.sizes.split(",")]:
        await seed_tenants(app, settings, operator, size)
        before = await tenants_present(factory)
        figures, slugs = await measure_provisioning(client, headers, args.samples)
        await verify_provisioned(factory, slugs)
        present[str(size)] = (before, await tenants_present(factory))
        check(present[str(size)][1] == before + args.samples, f"tenants present {present}")
        for q in ("p50", "p95", "p99"):
            result[f"provision_{q}_ms"][str(size)] = round(figures[q], 2)
    return result, present


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with durable_servers() as servers:
        prepare_shared(servers.database_url)
        lines = server_lines(servers, server_settings(servers))
        settings = bench_settings(servers, servers.data_dir / "app")
        app = create_app(settings)
        app.register(with_search_path)
        app.register(without_search_path)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
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
            result, present = await measure_sizes(app, settings, operator, client, headers, args)
            # A tenant the operator is a member of, for the tenant-scoped GET.
            owned = await client.post(
                "/api/v1/tenants",
                json={
                    "slug": "bench-owned",
                    "name": "Owned",
                    "agency": AGENCY,
                    "plan": "pro",
                    "owner_email": "bench-operator@example.com",
                },
                headers=headers,
            )
            check(owned.status_code == 201, owned.text)
            overhead = await measure_overhead(client, headers, "bench-owned", args.overhead_s)
    result["tenancy_overhead_pct"] = round(overhead["overhead_pct"], 2)
    result["_detail"] = {
        "servers": lines,
        "run": {
            "API": "in this process behind httpx's ASGI transport (no socket), DB pool "
            f"{settings.db_pool_size}; each request's commit is inside its timing",
            "provisioning": f"{args.samples} sequential POST /api/v1/tenants per size; seed "
            "tenants through the provisioning service, 4 at a time",
            "tenant-scoped GET": f"8 concurrent clients, {overhead['rounds']} interleaved rounds "
            f"of {args.overhead_s:g} s per path",
        },
        "overhead": overhead,
        "present": present,
        "samples": args.samples,
    }
    return result


def print_table(result: dict[str, Any], file: Any = sys.stdout) -> None:
    detail = result["_detail"]
    print_settings(detail["servers"], detail["run"], file=file)
    print(
        f"{'size':>7} {'tenants present while sampled':>30} {'p50 ms':>9} {'p95 ms':>9} "
        f"{'p99 ms':>9}   target p50<=50, p99<=200",
        file=file,
    )
    for key, (before, after) in detail["present"].items():
        print(
            f"{int(key):>7,} {f'{before:,} -> {after - 1:,}':>30} "
            f"{result['provision_p50_ms'][key]:>9.2f} "
            f"{result['provision_p95_ms'][key]:>9.2f} {result['provision_p99_ms'][key]:>9.2f}",
            file=file,
        )
    print(
        f"verified: each of the {detail['samples']} tenants per size is active, with every "
        "tenant table in its schema, its ledger row at head, one owner and its event",
        file=file,
    )
    o = detail["overhead"]
    print(
        f"\ntenant-scoped GET: {o['without_rps']:,.0f} req/s without the search_path step, "
        f"{o['with_rps']:,.0f} req/s with it → overhead {result['tenancy_overhead_pct']:.2f}% "
        f"(median of {o['rounds']} rounds, range "
        f"{o['overhead_range_pct'][0]:.1f}% to {o['overhead_range_pct'][1]:.1f}%; target <= 10%;"
        " negative: the step's path was faster, i.e. noise)",
        file=file,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="table to stderr, one JSON line")
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--overhead-s", type=float, default=2.0)
    arguments = parser.parse_args()
    quiet_logging()
    outcome = asyncio.run(run(arguments))
    if arguments.json:
        print_table(outcome, file=sys.stderr)
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))
    else:
        print_table(outcome)
