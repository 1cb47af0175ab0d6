"""The `socialflow` command: api, relay, worker, migrate, dev and the operator commands."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from socialflow.settings import Settings, get_settings

P = ParamSpec("P")
R = TypeVar("R")


def on_services(*, redis: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the command with PostgreSQL (and Redis) of the environment, else those of DATA_DIR.

    With DATABASE_URL / REDIS_URL unset, the command attaches to the embedded servers that
    `socialflow dev` runs in DATA_DIR, or starts them for itself and stops them after; a
    server another process still uses keeps running (see `socialflow.embedded`).
    """

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(command)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with _embedded_when_unset(redis=redis):
                return command(*args, **kwargs)

        return run

    return decorate


@contextlib.contextmanager
def _embedded_when_unset(*, redis: bool) -> Iterator[None]:
    from socialflow import embedded
    from socialflow.lib.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)  # to stderr: stdout is the command's answer (e.g. --json)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # setup chatter
    with contextlib.ExitStack() as servers:
        urls: dict[str, str] = {}
        if settings.database_url is None:
            urls["DATABASE_URL"] = servers.enter_context(embedded.database(None, settings.data_dir))
        if redis and settings.redis_url is None:
            urls["REDIS_URL"] = servers.enter_context(
                embedded.redis_service(None, settings.data_dir)
            )
        # The environment, not a settings copy: every get_settings() of the command sees the
        # URLs, and so do its child processes (Dramatiq's workers).
        before = {name: os.environ.get(name) for name in urls}
        os.environ.update(urls)
        get_settings.cache_clear()
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            get_settings.cache_clear()


@click.group()
def main() -> None:
    """SocialFlow: run its processes and operate it."""


@main.command()
@on_services(redis=True)
@click.option("--workers", type=int, default=None, help="processes; default: API_WORKERS")
def api(workers: int | None) -> None:
    """Serve the HTTP API on HOST:PORT (with --workers N, N processes sharing the port)."""
    from socialflow.api_server import serve

    settings = get_settings()
    serve(settings, workers or settings.api_workers)


@main.command()
@on_services(redis=True)
def relay() -> None:
    """Dispatch committed outbox events to the broker."""
    from outbox_relay.main import main as relay_main

    relay_main()


@main.command()
@click.option("--processes", type=int, default=None, help="default: WORKER_PROCESSES")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="default: WORKER_AI_THREADS for the ai queue alone, WORKER_WEBHOOK_THREADS for the "
    "webhooks queue alone, else WORKER_THREADS",
)
@click.option(
    "--queues",
    "queues",
    multiple=True,
    help="only these queues (repeat or comma-separate); default: every queue",
)
@click.option(
    "--exclude-queues",
    "excluded",
    multiple=True,
    help="every queue but these, e.g. `--exclude-queues ai,webhooks` beside their own workers",
)
@on_services(redis=True)
def worker(
    processes: int | None, threads: int | None, queues: tuple[str, ...], excluded: tuple[str, ...]
) -> None:
    """Run Dramatiq workers for the actors of every queue (or of the queues chosen)."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    settings = get_settings()
    chosen = worker_queues(_names(queues), _names(excluded))
    if threads is None:
        # Queues whose actors mostly wait on the network get threads of their own.
        waiting = {"ai": settings.worker_ai_threads, "webhooks": settings.worker_webhook_threads}
        threads = waiting.get(chosen[0], settings.worker_threads) if len(chosen) == 1 else None
        threads = threads or settings.worker_threads
    argv = [
        "socialflow.workers.entry",
        "--processes",
        str(processes or settings.worker_processes),
        "--threads",
        str(threads),
        "--skip-logging",
    ]
    if queues or excluded:
        argv += ["--queues", *chosen]
    with worker_metrics(settings, processes or settings.worker_processes) as probes:
        status = dramatiq_main(make_argument_parser().parse_args(argv + probes))
    sys.exit(status)


@contextlib.contextmanager
def worker_metrics(settings: Settings, processes: int) -> Iterator[list[str]]:
    """Metrics and probes for this worker command: its processes (started after this) write
    Dramatiq's samples and their heartbeats to a fresh folder, and a process forked beside
    them (the arguments yielded) serves `/metrics`, `/livez` and `/readyz` on
    WORKER_METRICS_PORT. A port already taken (another worker command on this machine) is
    logged and the workers run without them."""
    port = settings.worker_metrics_port
    if not port:
        yield []
        return
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((settings.probe_host, port))
    except OSError as exc:
        click.echo(f"worker metrics not served: {settings.probe_host}:{port}: {exc}", err=True)
        yield []
        return
    from socialflow.lib.metrics_folders import metrics_folder
    from socialflow.workers.probes import PROBE_DIR_ENV, PROCESSES_ENV

    folder = metrics_folder("worker")
    names = {
        "PROMETHEUS_MULTIPROC_DIR": folder,
        "prometheus_multiproc_dir": folder,
        "dramatiq_prom_db": folder,  # read by dramatiq.middleware.prometheus at import
        PROBE_DIR_ENV: folder,
        PROCESSES_ENV: str(processes),
    }
    os.environ.update(names)
    try:
        yield ["--fork-function", "socialflow.workers.probes:serve"]
    finally:
        for name in names:
            os.environ.pop(name, None)
        shutil.rmtree(folder, ignore_errors=True)


def _names(values: tuple[str, ...]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def worker_queues(queues: list[str], excluded: list[str]) -> list[str]:
    """The queues a worker consumes: those named (default all the routing table uses), less
    the excluded; an unknown name, or nothing left, is refused."""
    from socialflow.event_routing import EVENT_ROUTES

    known = sorted({route.queue for routes in EVENT_ROUTES.values() for route in routes})
    unknown = sorted(set(queues + excluded) - set(known))
    if unknown:
        raise click.BadParameter(
            f"unknown queue(s) {', '.join(unknown)}; the queues are {', '.join(known)}",
            param_hint="--queues / --exclude-queues",
        )
    chosen = [q for q in (queues or known) if q not in excluded]
    if not chosen:
        raise click.BadParameter("no queue left to consume", param_hint="--exclude-queues")
    return chosen


@main.command()
@on_services()
def migrate() -> None:
    """Bring the shared schema to the head revision; add PLAN_CATALOGUE's missing plans."""
    from socialflow.db.migrate import upgrade_shared
    from socialflow.plans.seeding import seed_catalogue

    url = _migration_url()
    upgrade_shared(url)
    click.echo("shared schema at head")
    added = seed_catalogue(get_settings(), url)
    if added:
        click.echo(f"plans added from PLAN_CATALOGUE: {', '.join(added)}")


