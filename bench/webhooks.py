"""Webhooks benchmark: 100 events a second for 60 s, each fanned out to 5 endpoints (500
deliveries a second) on loopback receivers that verify every signature; one endpoint is down
for the first 20 s.

Processes, on durable embedded servers (bench/_servers.py: PostgreSQL with fsync and
synchronous_commit on, Redis with `appendfsync always`) or DATABASE_URL / REDIS_URL: one
`socialflow relay` and one `socialflow worker --queues webhooks --processes 1`, at the
product's defaults. The receivers (bench/_webhook_receivers.py, a process of their own) verify
each request with the `standardwebhooks` package and log when it arrived; the down one does not
listen at all for its first 20 s (connections refused).

Setup (not timed): a tenant provisioned through `provision_tenant`, its five endpoints created
through the webhooks service (`settings.*`, secrets sealed by the real vault), the healthy four
first with a warm-up of 20 events delivered to them (workers in production are warm), then the
down one. The events: `--rate` a second for `--duration-s`, each one committed transaction of
the tenant settings service (`update_settings`, display name "bench <n>"), paced from T0; each
one's commit time taken when its transaction returned.

Measured, from the receivers' logs:
- delivery latency of the healthy endpoints: arrival at the receiver minus the event's commit,
  p50 and p99 over every (event, healthy endpoint);
- lost: (event, endpoint) pairs never received with a good signature by the deadline
  (`--deadline-s` after the last event);
- bad signatures: requests whose signature did not verify;
- catch-up: from the moment the down endpoint came up to when it had received every event
  committed while it was down (the backlog), in seconds.
The run checks itself: every event was committed and dispatched (each one in the history),
every delivery row of the tenant is `delivered`, nothing dead-lettered.

JSON keys: `p50_ms`, `p99_ms`, `lost`, `catch_up_s`.

    python bench/webhooks.py [--json] [--rate 100 --duration-s 60 --down-s 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psutil  # type: ignore[import-untyped]
import psycopg

from _http_bench import cached_api_environment, loopback_worker_settings
from _processes import Supervised, server_pids, tree_cpu_s
from _servers import (
    check,
    durable_servers,
    prepare_shared,
    print_settings,
    quiet_logging,
    server_settings,
    settings_lines,
)
from socialflow.access.directory import tenant_by_id
from socialflow.access.permissions import Role
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess
from socialflow.db.engine import libpq_url
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.identity.services import ensure_operator, get_or_create_user
from socialflow.resources import Resources
from socialflow.settings import Settings
from socialflow.tenancy.services import create_agency, provision_tenant
from socialflow.tenancy.tenant_settings import update_settings
from socialflow.webhooks.bodies import WebhookCreate
from socialflow.webhooks.services import create_endpoint

AGENCY = "bench-webhooks"
PLAN = "enterprise"
ENDPOINTS = 5
WARM_EVENTS = 20
WRITERS = 16  # event transactions under way at once
BEGAN = time.monotonic()
DEFAULTS = {name: Settings.model_fields[name].default for name in Settings.model_fields}


def progress(message: str) -> None:
    print(f"[{time.monotonic() - BEGAN:6.1f} s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_pids(settings: Settings) -> dict[str, int]:
    with psycopg.connect(libpq_url(settings.database_url or "")) as conn:
        return server_pids(conn, settings.redis_url or "")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Receiver:
    port: int
    file: Path
    secret: str = ""
    listen_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def arrivals(self) -> list[tuple[float, str, int, bool]]:
        if not self.file.exists():
            return []
        found = []
        for line in self.file.read_text().splitlines():
            at, webhook_id, number, verified = line.split()
            found.append((float(at), webhook_id, int(number), verified == "1"))
        return found


class Receivers:
    """The receivers' process."""

    def __init__(self, receivers: list[Receiver], log: Path) -> None:
        config = {
            "receivers": [
                {"port": r.port, "secret": r.secret, "file": str(r.file), "listen_at": r.listen_at}
                for r in receivers
            ]
        }
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_webhook_receivers.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        assert self.popen.stdin is not None
        assert self.popen.stdout is not None
        self.popen.stdin.write(json.dumps(config).encode())
        self.popen.stdin.close()
        check(self.popen.stdout.readline().strip() == b"ready", f"receivers: see {log}")

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(timeout=30)


