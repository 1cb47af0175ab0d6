"""Publishing benchmark: 1,000 posts across 100 tenants due in the same second, published by
two worker processes to platforms answering in 50 ms; then again with the relay and a worker
SIGKILLed mid-run.

Processes, on durable embedded servers (bench/_servers.py: PostgreSQL with fsync and
synchronous_commit on, Redis with `appendfsync always`) or DATABASE_URL / REDIS_URL: one
`socialflow relay` and TWO `socialflow worker --queues publishing --processes 1`, at the
product's defaults unless the settings block says otherwise. The platforms are Mastodon-shaped
instances on loopback (bench/_platform_server.py, a process of its own), answering every call
after 50 ms and creating a status for EVERY status POST: they do not dedup by Idempotency-Key,
so a status created twice is the engine's doing. By default every account is on one instance
(as many brands share mastodon.social); `--instances N` spreads the tenants over N instances
(ports), whose limits each worker then reads, and keeps connections to, separately.

Setup (not timed), per run: `--tenants` tenants provisioned through `provision_tenant`, each
with a reviewer (an admin member) and one Mastodon account whose row is stored as the connect
flow stores it (credentials sealed by the real vault, no expiry; the OAuth round trips are
skipped). Then `--posts` text posts (10 a tenant, a link and hashtags each, distinct texts),
each through the real services in the tenant's schema: `create_post` with `scheduled_at` = T0,
`submit_post`, `approve_post` by the reviewer (the approval hash is the real one) and
`schedule_post`, which writes the post's deferred `post.publish_due` outbox event with
`available_at` = T0. T0 is the same instant for every post, a whole second far enough ahead
for the setup to end before it (checked; the lead is estimated from the warm-up). Before
that, the run's processes publish 4, then 10, posts of a warm-up tenant of their own (their
connections, the vault's data keys and imports: workers in production are warm), not counted.

What is measured, per run, from the platform's own records and the tenants' schemas:

- start lag of a post: when its first status POST reached the platform (the platform's clock,
  time.time() on this machine) minus T0; p50, p99 and max over the run's posts;
- duplicates: posts with more than one status created on the platform (matched by the
  post's Idempotency-Key and, as a cross-check, by its text);
- lost: posts that are not `published` by T0 + `--deadline-s`, with their destination
  `published` and its platform_post_id a status the platform created for that very post.

Where the lag goes is shown too: when the relay took the `post.publish_due` rows out of the
outbox (polled from another connection), T0 → each delivery claimed (`first_attempt_at`:
relay, Redis queue, a free worker thread) and claimed → its status POST at the platform (the
claim step, the instance's limits, the call); and the CPU seconds each part of the system
(workers, relay, PostgreSQL, Redis, the platform, this process) used from T0 to the last status,
against what the machine's CPUs offer in that window.

The second run ("kill") has fresh tenants and processes, with PUBLISH_STALLED_AFTER_S at
`--stalled-after-s` (the product's default is 600 s; at 10 s the watchdog reconciles within the
run). From T0 + `--kill-at-s`, the relay and the first worker seen with a status POST under way
at the platform (its client port among the worker's connections: the platform created the
status, the engine has no answer) are SIGKILLed, each its whole process group, and restarted at
once, as a supervisor would. The run then waits until the deadline before counting: Dramatiq
gives a dead worker's prefetched messages back only after its 60 s heartbeat timeout, and a
duplicate could come from any recovery path.

JSON: `start_lag_p50_ms` and `start_lag_p99_ms` of the clean run; `duplicates` and `lost`
summed over both runs. The run checks itself: every platform status is one of the run's posts,
each scheduled post had its `post.publish_due` event due at T0, every post's delivery carries
the key derived from its approved content, nothing dead-lettered.

    python bench/publishing.py [--json] [--posts 1000 --tenants 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psutil  # type: ignore[import-untyped]
import psycopg
import redis
from psycopg import sql

from _http_bench import cached_api_environment, loopback_worker_settings
from _platform_server import Arrival, PlatformProcess
from _processes import Supervised, server_pids, tree_cpu_s
from _servers import (
    Servers,
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
from socialflow.members.models import Membership
from socialflow.publishing.bodies import ApprovalIn, DestinationIn, PostCreate
from socialflow.publishing.content import idempotency_key
from socialflow.publishing.services import approve_post, create_post, schedule_post, submit_post
from socialflow.resources import Resources
from socialflow.settings import Settings
from socialflow.social.credentials import seal
from socialflow.social.models import SocialAccount
from socialflow.social.platforms.base import Credentials
from socialflow.social.services import MASTODON_SCOPES
from socialflow.tenancy.services import create_agency, provision_tenant

AGENCY = "bench-publishing"
PASSWORD = "bench password 12345"
PLAN = "pro"
WARM_POSTS = 4
WARM_LEAD_S = 3.0
SETUP_CONCURRENCY = 4  # tenants set up at once (their own transactions)
KILL_WAIT_S = 10.0  # from T0 + kill_at: the longest wait for a worker's call under way
SETTLE_S = 3.0  # after a clean run's last post: time for anything sent twice to arrive
DEFAULTS = {name: Settings.model_fields[name].default for name in Settings.model_fields}
TOPICS = (
    "Our spring collection is in the shop",
    "Behind the scenes at this week's studio shoot",
    "Five small habits that make mornings easier",
    "We're hiring: two designers and a support lead",
    "Thank you for 10,000 orders this year",
    "New in the journal: how we pick our suppliers",
    "Live Q&A with the founders on Thursday",
    "Weekend opening hours for the holidays",
    "A customer story we love",
    "Sneak peek at next month's launch",
)


@dataclass(frozen=True)
class Tenant:
    slug: str
    schema: str
    account_id: uuid.UUID
    account_ref: str  # the account's id on its instance
    author: TenantAccess
    reviewer: TenantAccess


@dataclass(frozen=True)
class Scheduled:
    """A post scheduled at T0, as the platform should see it."""

    slug: str
    post_id: uuid.UUID
    account_ref: str
    key: str
    text: str


@dataclass
class Outcome:
    """What one run measured."""

    name: str
    posts: int
    tenants: int
    setup_s: float
    margin_s: float  # setup ended this long before T0
    setup_total_s: float = 0.0  # tenants, warm-up and posts
    dispatched_ms: tuple[float, float] = (math.nan, math.nan)  # the relay: first, last due row
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds, T0 → the last status
    cpu_window_s: float = 0.0
    statuses: int = 0
    duplicates: int = 0
    extra_statuses: int = 0
    wrong_keys: int = 0
    lost: int = 0
    lags_ms: list[float] = field(default_factory=list)
    claimed_ms: list[float] = field(default_factory=list)  # T0 → the delivery claimed
    claim_to_call_ms: list[float] = field(default_factory=list)  # claimed → its POST arrived
    all_published_s: float | None = None
    states: Counter[str] = field(default_factory=Counter)
    attempts_over_one: int = 0
    lookups: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    kill: dict[str, Any] = field(default_factory=dict)
    leftovers: dict[str, int] = field(default_factory=dict)

    def lag(self, q: int) -> float:
        return percentile(self.lags_ms, q)


BEGAN = time.monotonic()


def progress(message: str) -> None:
    """Where a long run is (stderr: stdout is the table, or the JSON line)."""
    print(f"[{time.monotonic() - BEGAN:6.1f} s] {message}", file=sys.stderr, flush=True)


def since(moment: float | None, t0: float) -> float:
    """Milliseconds from T0 (NaN for a moment that never came)."""
    return math.nan if moment is None else (moment - t0) * 1000


def percentile(values: Sequence[float], q: int) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- processes ---------------------------------------------------------------------------------


class Fleet:
    """The run's relay and its two publishing workers."""

    def __init__(self, env: dict[str, str], logs: Path, run: str, threads: int | None) -> None:
        worker = ["worker", "--queues", "publishing", "--processes", "1"]
        if threads is not None:
            worker += ["--threads", str(threads)]
        self.relay = Supervised(["relay"], env, logs / f"{run}-relay.log")
        self.workers = [Supervised(worker, env, logs / f"{run}-worker-{n}.log") for n in (1, 2)]

    def check_alive(self) -> None:
        for process in (self.relay, *self.workers):
            check(
                process.alive(), f"`socialflow {' '.join(process.args)}` exited; see {process.log}"
            )

    def stop(self) -> None:
        with ThreadPoolExecutor(3) as stopping:  # at once, as a deploy stops them
            list(stopping.map(Supervised.stop, (*self.workers, self.relay)))