@main.group()
def outbox() -> None:
    """Inspect the outbox and act on its dead letters."""


def _database_url() -> str:
    database_url = get_settings().database_url
    if database_url is None:  # a command without @on_services
        raise click.UsageError("DATABASE_URL is not set")
    return database_url


def _migration_url() -> str:
    """Migrations skip a transaction pooler when DATABASE_DIRECT_URL names the database."""
    from socialflow.db.migrate import migration_database_url

    return migration_database_url(get_settings()) or _database_url()


@outbox.command("status")
@click.option("--json", "as_json", is_flag=True, help="one JSON object instead of a table")
@on_services()
def outbox_status_command(as_json: bool) -> None:
    """Backlog due now, deferred events, age of the oldest due event, dead letters."""
    import json

    from socialflow.outbox.status import outbox_status

    status = asyncio.run(_with_session(outbox_status))
    if as_json:
        click.echo(json.dumps(status.as_dict()))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="outbox")
    for column in ("due", "deferred", "oldest due (s)", "dead letters"):
        table.add_column(column, justify="right")
    age = "-" if status.oldest_due_age_s is None else f"{status.oldest_due_age_s:.1f}"
    table.add_row(str(status.due), str(status.deferred), age, str(status.dead_letters))
    Console().print(table)


@outbox.command("requeue-dead-letters")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "requeue_all", is_flag=True, help="every dead letter")
@on_services()
def requeue_dead_letters_command(event_ids: tuple[str, ...], requeue_all: bool) -> None:
    """Move dead letters back to the outbox (after fixing what made them undeliverable)."""
    import uuid
    from functools import partial

    from socialflow.outbox.status import requeue_dead_letters

    if not event_ids and not requeue_all:
        raise click.UsageError("name event ids, or pass --all")
    ids = None if requeue_all else [uuid.UUID(e) for e in event_ids]
    moved = asyncio.run(_with_session(partial(requeue_dead_letters, event_ids=ids)))
    click.echo(f"requeued {moved} event(s)")


async def _with_session(use_case: Any) -> Any:
    """Run `use_case(session)` in one unit of work, with the resources a request gets."""
    async with _resources() as resources, resources.unit_of_work() as session:
        return await use_case(session)


def _resources() -> Any:
    from socialflow.resources import opened

    _database_url()
    return opened(get_settings())


@main.group()
def admin() -> None:
    """Seed accounts: operators and users."""


@admin.command("create-operator")
@click.option("--email", required=True)
@click.option("--password", required=True, help="12+ characters")
@on_services()
def create_operator(email: str, password: str) -> None:
    """Create a platform operator (or promote an account and reset its password)."""
    from functools import partial

    from socialflow.identity.services import ensure_operator

    user = asyncio.run(
        _with_session(
            partial(ensure_operator, settings=get_settings(), email=email, password=password)
        )
    )
    click.echo(f"operator {user.email} ({user.id})")