@dataclass
class Tenant:
    slug: str
    access: TenantAccess
    schema: str


async def prepare_tenant(resources: Resources, settings: Settings) -> Tenant:
    async with resources.unit_of_work() as session:
        operator_user = await ensure_operator(
            session, settings, email="operator@bench.example", password="bench password 12345"
        )
        operator = Principal(operator_user.id, operator_user.email, True)
        await create_agency(session, operator, slug=AGENCY, name="Bench webhooks")
        out = await provision_tenant(
            session,
            settings,
            operator,
            slug="bench-hooks",
            name="Bench hooks",
            agency_slug=AGENCY,
            plan=PLAN,
            owner_email="owner@bench-hooks.example",
        )
        owner, _ = await get_or_create_user(session, "owner@bench-hooks.example")
        await session.flush()
        ref = await tenant_by_id(session, uuid.UUID(out.id))
        assert ref is not None
    access = TenantAccess(ref, Principal(owner.id, owner.email, False), Role.OWNER, False)
    return Tenant(ref.slug, access, ref.schema_name)


async def add_endpoint(resources: Resources, tenant: Tenant, receiver: Receiver) -> None:
    async with resources.unit_of_work() as session:
        await enter_tenant_schema(session, tenant.schema)
        made = await create_endpoint(
            session,
            tenant.access,
            settings=resources.settings,
            vault=resources.vault,
            data=WebhookCreate(url=receiver.url, event_types=["settings.*"]),
        )
    assert made.signing_secret is not None
    receiver.secret = made.signing_secret


async def emit(resources: Resources, tenant: Tenant, number: int) -> float:
    """One event, committed; when the commit returned."""
    async with resources.unit_of_work() as session:
        await enter_tenant_schema(session, tenant.schema)
        await update_settings(session, tenant.access, {"display_name": f"bench {number}"})
    return time.time()


async def paced(
    resources: Resources, tenant: Tenant, first: int, count: int, rate: float
) -> dict[int, float]:
    """`count` events from number `first` on, `rate` a second from now (at most WRITERS
    transactions at once, as an API's pool would allow); their commit times."""
    committed: dict[int, float] = {}
    start = time.monotonic()
    writers = asyncio.Semaphore(WRITERS)

    async def one(number: int) -> None:
        async with writers:
            committed[number] = await emit(resources, tenant, number)

    tasks = []
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(first + n)))
    await asyncio.gather(*tasks)
    return committed


def received(receivers: list[Receiver]) -> list[dict[int, float]]:
    """Per receiver: event number → first good arrival."""
    found = []
    for receiver in receivers:
        first: dict[int, float] = {}
        for at, _, number, verified in receiver.arrivals():
            if verified and number >= 0 and number not in first:
                first[number] = at
        found.append(first)
    return found


async def wait_all(receivers: list[Receiver], numbers: set[int], deadline: float) -> None:
    while time.time() < deadline:
        if all(numbers <= set(got) for got in received(receivers)):
            return
        await asyncio.sleep(0.5)


