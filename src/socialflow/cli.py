"""The `socialflow` command: api, relay, worker, migrate and dev."""

from __future__ import annotations

import sys

import click

from socialflow.settings import get_settings


@click.group()
def main() -> None:
    """SocialFlow: run its processes and operate it."""


@main.command()
def api() -> None:
    """Serve the HTTP API on HOST:PORT."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "socialflow.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


@main.command()
def relay() -> None:
    """Dispatch committed outbox events to the broker."""
    from outbox_relay.main import main as relay_main

    relay_main()


@main.command()
@click.option("--processes", type=int, default=None, help="default: WORKER_PROCESSES")
@click.option("--threads", type=int, default=None, help="default: WORKER_THREADS")
def worker(processes: int | None, threads: int | None) -> None:
    """Run Dramatiq workers for every actor."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    settings = get_settings()
    args = make_argument_parser().parse_args(
        [
            "socialflow.workers.entry",
            "--processes",
            str(processes or settings.worker_processes),
            "--threads",
            str(threads or settings.worker_threads),
            "--skip-logging",
        ]
    )
    sys.exit(dramatiq_main(args))


@main.command()
def migrate() -> None:
    """Bring the shared schema to the head revision."""
    from socialflow import embedded
    from socialflow.db.migrate import upgrade_shared

    settings = get_settings()
    # With DATABASE_URL unset this migrates the embedded database that `socialflow dev` uses.
    with embedded.database(settings.database_url, settings.data_dir) as database_url:
        upgrade_shared(database_url)
    click.echo("shared schema at head")


@main.command()
def dev() -> None:
    """Embedded services (when no URLs are set), migrations, then API + relay + worker."""
    from socialflow.devserver import run_dev

    sys.exit(run_dev(get_settings()))