def cpu_use(fleet: Fleet, platform: PlatformProcess, servers: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far, by part of the system."""
    return {
        "workers": sum(tree_cpu_s(w.popen.pid) for w in fleet.workers),
        "relay": tree_cpu_s(fleet.relay.popen.pid),
        **{name: tree_cpu_s(pid) for name, pid in servers.items()},
        "platform": tree_cpu_s(platform.popen.pid),
        "benchmark": sum(psutil.Process().cpu_times()[:2]),  # this process alone
    }


# -- setup -------------------------------------------------------------------------------------


@dataclass
class Bench:
    resources: Resources
    settings: Settings
    platform: PlatformProcess
    operator: Principal
    reviewer: Principal
    instance_count: int = 1
    accounts_made: int = 0

    async def tenants(self, prefix: str, count: int) -> list[Tenant]:
        """`count` tenants provisioned, each with a reviewer and a Mastodon account on an
        instance (round robin; registered on the platform with its token)."""
        first = self.accounts_made
        self.accounts_made += count
        tokens: dict[str, tuple[str, str]] = {}
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def one(number: int) -> Tenant:
            async with gate:
                tenant, token = await self._tenant(f"{prefix}-{number:04d}", first + number)
            tokens[token] = (tenant.account_ref, tenant.slug.replace("-", "_"))
            return tenant

        made = await asyncio.gather(*(one(n) for n in range(count)))
        self.platform.add_accounts(tokens)
        return list(made)

    async def _tenant(self, slug: str, number: int) -> tuple[Tenant, str]:
        settings, vault = self.settings, self.resources.vault
        async with self.resources.unit_of_work() as session:
            owner_email = f"{slug}@bench.example"
            out = await provision_tenant(
                session,
                settings,
                self.operator,
                slug=slug,
                name=f"Bench {slug}",
                agency_slug=AGENCY,
                plan=PLAN,
                owner_email=owner_email,
            )
            tenant_id = uuid.UUID(out.id)
            owner, _ = await get_or_create_user(session, owner_email)
            session.add(
                Membership(
                    tenant_id=tenant_id,
                    user_id=self.reviewer.user_id,
                    role=Role.ADMIN.value,
                    reviewer=True,
                )
            )
            await session.flush()
            ref = await tenant_by_id(session, tenant_id)
            check(ref is not None, f"tenant {slug} not found after provisioning")
            assert ref is not None
            await enter_tenant_schema(session, ref.schema_name)
            account_ref = str(100_000 + number)
            origin = self.platform.origin(number % self.instance_count)
            account = SocialAccount(
                id=uuid.uuid4(),
                platform="mastodon",
                server_url=origin,
                account_ref=account_ref,
                handle=f"@{slug.replace('-', '_')}@{origin.removeprefix('http://')}",
                display_name=f"Bench {slug}",
                status="active",
                scopes=list(MASTODON_SCOPES),
                connected_by=f"user:{owner.id}",
                credentials=b"",
            )
            session.add(account)
            await session.flush()
            token = secrets.token_urlsafe(32)
            credentials = Credentials(
                access_token=token,
                client_id=secrets.token_urlsafe(16),
                client_secret=secrets.token_urlsafe(32),
            )
            account.credentials = await seal(session, vault, tenant_id, account.id, credentials)
            await session.flush()
        author = Principal(owner.id, owner.email, False)
        return (
            Tenant(
                slug=slug,
                schema=ref.schema_name,
                account_id=account.id,
                account_ref=account_ref,
                author=TenantAccess(ref, author, Role.OWNER, False),
                reviewer=TenantAccess(ref, self.reviewer, Role.ADMIN, False, reviewer=True),
            ),
            token,
        )

    async def schedule(
        self, tenants: list[Tenant], per_tenant: int, t0: datetime
    ) -> list[Scheduled]:
        """Each tenant's posts written, submitted, approved and scheduled at `t0` through the
        services, one transaction a tenant."""
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def one(tenant: Tenant) -> list[Scheduled]:
            async with gate, self.resources.unit_of_work() as session:
                await enter_tenant_schema(session, tenant.schema)
                return [await _scheduled_post(session, tenant, n, t0) for n in range(per_tenant)]

        done = await asyncio.gather(*(one(t) for t in tenants))
        return [post for posts in done for post in posts]


async def _scheduled_post(session: Any, tenant: Tenant, n: int, t0: datetime) -> Scheduled:
    text = (
        f"{TOPICS[n % len(TOPICS)]} ({tenant.slug}, post {n + 1}): the whole story is at "
        f"https://example.com/{tenant.slug}/posts/{n + 1} - tell us what you think! "
        f"#{TOPICS[n % len(TOPICS)].split()[1].strip(',:')} #SmallBusiness"
    )
    body = PostCreate(
        text=text,
        destinations=[DestinationIn(account_id=tenant.account_id)],
        labels=["campaign"],
        scheduled_at=t0,
    )
    created = await create_post(session, tenant.author, body)
    post_id = uuid.UUID(created.id)
    await submit_post(session, tenant.author, post_id)
    await approve_post(session, tenant.reviewer, post_id, ApprovalIn(comment="Looks good."))
    done = await schedule_post(session, tenant.author, post_id, now=False)
    check(done.status == "scheduled", f"{post_id}: {done.status} after scheduling")
    check(done.approved_sha256 == done.content_sha256, f"{post_id}: approval not current")
    assert done.approved_sha256 is not None
    destination = uuid.UUID(done.destinations[0].id)
    key = idempotency_key(post_id, destination, done.approved_sha256)
    return Scheduled(tenant.slug, post_id, tenant.account_ref, key, text)


async def prepare_people(resources: Resources, settings: Settings) -> tuple[Principal, Principal]:
    """The operator who provisions, the agency, and the reviewer every tenant shares."""
    async with resources.unit_of_work() as session:
        user = await ensure_operator(
            session, settings, email="operator@bench.example", password=PASSWORD
        )
        operator = Principal(user.id, user.email, True)
        await create_agency(session, operator, slug=AGENCY, name="Bench publishing")
        reviewer, _ = await get_or_create_user(session, "reviewer@bench.example")
    return operator, Principal(reviewer.id, reviewer.email, False)


# -- reading what happened -----------------------------------------------------------------------


def deliveries(conn: psycopg.Connection[Any], schemas: list[str]) -> list[tuple[Any, ...]]:
    """Every post and destination of these schemas: (post id, post status, destination state,
    platform_post_id, idempotency key, attempts, lookups, first attempt, published) with
    times as epoch seconds."""
    parts = [
        sql.SQL(
            "SELECT p.id, p.status, d.state, d.platform_post_id, d.idempotency_key, d.attempts, "
            "d.lookups, extract(epoch FROM d.first_attempt_at)::float8, "
            "extract(epoch FROM d.published_at)::float8 "
            "FROM {schema}.posts p JOIN {schema}.post_destinations d ON d.post_id = p.id"
        ).format(schema=sql.Identifier(schema))
        for schema in schemas
    ]
    return conn.execute(sql.SQL(" UNION ALL ").join(parts)).fetchall()


FINAL = frozenset({"published", "partially_published", "failed", "unconfirmed", "cancelled"})


def all_final(rows: list[tuple[Any, ...]], posts: set[uuid.UUID]) -> bool:
    found = {row[0]: row for row in rows if row[0] in posts}
    return len(found) == len(posts) and all(
        row[1] in FINAL and row[2] in ("published", "failed", "cancelled") for row in found.values()
    )


def publish_due_rows(conn: psycopg.Connection[Any], slugs: list[str], t0: datetime) -> int:
    row = conn.execute(
        "SELECT count(*) FROM shared.outbox WHERE tenant = ANY(%s) "
        "AND event_type = 'post.publish_due' AND available_at = %s",
        (slugs, t0),
    ).fetchone()
    return int(row[0]) if row else 0


def leftovers(conn: psycopg.Connection[Any], redis_url: str, slugs: list[str]) -> dict[str, int]:
    """What is still pending for the run's tenants, and Dramatiq's publishing queue."""
    due = conn.execute(
        "SELECT count(*) FILTER (WHERE available_at <= now()), count(*) FROM shared.outbox "
        "WHERE tenant = ANY(%s) AND event_type LIKE 'post.%%'",
        (slugs,),
    ).fetchone()
    dead = conn.execute(
        "SELECT count(*) FROM shared.outbox_dead_letter WHERE tenant = ANY(%s)", (slugs,)
    ).fetchone()
    client = redis.Redis.from_url(redis_url)
    try:
        queued = int(client.llen("dramatiq:publishing"))
        unacked = sum(
            int(client.scard(key)) for key in client.scan_iter("dramatiq:__acks__.*.publishing")
        )
    finally:
        client.close()
    return {
        "outbox_due": int(due[0]) if due else 0,
        "outbox_deferred": int(due[1]) - int(due[0]) if due else 0,
        "dead_letters": int(dead[0]) if dead else 0,
        "queued": queued,
        "unacked": unacked,
    }


def score(
    outcome: Outcome,
    scheduled: list[Scheduled],
    arrivals: list[Arrival],
    rows: list[tuple[Any, ...]],
    t0: float,
) -> None:
    """Lags, duplicates and lost posts from the platform's records and the database's."""
    accounts = {s.account_ref for s in scheduled}
    mine = [a for a in arrivals if a.account in accounts]
    by_key: dict[str, list[Arrival]] = {}
    by_text: dict[tuple[str, str], list[Arrival]] = {}
    for arrival in mine:
        by_key.setdefault(arrival.key or "", []).append(arrival)
        by_text.setdefault((arrival.account, arrival.text), []).append(arrival)
    posts = {s.post_id: s for s in scheduled}
    known = {(s.account_ref, s.text) for s in scheduled}
    strays = [a for a in mine if (a.account, a.text) not in known]
    check(not strays, f"{len(strays)} statuses that are none of the run's posts: {strays[:2]}")
    db = {row[0]: row for row in rows if row[0] in posts}
    check(len(db) == len(posts), f"{len(db)} of {len(posts)} posts found in the schemas")
    outcome.statuses = len(mine)
    published_at: list[float] = []
    for post in scheduled:
        sent = by_text.get((post.account_ref, post.text), [])
        keyed = by_key.get(post.key, [])
        outcome.wrong_keys += sum(1 for a in sent if a.key != post.key)
        copies = max(len(sent), len(keyed))
        if copies > 1:
            outcome.duplicates += 1
            outcome.extra_statuses += copies - 1
        _id, status, state, platform_id, key, attempts, lookups, first, published = db[post.post_id]
        check(key == post.key, f"{post.post_id}: delivery key {key}, not {post.key}")
        outcome.states[status] += 1
        outcome.attempts_over_one += attempts > 1
        outcome.lookups += lookups
        own_ids = {a.status_id for a in sent}
        if not (status == "published" and state == "published" and platform_id in own_ids):
            outcome.lost += 1
        elif published is not None:
            published_at.append(published)
        if sent:
            arrived = min(a.arrived for a in sent)
            outcome.lags_ms.append((arrived - t0) * 1000)
            if first is not None:
                outcome.claimed_ms.append((first - t0) * 1000)
                outcome.claim_to_call_ms.append((arrived - first) * 1000)
    if published_at and len(published_at) == len(scheduled):
        outcome.all_published_s = max(published_at) - t0


class DispatchWatch(threading.Thread):
    """When the relay took the run's first and last `post.publish_due` rows out of the outbox
    (polled every 10 ms from just before T0, on a connection of its own)."""

    def __init__(self, database_url: str, slugs: list[str], timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.database_url, self.slugs, self.timeout_s = database_url, slugs, timeout_s
        self.first: float | None = None
        self.last: float | None = None

    def run(self) -> None:
        deadline = time.time() + self.timeout_s
        with psycopg.connect(libpq_url(self.database_url), autocommit=True) as conn:
            total: int | None = None
            while time.time() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM shared.outbox WHERE tenant = ANY(%s) "
                    "AND event_type = 'post.publish_due'",
                    (self.slugs,),
                ).fetchone()
                left, now = int(row[0]) if row else 0, time.time()
                total = left if total is None else total
                if self.first is None and left < total:
                    self.first = now
                if left == 0:
                    self.last = now
                    return
                time.sleep(0.01)


# -- a run -------------------------------------------------------------------------------------


async def wait_published(
    conn: psycopg.Connection[Any], schema: str, posts: set[uuid.UUID], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not all_final(deliveries(conn, [schema]), posts):
        check(time.monotonic() < deadline, f"warm-up posts not published in {timeout_s} s")
        await asyncio.sleep(0.2)
    rows = [r for r in deliveries(conn, [schema]) if r[0] in posts]
    check(all(r[1] == "published" for r in rows), f"warm-up posts ended {[r[1] for r in rows]}")


async def warm_up(bench: Bench, conn: psycopg.Connection[Any], warm: Tenant, posts: int) -> float:
    """The fleet's first posts (while its workers boot), then `posts` more; the seconds one
    post took to set up in that second round (one tenant, one transaction)."""
    per_post_s = 0.0
    for count in (WARM_POSTS, posts):
        due = datetime.fromtimestamp(math.ceil(time.time() + WARM_LEAD_S), UTC)
        started = time.monotonic()
        scheduled = await bench.schedule([warm], count, due)
        per_post_s = (time.monotonic() - started) / count
        await wait_published(conn, warm.schema, {p.post_id for p in scheduled}, 120)
    return per_post_s


async def run_once(
    bench: Bench,
    servers: Servers,
    env: dict[str, str],
    args: argparse.Namespace,
    name: str,
) -> Outcome:
    assert servers.redis_url is not None
    per_tenant = args.posts // args.tenants
    fleet = Fleet(env, servers.data_dir, name, args.threads)
    try:
        with psycopg.connect(libpq_url(servers.database_url), autocommit=True) as conn:
            started = time.monotonic()
            warm, *tenants = await bench.tenants(f"pub-{name}", args.tenants + 1)
            progress(f"{name}: {len(tenants) + 1} tenants provisioned")
            per_post_s = await warm_up(bench, conn, warm, per_tenant)
            fleet.check_alive()
            # T0: far enough ahead for the setup, estimated from the warm-up's second round.
            lead = args.lead_s or 5 + 1.2 * per_post_s * args.posts
            t0_at = math.ceil(time.time() + lead)
            t0 = datetime.fromtimestamp(t0_at, UTC)
            progress(f"{name}: warm; T0 in {t0_at - time.time():.0f} s")
            setup_started = time.monotonic()
            scheduled = await bench.schedule(tenants, per_tenant, t0)
            setup_s = time.monotonic() - setup_started
            margin = t0_at - time.time()
            check(
                margin > 1.0,
                f"the setup ended {margin:.1f} s before T0: pass a larger --lead-s than {lead:.0f}",
            )
            slugs = [t.slug for t in tenants]
            due = publish_due_rows(conn, slugs, t0)
            check(
                due == len(scheduled),
                f"{due} post.publish_due events due at T0, not {len(scheduled)}",
            )
            progress(f"{name}: {len(scheduled)} posts scheduled in {setup_s:.1f} s")
            outcome = Outcome(name, len(scheduled), len(tenants), setup_s, margin)
            outcome.setup_total_s = time.monotonic() - started
            before = bench.platform.stats()
            schemas = [t.schema for t in tenants]
            posts = {s.post_id for s in scheduled}
            deadline = t0_at + args.deadline_s
            pids = server_pids(conn, servers.redis_url)
            await asyncio.sleep(max(0.0, t0_at - 0.3 - time.time()))
            cpu_before = cpu_use(fleet, bench.platform, pids)
            await asyncio.sleep(max(0.0, t0_at - 0.2 - time.time()))
            watch = DispatchWatch(servers.database_url, slugs, args.deadline_s)
            watch.start()
            await asyncio.sleep(max(0.0, t0_at - time.time()))
            if name == "kill":
                outcome.kill = await kill_mid_run(fleet, bench.platform, t0_at, before, args)
                progress(f"{name}: killed and restarted; counting at T0 + {args.deadline_s:g} s")
                await asyncio.sleep(max(0.0, deadline - time.time()))  # every recovery path
            else:
                await wait_sent(bench.platform, before, len(posts), deadline)
                used = cpu_use(fleet, bench.platform, pids)
                outcome.cpu = {k: v - cpu_before.get(k, 0.0) for k, v in used.items()}
                outcome.cpu_window_s = time.time() - t0_at
                await wait_settled(conn, schemas, posts, deadline)
            fleet.check_alive()
            after = bench.platform.stats()
            outcome.requests = {
                route: count - before["requests"].get(route, 0)
                for route, count in after["requests"].items()
            }
            watch.join()
            outcome.dispatched_ms = (since(watch.first, t0_at), since(watch.last, t0_at))
            rows = deliveries(conn, schemas)
            score(outcome, scheduled, bench.platform.arrivals(), rows, t0_at)
            outcome.leftovers = leftovers(conn, servers.redis_url, slugs)
            check(outcome.leftovers["dead_letters"] == 0, f"dead letters: {outcome.leftovers}")
    finally:
        stopping = time.monotonic()
        fleet.stop()
        progress(f"{name}: processes stopped in {time.monotonic() - stopping:.1f} s")
    return outcome


async def wait_sent(
    platform: PlatformProcess, before: dict[str, Any], posts: int, deadline: float
) -> None:
    """Until the platform has a status for every post (asked every 0.2 s: it is cheap)."""
    while time.time() < deadline:
        if platform.stats()["statuses"] - before["statuses"] >= posts:
            return
        await asyncio.sleep(0.2)


async def wait_settled(
    conn: psycopg.Connection[Any], schemas: list[str], posts: set[uuid.UUID], deadline: float
) -> None:
    """Until every post is settled in the database (asked once a second), then a little
    longer: a status sent twice would arrive meanwhile."""
    while time.time() < deadline:
        if all_final(deliveries(conn, schemas), posts):
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(min(SETTLE_S, max(0.0, deadline - time.time())))


async def kill_mid_run(
    fleet: Fleet,
    platform: PlatformProcess,
    t0: float,
    before: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """From T0 + kill_at: SIGKILL the relay and the first worker seen with a status POST under
    way at the platform (its answer not received: the engine cannot know it happened), then
    restart both at once."""
    await asyncio.sleep(max(0.0, t0 + args.kill_at_s - time.time()))
    give_up = time.time() + KILL_WAIT_S
    target, caught = fleet.workers[0], 0
    while time.time() < give_up and not caught:
        posting = platform.posting()
        for worker in fleet.workers:
            caught = len(posting & worker.local_ports())
            if caught:
                target = worker
                break
        else:
            await asyncio.sleep(0.005)
    killed_at = time.time()
    fleet.relay.kill()
    target.kill()
    fleet.relay.restart()
    target.restart()
    restarted_at = time.time()
    notes = {
        "killed_at_s": round(killed_at - t0, 3),
        "worker": fleet.workers.index(target) + 1,
        "its_status_posts_under_way": caught,
        "statuses_before": platform.stats()["statuses"] - before["statuses"],
        "restarted_in_ms": round((restarted_at - killed_at) * 1000, 1),
    }
    check(caught > 0, f"no worker had a status POST under way: {notes}; adjust --kill-at-s")
    return notes


async def both_runs(
    settings: Settings,
    platform: PlatformProcess,
    servers: Servers,
    env: dict[str, str],
    args: argparse.Namespace,
) -> list[Outcome]:
    resources = Resources.open(settings)
    try:
        operator, reviewer = await prepare_people(resources, settings)
        bench = Bench(resources, settings, platform, operator, reviewer, args.instances)
        clean = await run_once(bench, servers, env, args, "clean")
        kill_env = {**env, "PUBLISH_STALLED_AFTER_S": str(args.stalled_after_s)}
        kill = await run_once(bench, servers, kill_env, args, "kill")
    finally:
        await resources.close()
    return [clean, kill]


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logging()
    started = time.monotonic()
    with durable_servers() as servers:
        assert servers.redis_url is not None
        prepare_shared(servers.database_url)
        instances = args.instances
        platform = PlatformProcess(
            instances, args.latency_ms / 1000, servers.data_dir / "platform.log"
        )
        try:
            with cached_api_environment(servers) as env:
                settings = loopback_worker_settings(servers, env)
                outcomes = asyncio.run(both_runs(settings, platform, servers, env, args))
                lines = settings_lines(servers, server_settings(servers))
        finally:
            platform.stop()
    return {"outcomes": outcomes, "lines": lines, "total_s": time.monotonic() - started}


# -- report ------------------------------------------------------------------------------------


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def print_report(args: argparse.Namespace, result: dict[str, Any], out: TextIO) -> None:
    clean, kill = result["outcomes"]
    threads = (
        f"--threads {args.threads}"
        if args.threads is not None
        else f"WORKER_THREADS default, {DEFAULTS['worker_threads']} threads each"
    )
    setup = "; ".join(
        f"{o.name}: posts set up in {o.setup_s:.1f} s, ended {o.margin_s:.1f} s before T0 "
        f"({o.setup_total_s:.0f} s with tenants and warm-up)"
        for o in (clean, kill)
    )
    print_settings(
        result["lines"],
        {
            "platforms": f"{args.instances} Mastodon-shaped instance(s) on loopback "
            "(bench/_platform_server.py, its own process) shared round robin by each run's "
            "tenants, every answer after "
            f"{args.latency_ms:g} ms, a status for every POST (no Idempotency-Key dedup)",
            "processes": "1 `socialflow relay` (RELAY_CONCURRENCY "
            f"{DEFAULTS['relay_concurrency']}, RELAY_BATCH_SIZE {DEFAULTS['relay_batch_size']}) "
            "and 2 `socialflow worker --queues publishing --processes 1` "
            f"({threads}; WORKER_STEP_CONCURRENCY {DEFAULTS['worker_step_concurrency']}), "
            "fresh for each run",
            "posts": f"{args.posts} across {args.tenants} tenants (plan {PLAN}), "
            f"{args.posts // args.tenants} each with one Mastodon destination, text with a link "
            "and hashtags, all due at T0: create_post, submit_post, approve_post (a reviewer), "
            "schedule_post (its post.publish_due event deferred to T0)",
            "setup": setup,
            "warm-up": f"each run's processes first publish {WARM_POSTS}, then "
            f"{args.posts // args.tenants}, posts of a tenant of their own (not counted)",
            "deviations": 'OUTBOUND_ALLOWED_NETWORKS=["127.0.0.1/32"] and '
            "OUTBOUND_ALLOW_HTTP=true (the platforms are on loopback); VAULT_MASTER_KEYS set "
            "(one key, as production requires); kill run only: PUBLISH_STALLED_AFTER_S="
            f"{args.stalled_after_s} (default {DEFAULTS['publish_stalled_after_s']}) so that "
            "what the kill left `sending` is reconciled within the run",
            "kill run": "SIGKILL of the relay and of the first worker with a status POST under "
            f"way from T0 + {args.kill_at_s:g} s (whole process groups), each restarted at once; "
            f"counted at T0 + {args.deadline_s:g} s",
            "lost": f"not `published` with the platform's own status as receipt by T0 + "
            f"{args.deadline_s:g} s",
        },
        file=out,
    )
    print(
        f"{'run':<7}{'posts':>7}{'statuses':>10}{'dupes':>7}{'lost':>6}{'lag p50 ms':>12}"
        f"{'lag p99 ms':>12}{'lag max ms':>12}{'all published s':>17}",
        file=out,
    )
    for o in (clean, kill):
        done = "-" if o.all_published_s is None else f"{o.all_published_s:.1f}"
        print(
            f"{o.name:<7}{o.posts:>7}{o.statuses:>10}{o.duplicates:>7}{o.lost:>6}"
            f"{ms(o.lag(50)):>12}{ms(o.lag(99)):>12}{ms(max(o.lags_ms, default=math.nan)):>12}"
            f"{done:>17}",
            file=out,
        )
    print(file=out)
    for o in (clean, kill):
        first, last = o.dispatched_ms
        print(
            f"{o.name}: the relay took the post.publish_due rows out of the outbox from T0 + "
            f"{ms(first)} to T0 + {ms(last)} ms; the first delivery claimed at T0 + "
            f"{ms(min(o.claimed_ms, default=math.nan))} ms",
            file=out,
        )
        print(
            f"{o.name}: T0 -> delivery claimed p50 {ms(percentile(o.claimed_ms, 50))} / p99 "
            f"{ms(percentile(o.claimed_ms, 99))} ms (relay, queue, a free worker thread); "
            f"claimed -> status POST at the platform p50 {ms(percentile(o.claim_to_call_ms, 50))}"
            f" / p99 {ms(percentile(o.claim_to_call_ms, 99))} ms",
            file=out,
        )
        print(
            f"{o.name}: posts {dict(o.states)}; {o.extra_statuses} statuses beyond one a post, "
            f"{o.wrong_keys} with another key; deliveries with more than one attempt "
            f"{o.attempts_over_one}, lookups {o.lookups}; platform calls {o.requests}; "
            f"left at the end {o.leftovers}",
            file=out,
        )
    if clean.cpu:
        window = clean.cpu_window_s
        parts = ", ".join(f"{name} {used:.1f}" for name, used in clean.cpu.items())
        total = sum(clean.cpu.values())
        print(
            f"clean: CPU seconds from T0 to the last status ({window:.1f} s; "
            f"{os.cpu_count()} CPUs: {window * (os.cpu_count() or 1):.1f} CPU-s): {parts}; "
            f"total {total:.1f} ({100 * total / (window * (os.cpu_count() or 1)):.0f}% of the "
            "machine)",
            file=out,
        )
    print(f"kill: {kill.kill}", file=out)
    print(
        "targets: start lag p99 <= 2,000 ms (clean run); 0 duplicates and 0 lost in both runs. "
        "JSON: start_lag_* of the clean run, duplicates and lost summed over both runs.",
        file=out,
    )
    print(f"whole benchmark: {result['total_s']:.0f} s", file=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="table to stderr, one JSON line")
    parser.add_argument("--posts", type=int, default=None, help="default 1000 (--quick: 100)")
    parser.add_argument("--tenants", type=int, default=None, help="default 100 (--quick: 10)")
    parser.add_argument("--quick", action="store_true", help="100 posts across 10 tenants")
    parser.add_argument(
        "--instances", type=int, default=1, help="platform instances the tenants spread over"
    )
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the platforms' answers")
    parser.add_argument(
        "--threads", type=int, default=None, help="worker threads (default: the CLI's)"
    )
    parser.add_argument("--kill-at-s", type=float, default=0.4, help="after T0, kill run")
    parser.add_argument("--stalled-after-s", type=int, default=10, help="kill run's watchdog")
    parser.add_argument("--deadline-s", type=float, default=120.0, help="after T0: else lost")
    parser.add_argument(
        "--lead-s",
        type=float,
        default=None,
        help="T0 this far after setup starts (default: estimated from the warm-up)",
    )
    args = parser.parse_args()
    args.posts = args.posts or (100 if args.quick else 1000)
    args.tenants = args.tenants or (10 if args.quick else 100)
    if args.posts % args.tenants:
        parser.error("--posts must be a multiple of --tenants")
    result = run(args)
    out = sys.stderr if args.json else sys.stdout
    print_report(args, result, out)
    if args.json:
        clean, kill = result["outcomes"]
        print(
            json.dumps(
                {
                    "start_lag_p50_ms": round(clean.lag(50), 1),
                    "start_lag_p99_ms": round(clean.lag(99), 1),
                    "duplicates": clean.duplicates + kill.duplicates,
                    "lost": clean.lost + kill.lost,
                }
            )
        )


if __name__ == "__main__":
    main()