async def measure(
    settings: Settings, env: dict[str, str], args: argparse.Namespace, data_dir: Path
) -> dict[str, Any]:
    resources = Resources.open(settings)
    receivers = [Receiver(free_port(), data_dir / f"receiver-{n}.log") for n in range(ENDPOINTS)]
    down, healthy = receivers[0], receivers[1:]
    tenant = await prepare_tenant(resources, settings)
    for receiver in healthy:
        await add_endpoint(resources, tenant, receiver)
    logs = Path(args.logs) if args.logs else data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    relay = Supervised(["relay"], env, logs / "relay.log")
    worker = Supervised(
        ["worker", "--queues", "webhooks", "--processes", str(args.processes)],
        env,
        logs / "worker.log",
    )
    process: Receivers | None = None
    try:
        # The healthy receivers up; the warm-up delivered to them.
        warm = Receivers(healthy, logs / "warm-receivers.log")
        progress("warming up")
        await paced(resources, tenant, 1_000_000, WARM_EVENTS, 10.0)
        await wait_all(healthy, set(range(1_000_000, 1_000_000 + WARM_EVENTS)), time.time() + 60)
        warm.stop()
        for receiver in healthy:
            receiver.file.unlink(missing_ok=True)
        await add_endpoint(resources, tenant, down)
        t0 = time.time() + 1.0
        down.listen_at = t0 + args.down_s
        process = Receivers(receivers, logs / "receivers.log")
        await asyncio.sleep(max(0.0, t0 - time.time()))
        count = int(args.rate * args.duration_s)
        progress(f"{count} events at {args.rate:g}/s, endpoint 0 down for {args.down_s:g} s")
        parts = {
            "worker": worker.popen.pid,
            "relay": relay.popen.pid,
            "receivers": process.popen.pid,
            **_server_pids(settings),
        }
        cpu_before = {name: tree_cpu_s(pid) for name, pid in parts.items()}
        own_before = sum(psutil.Process().cpu_times()[:2])
        wall_before = time.monotonic()
        committed = await paced(resources, tenant, 0, count, args.rate)
        generated = time.time()
        written_in = max(committed.values()) - min(committed.values())
        progress("waiting for every delivery")
        await wait_all(receivers, set(committed), generated + args.deadline_s)
        arrivals = received(receivers)
        wall = time.monotonic() - wall_before
        cpu = {name: tree_cpu_s(pid) - cpu_before[name] for name, pid in parts.items()}
        cpu["benchmark (the events' writers)"] = sum(psutil.Process().cpu_times()[:2]) - own_before
        check(relay.alive() and worker.alive(), f"relay or worker exited; see {logs}")
        return score(committed, arrivals, receivers, down, generated, settings) | {
            "events": count,
            "written_per_s": round((count - 1) / written_in, 1) if written_in else math.nan,
            "cpu_s": {name: round(value, 1) for name, value in cpu.items()},
            "wall_s": round(wall, 1),
        }
    finally:
        if process is not None:
            process.stop()
        worker.stop()
        relay.stop()
        await resources.close()


def score(
    committed: dict[int, float],
    arrivals: list[dict[int, float]],
    receivers: list[Receiver],
    down: Receiver,
    generated: float,
    settings: Settings,
) -> dict[str, Any]:
    latencies = [
        (got[n] - at) * 1000 for got in arrivals[1:] for n, at in committed.items() if n in got
    ]
    lost = sum(1 for got in arrivals for n in committed if n not in got)
    bad = sum(1 for r in receivers for _, _, _, ok in r.arrivals() if not ok)
    duplicates = sum(
        len([a for a in r.arrivals() if a[3]]) - len({a[1] for a in r.arrivals() if a[3]})
        for r in receivers
    )
    assert down.listen_at is not None
    backlog = [n for n, at in committed.items() if at < down.listen_at]
    came_back = down.listen_at
    caught_up = max((arrivals[0][n] for n in backlog if n in arrivals[0]), default=math.nan)
    with psycopg.connect(libpq_url(settings.database_url or "")) as conn:
        states: dict[str, int] = {
            str(state): int(str(count))
            for state, count in conn.execute(
                'SELECT state, count(*) FROM "t_bench_hooks".webhook_deliveries GROUP BY state'
            ).fetchall()
        }
        dead = conn.execute("SELECT count(*) FROM shared.outbox_dead_letter").fetchone()
        kept = conn.execute(
            "SELECT count(*) FROM shared.event_history WHERE event_type = 'settings.updated'"
        ).fetchone()
    check(dead == (0,), f"dead letters: {dead}")
    check(kept is not None and kept[0] >= len(committed), f"history holds {kept}")
    return {
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies, default=math.nan), 1),
        "lost": lost,
        "bad_signatures": bad,
        "duplicates": duplicates,
        "backlog": len(backlog),
        "catch_up_s": round(caught_up - came_back, 2),
        "drained_after_last_event_s": round(
            max(max(got.values(), default=0) for got in arrivals) - generated, 2
        ),
        "delivery_states": states,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logging()
    started = time.monotonic()
    with durable_servers() as servers:
        assert servers.redis_url is not None
        prepare_shared(servers.database_url)
        with cached_api_environment(servers) as env:
            settings = loopback_worker_settings(servers, env)
            result = asyncio.run(measure(settings, env, args, servers.data_dir))
            lines = settings_lines(servers, server_settings(servers))
    return {"result": result, "lines": lines, "total_s": time.monotonic() - started}


