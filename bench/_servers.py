"""Durable PostgreSQL and Redis for the benchmarks, and the settings each run reports."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import psycopg
import redis

from socialflow.db.engine import libpq_url
from socialflow.db.migrate import upgrade_shared
from socialflow.embedded import EmbeddedPostgres, EmbeddedRedis
from socialflow.lib.logging import configure_logging
from socialflow.plans.seeding import seed_catalogue
from socialflow.settings import DEFAULT_PLAN_CATALOGUE, Settings

# Production's broker settings (README): every write is on disk before Redis answers, which
# is what the relay trusts before it deletes its outbox rows.
REDIS_DURABLE_ARGS = ("--appendonly", "yes", "--appendfsync", "always")
POSTGRES_DURABILITY = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
REDIS_DURABILITY = {"appendonly": "yes", "appendfsync": "always"}


class BenchmarkCheckError(RuntimeError):
    """What a benchmark timed did not really happen (a count in the database or Redis is off)."""


def check(condition: bool, message: str) -> None:
    """Like assert, but never stripped by `python -O`: a figure without its proof is void."""
    if not condition:
        raise BenchmarkCheckError(message)


@dataclass(frozen=True)
class Servers:
    database_url: str
    redis_url: str | None
    origin: Mapping[str, str]  # server → "embedded" or the environment variable naming it
    data_dir: Path  # a temporary folder for the benchmark's own files, removed with the servers


@contextlib.contextmanager
def durable_servers(*, with_redis: bool = True) -> Iterator[Servers]:
    """DATABASE_URL / REDIS_URL when set (used as they are); otherwise embedded servers with
    production's durability in a temporary folder, stopped and removed when the block ends.

    The embedded PostgreSQL is the kept kind (fsync, synchronous_commit and full_page_writes
    at PostgreSQL's defaults, all on), not the throwaway kind tests use (all three off).
    """
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sf-bench-")))
        origin = {}
        database_url = os.environ.get("DATABASE_URL")
        origin["PostgreSQL"] = "DATABASE_URL" if database_url else "embedded"
        if not database_url:
            postgres = EmbeddedPostgres(data_dir / "postgres", throwaway=False)
            stack.callback(postgres.stop)
            database_url = postgres.start()
        redis_url = os.environ.get("REDIS_URL") if with_redis else None
        if with_redis:
            origin["Redis"] = "REDIS_URL" if redis_url else "embedded"
        if with_redis and not redis_url:
            # Throwaway: the server dies with this process and its folder goes with it; the
            # arguments after the throwaway defaults turn the append-only file on, fsync'd.
            broker = EmbeddedRedis(
                data_dir / "redis", throwaway=True, extra_args=REDIS_DURABLE_ARGS
            )
            stack.callback(broker.stop)
            redis_url = broker.start()
        servers = Servers(database_url, redis_url, origin, data_dir)
        settings = server_settings(servers)
        # Servers started here must be durable; ones named by a URL are reported as they are.
        for server, wanted in (("PostgreSQL", POSTGRES_DURABILITY), ("Redis", REDIS_DURABILITY)):
            if origin.get(server) == "embedded":
                for name, value in wanted.items():
                    check(
                        settings.get(name) == value,
                        f"embedded {server} runs {name}={settings.get(name)}, not {value}",
                    )
        yield servers


def server_settings(servers: Servers) -> dict[str, str]:
    """The durability settings the servers actually run with (asked, not assumed)."""
    found: dict[str, str] = {}
    with psycopg.connect(libpq_url(servers.database_url), autocommit=True) as conn:
        for name in (*POSTGRES_DURABILITY, "server_version"):
            row = conn.execute(f"SHOW {name}").fetchone()  # names are constants above
            found[name] = str(row[0]) if row else "?"
    if servers.redis_url is not None:
        client = redis.Redis.from_url(servers.redis_url, decode_responses=True)
        try:
            for name in REDIS_DURABILITY:
                found[name] = str(client.config_get(name).get(name, "?"))
            found["redis_version"] = str(client.info("server")["redis_version"])
        finally:
            client.close()
    return found


def prepare_shared(database_url: str, **plan_limits: object) -> None:
    """The shared schema at head and the plan catalogue seeded, as `socialflow migrate`
    leaves them; `plan_limits` change every seeded plan (a rate high enough not to count)."""
    upgrade_shared(database_url)
    catalogue = {name: {**plan, **plan_limits} for name, plan in DEFAULT_PLAN_CATALOGUE.items()}
    seeding = Settings(plan_catalogue=catalogue, _env_file=None)  # type: ignore[call-arg]
    seed_catalogue(seeding, database_url)


def quiet_logging() -> None:
    """Warnings and errors only, on stderr: stdout is the table, or the JSON line."""
    configure_logging(Settings(log_level="WARNING", _env_file=None))


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def settings_lines(servers: Servers, settings: Mapping[str, str]) -> list[str]:
    """Human lines: the servers' durability (marked when it is not production's) and machine."""

    def shown(name: str, wanted: Mapping[str, str]) -> str:
        flag = "" if settings.get(name) == wanted[name] else " (NOT durable)"
        return f"{name}={settings.get(name, '?')}{flag}"

    lines = [
        f"PostgreSQL {settings.get('server_version', '?')} ({servers.origin['PostgreSQL']}): "
        + ", ".join(shown(n, POSTGRES_DURABILITY) for n in POSTGRES_DURABILITY)
    ]
    if "Redis" in servers.origin:
        lines.append(
            f"Redis {settings.get('redis_version', '?')} ({servers.origin['Redis']}): "
            + ", ".join(shown(n, REDIS_DURABILITY) for n in REDIS_DURABILITY)
        )
    lines.append(f"machine: {machine()} (at the start of the run)")
    return lines


def print_settings(lines: list[str], run: Mapping[str, object], file: TextIO = sys.stdout) -> None:
    """The settings block every benchmark prints above its table (to stderr with --json)."""
    print("settings:", file=file)
    for line in lines:
        print(f"  {line}", file=file)
    for name, value in run.items():
        print(f"  {name}: {value}", file=file)
    print(file=file)
