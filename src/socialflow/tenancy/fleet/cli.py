"""Terminal front end of fleet migrations: progress, summaries, exit codes."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Sequence

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from socialflow.tenancy.fleet.migrator import FleetMigrator, Outcome, summarise

EXIT_INTERRUPTED = 130


async def run_check(migrator: FleetMigrator, target: str, only: Sequence[str]) -> int:
    """The deploy gate: 0 when every schema is at the target, 1 (listing them) otherwise."""
    resolved = migrator.resolve(target)
    behind = await migrator.pending(resolved, only or None)
    if not behind:
        click.echo(f"all tenant schemas at {resolved}")
        return 0
    click.echo(f"{len(behind)} tenant schema(s) not at {resolved}:")
    for state in behind:
        click.echo(f"  {state.slug} ({state.schema}) at {state.revision} [{state.status}]")
    return 1


async def run_verify(migrator: FleetMigrator) -> int:
    mismatches = await migrator.verify()
    if not mismatches:
        click.echo("ledger and schemas agree")
        return 0
    click.echo(f"{len(mismatches)} schema(s) disagree with the ledger:")
    for schema, ledger, actual in mismatches:
        click.echo(f"  {schema}: ledger {ledger}, schema {actual}")
    return 1


async def run_dry(migrator: FleetMigrator, target: str, only: Sequence[str]) -> int:
    resolved = migrator.resolve(target)
    pending = await migrator.pending(resolved, only or None)
    steps: dict[str, list[str]] = {}
    for state in pending:
        steps.setdefault(state.revision, []).append(state.slug)
    click.echo(f"{len(pending)} schema(s) would move to {resolved}")
    for revision, slugs in sorted(steps.items()):
        if revision == resolved:
            click.echo(
                f"\n-- {len(slugs)} schema(s) at {revision} with a failed last run: re-checked"
            )
            continue
        click.echo(f"\n-- {len(slugs)} schema(s) {revision} -> {resolved}, each running:\n")
        click.echo(migrator.render(revision, resolved))
    return 0


async def run_migrate(
    migrator: FleetMigrator,
    target: str,
    only: Sequence[str],
    *,
    canary: int,
    fail_fast: bool,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Finish the schemas in flight (each commits or rolls back whole), start no more.
        loop.add_signal_handler(sig, stop.set)
    resolved = migrator.resolve(target)
    total = len(await migrator.pending(resolved, only or None))
    report = _TerminalProgress(total) if sys.stdout.isatty() else _LineProgress(total)
    with report:
        summary = await migrator.run(
            resolved,
            only=only or None,
            canary=canary,
            fail_fast=fail_fast,
            progress=report.advance,
            stop=stop,
        )
    click.echo(summarise(summary))
    for outcome in summary.failed:
        click.echo(f"  FAILED {outcome.slug} ({outcome.schema}): {outcome.error}", err=True)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return 0 if summary.ok else 1


async def run_status(migrator: FleetMigrator) -> None:
    counts, failures = await migrator.status()
    console = Console()
    table = Table(title=f"tenant schemas (head {migrator.head()})")
    for column in ("revision", "status", "schemas"):
        table.add_column(column)
    for revision, status, count in counts:
        table.add_row(revision, status, str(count))
    console.print(table)
    for schema, slug, at_revision, error, at in failures:
        console.print(f"[red]failed[/red] {slug} ({schema}) at {at_revision}, {at}: {error}")


class _TerminalProgress:
    """A live bar with rate and ETA."""

    def __init__(self, total: int) -> None:
        self.progress = Progress(
            TextColumn("migrating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.0f}/s"),
            TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
        )
        self.task = self.progress.add_task("migrate", total=total, rate=0.0, failed=0)
        self.started = time.perf_counter()
        self.failed = 0

    def __enter__(self) -> _TerminalProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def advance(self, outcome: Outcome) -> None:
        self.failed += outcome.result == "failed"
        done = self.progress.tasks[0].completed + 1
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=1, rate=rate, failed=self.failed)


class _LineProgress:
    """Plain periodic lines when the output is not a terminal (CI, logs)."""

    INTERVAL_S = 5.0

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = self.failed = 0
        self.started = self.last = time.perf_counter()

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def advance(self, outcome: Outcome) -> None:
        self.done += 1
        self.failed += outcome.result == "failed"
        now = time.perf_counter()
        if now - self.last >= self.INTERVAL_S or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            click.echo(
                f"migrated {self.done}/{self.total} ({self.failed} failed), "
                f"{rate:.0f}/s, eta {eta:.0f} s"
            )