def print_report(args: argparse.Namespace, outcome: dict[str, Any], out: TextIO) -> None:
    result = outcome["result"]
    run_lines = {
        "events": f"{result['events']:,} at {args.rate:g}/s for {args.duration_s:g} s, "
        f"{ENDPOINTS} endpoints ({result['events'] * ENDPOINTS:,} deliveries)",
        "down endpoint": f"refuses connections for the first {args.down_s:g} s",
        "processes": f"1 relay, 1 worker --queues webhooks --processes {args.processes} "
        f"(WORKER_WEBHOOK_THREADS {DEFAULTS['worker_webhook_threads']} threads each)",
        "WEBHOOK_CONCURRENCY": str(DEFAULTS["webhook_concurrency"]),
        "WEBHOOK_TIMEOUT_S": str(DEFAULTS["webhook_timeout_s"]),
    }
    print_settings(outcome["lines"], run_lines, file=out)
    rows = [
        ("events committed per second (achieved)", f"{result['written_per_s']:,.1f}", "—"),
        ("delivery latency p50 (healthy)", f"{result['p50_ms']:,.1f} ms", "—"),
        ("delivery latency p99 (healthy)", f"{result['p99_ms']:,.1f} ms", "≤ 1,000 ms"),
        ("delivery latency max (healthy)", f"{result['max_ms']:,.1f} ms", "—"),
        ("lost", str(result["lost"]), "0"),
        ("bad signatures", str(result["bad_signatures"]), "0"),
        ("duplicates (same webhook-id twice)", str(result["duplicates"]), "—"),
        ("backlog of the down endpoint", f"{result['backlog']:,} events", "—"),
        ("down endpoint caught up after", f"{result['catch_up_s']:.1f} s", "≤ 60 s"),
        ("all drained after the last event", f"{result['drained_after_last_event_s']:.1f} s", "—"),
        ("delivery rows", json.dumps(result["delivery_states"]), "all delivered"),
    ]
    cpu = result["cpu_s"]
    wall = result["wall_s"]
    rows.append(("", "", ""))
    rows.append((f"CPU seconds, T0 to the last delivery ({wall:.0f} s)", "", ""))
    for name, value in sorted(cpu.items(), key=lambda item: -item[1]):
        rows.append((f"  {name}", f"{value:,.1f} s", f"{value / wall:.0%} of a core"))
    total = sum(cpu.values())
    rows.append(
        ("  all", f"{total:,.1f} s", f"{total / wall / (os.cpu_count() or 1):.0%} of the machine")
    )
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'result':>18}  target", file=out)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>18}  {target}", file=out)
    print(f"\n(total {outcome['total_s']:.0f} s)", file=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--rate", type=float, default=100.0, help="events a second")
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--down-s", type=float, default=20.0)
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="20/s for 15 s, down 5 s")
    parser.add_argument("--logs", help="keep the processes' logs in this folder")
    parser.add_argument("--processes", type=int, default=2, help="of the webhooks worker")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.duration_s, args.down_s = 20.0, 15.0, 5.0
    outcome = run(args)
    print_report(args, outcome, sys.stdout)
    result = outcome["result"]
    if args.json:
        keys = ("p50_ms", "p99_ms", "lost", "catch_up_s")
        print(json.dumps({k: result[k] for k in keys}))


if __name__ == "__main__":
    main()