@admin.command("create-user")
@click.option("--email", required=True)
@click.option("--password", required=True, help="12+ characters")
@click.option("--name", default=None)
@on_services()
def create_user_command(email: str, password: str, name: str | None) -> None:
    """Create a user account."""
    from functools import partial

    from socialflow.identity.services import create_user

    user = asyncio.run(
        _with_session(
            partial(create_user, settings=get_settings(), email=email, password=password, name=name)
        )
    )
    click.echo(f"user {user.email} ({user.id})")


@main.group()
def tenants() -> None:
    """Operate tenants: purge deleted ones past retention."""


@tenants.command("purge-expired")
@on_services()
def purge_expired_command() -> None:
    """Drop the schemas of deleted tenants whose retention has passed."""
    from socialflow.tenancy.services import purge_expired

    async def purge() -> list[str]:
        async with _resources() as resources, resources.unit_of_work() as session:
            return await purge_expired(session, resources.vault)

    purged = asyncio.run(purge())
    click.echo(f"purged {len(purged)} tenant(s){': ' + ', '.join(purged) if purged else ''}")


async def _in_each_tenant(
    statuses: tuple[str, ...], work: Callable[[Any, Any, str], Awaitable[int]]
) -> dict[str, int]:
    """`work(resources, session, slug)` in every tenant of `statuses`, one transaction each;
    the counts it returned that were not zero, by slug."""
    from sqlalchemy import text

    done: dict[str, int] = {}
    async with _resources() as resources:
        async with resources.unit_of_work() as session:
            live = await session.scalars(
                text("SELECT slug FROM shared.tenants WHERE status = ANY(:s) ORDER BY slug"),
                {"s": list(statuses)},
            )
            slugs = list(live)
        for slug in slugs:
            async with resources.in_tenant(slug) as (_tenant, session):
                count = await work(resources, session, slug)
            if count:
                done[slug] = count
    return done


@main.group()
def media() -> None:
    """Housekeeping of the media library."""


@media.command("expire-uploads")
@on_services()
def expire_uploads_command() -> None:
    """Delete uploads never confirmed within MEDIA_PENDING_EXPIRY_HOURS, in every tenant
    (their objects are removed by the worker). Run it hourly."""

    from socialflow.media.services import expire_pending_uploads

    async def expire(resources: Any, session: Any, slug: str) -> int:
        return await expire_pending_uploads(session, resources.settings, slug)

    expired = asyncio.run(_in_each_tenant(("active", "suspended"), expire))
    total = sum(expired.values())
    click.echo(
        f"expired {total} upload(s)"
        + (": " + ", ".join(f"{s} {n}" for s, n in expired.items()) if expired else "")
    )


@main.group()
def publishing() -> None:
    """Housekeeping of the publish engine."""


@publishing.command("watchdog")
@click.option("--every", type=float, default=0, help="repeat every N seconds (0: once)")
@on_services()
def publishing_watchdog_command(every: float) -> None:
    """Reconcile deliveries stuck `sending` (or `retrying`) past PUBLISH_STALLED_AFTER_S, in
    every tenant. Run it every few minutes (a cron job), or with --every."""

    from socialflow.publishing.watchdog import sweep_stalled

    async def sweep(resources: Any, session: Any, slug: str) -> int:
        return await sweep_stalled(session, resources.settings, slug)

    while True:
        found = asyncio.run(_in_each_tenant(("active",), sweep))
        click.echo(
            f"reconciling {sum(found.values())} stalled deliveries"
            + (": " + ", ".join(f"{s} {n}" for s, n in found.items()) if found else "")
        )
        if every <= 0:
            return
        time.sleep(every)


@tenants.command("migrate")
@click.option("--to", "target", default="head", show_default=True, help="revision (downgrade too)")
@click.option("--concurrency", type=int, default=4, show_default=True)
@click.option("--canary", type=int, default=0, help="migrate K schemas first; stop on a failure")
@click.option("--only", multiple=True, help="tenant slug (repeatable)")
@click.option("--fail-fast", is_flag=True, help="stop at the first failed schema")
@click.option("--dry-run", is_flag=True, help="show what would run, with its SQL")
@click.option("--check", is_flag=True, help="exit 1 listing schemas behind the target")
@click.option("--verify", is_flag=True, help="compare the ledger with every schema's version")
@click.option("--lock-timeout-ms", type=int, default=5_000, show_default=True)
@click.option("--statement-timeout-ms", type=int, default=300_000, show_default=True)
@click.option(
    "--version-location",
    "version_locations",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="extra directory of tenant revisions (repeatable)",
)
@on_services()
def migrate_tenants(  # noqa: PLR0917 - one CLI option each
    target: str,
    concurrency: int,
    canary: int,
    only: tuple[str, ...],
    fail_fast: bool,
    dry_run: bool,
    check: bool,
    verify: bool,
    lock_timeout_ms: int,
    statement_timeout_ms: int,
    version_locations: tuple[Path, ...],
) -> None:
    """Bring every tenant schema behind the target to it (resumable; see README)."""
    from socialflow.tenancy.fleet.cli import run_check, run_dry, run_migrate, run_verify
    from socialflow.tenancy.fleet.migrator import FleetMigrator

    migrator = FleetMigrator(
        _migration_url(),
        version_locations=version_locations,
        concurrency=concurrency,
        lock_timeout_ms=lock_timeout_ms,
        statement_timeout_ms=statement_timeout_ms,
    )
    if check:
        sys.exit(asyncio.run(run_check(migrator, target, only)))
    if verify:
        sys.exit(asyncio.run(run_verify(migrator)))
    if dry_run:
        sys.exit(asyncio.run(run_dry(migrator, target, only)))
    sys.exit(asyncio.run(run_migrate(migrator, target, only, canary=canary, fail_fast=fail_fast)))


@tenants.command("revision")
@click.argument("message")
@click.option("--autogenerate", is_flag=True, help="the operations the declared tenant tables add")
@on_services()
def tenant_revision_command(message: str, autogenerate: bool) -> None:
    """Write the next tenant revision in tenant_migrations/versions (review it, then commit)."""
    from socialflow.db.migrate import SharedSchemaBehind, new_tenant_revision

    try:
        click.echo(new_tenant_revision(_migration_url(), message, autogenerate=autogenerate))
    except SharedSchemaBehind as behind:
        raise click.ClickException(str(behind)) from None


@tenants.command("status")
@on_services()
def tenants_status() -> None:
    """Schemas by revision and status, and the failures with their errors."""
    from socialflow.tenancy.fleet.cli import run_status
    from socialflow.tenancy.fleet.migrator import FleetMigrator

    asyncio.run(run_status(FleetMigrator(_migration_url())))


@main.group()
def vault() -> None:
    """Master-key and tenant data-key rotation, and what uses which key."""


@vault.command("rotate-master")
@click.option("--batch-size", type=int, default=100, show_default=True)
@on_services()
def rotate_master_command(batch_size: int) -> None:
    """Re-wrap every tenant data key under the active master key (resumable, online)."""
    from socialflow.vault.rotation import rotate_master

    async def rotate() -> int:
        async with _resources() as resources:
            return await rotate_master(resources.session_factory, resources.vault, batch_size)

    _database_url()
    click.echo(f"re-wrapped {asyncio.run(rotate())} data key(s) under the active master key")


@vault.command("rotate-tenant-key")
@click.argument("slug")
@on_services()
def rotate_tenant_key_command(slug: str) -> None:
    """Give a tenant a new data key and re-encrypt its secrets with it."""
    from socialflow.ai.services import reseal_ai_keys
    from socialflow.resources import UnknownTenant
    from socialflow.social.services import reseal_social_secrets
    from socialflow.vault.rotation import rotate_tenant_key
    from socialflow.webhooks.services import reseal_webhook_secrets

    async def rotate() -> object:
        async with _resources() as resources:
            vault = resources.vault
            try:
                async with resources.in_tenant(slug) as (tenant, session):

                    async def reencrypt(s: Any, old: int, new: int) -> int:
                        ai_keys = await reseal_ai_keys(s, vault, tenant.id, old)
                        social = await reseal_social_secrets(s, vault, tenant.id, old)
                        hooks = await reseal_webhook_secrets(s, vault, tenant.id, old)
                        return ai_keys + social + hooks

                    return await rotate_tenant_key(session, vault, tenant.id, reencrypt)
            except UnknownTenant:
                raise click.UsageError(f"no tenant {slug!r}") from None

    click.echo(asyncio.run(rotate()))


@vault.command("new-key")
def new_key_command() -> None:
    """Print a new random master key (base64 of 32 bytes) for VAULT_MASTER_KEYS."""
    from socialflow.vault.keyring import new_master_key

    click.echo(new_master_key())


@vault.command("status")
@on_services()
def vault_status_command() -> None:
    """Data keys per master key id: a key with none left can be retired from the ring."""
    from socialflow.vault.rotation import vault_status

    async def status() -> tuple[dict[str, int], str | None]:
        async with _resources() as resources, resources.unit_of_work() as session:
            return await vault_status(session), resources.vault.master_keys.active_key_id

    counts, active = asyncio.run(status())
    for key_id, count in sorted(counts.items()):
        marker = " (active)" if key_id == active else ""
        click.echo(f"{key_id}{marker}: {count} data key(s)")
    if not counts:
        click.echo("no data keys yet")


@main.command()
def dev() -> None:
    """Embedded services (when no URLs are set), migrations, then API + relay + worker."""
    from socialflow.devserver import run_dev

    sys.exit(run_dev(get_settings()))
