"""`socialflow dev`: embedded services, migrations, then the API, the relay and two workers (the
AI queue's, with many threads, and every other queue's) under one supervisor.

If one of them dies, the others are stopped and the supervisor says which died and how;
Ctrl-C (or SIGTERM) stops them all, then the embedded servers.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import click

from socialflow import embedded
from socialflow.db.migrate import upgrade_shared
from socialflow.plans.seeding import seed_catalogue
from socialflow.settings import Settings

# name → its `socialflow` command
PROCESSES: dict[str, tuple[str, ...]] = {
    "api": ("api",),
    "relay": ("relay",),
    "worker": ("worker", "--exclude-queues", "ai,webhooks"),
    "ai-worker": ("worker", "--queues", "ai"),
    "webhooks-worker": ("worker", "--queues", "webhooks"),
}
# Each worker command serves its metrics on a port of its own (the default is the first's).
METRICS_PORTS: dict[str, int] = {"worker": 9191, "ai-worker": 9192, "webhooks-worker": 9193}
BOOTSTRAP_OPERATOR = "operator@socialflow.localhost"
STOP_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 120.0


@dataclass
class Supervisor:
    env: dict[str, str]
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self, name: str, command: tuple[str, ...]) -> None:
        env = self.env
        if name in METRICS_PORTS:
            env = {**env, "WORKER_METRICS_PORT": str(METRICS_PORTS[name])}
        self.children[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and command
            [sys.executable, "-m", "socialflow", *command],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us in order
            preexec_fn=embedded.die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
        )

    def first_exited(self) -> tuple[str, int] | None:
        for name, process in self.children.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop_all(self) -> None:
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, process in self.children.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                click.echo(
                    f"socialflow dev: {name} did not stop in {STOP_TIMEOUT_S:g} s; killing it"
                )
                process.kill()
                process.wait()


def _bootstrap_operator(settings: Settings, database_url: str) -> str:
    """(Re)set the dev operator's password to a fresh one, to print."""
    import asyncio

    from socialflow.db.engine import create_engine, create_session_factory
    from socialflow.db.session import unit_of_work
    from socialflow.identity.services import ensure_operator

    password = secrets.token_urlsafe(12)

    async def bootstrap() -> None:
        engine = create_engine(settings, database_url=database_url)
        try:
            async with unit_of_work(create_session_factory(engine)) as session:
                await ensure_operator(
                    session, settings, email=BOOTSTRAP_OPERATOR, password=password
                )
        finally:
            await engine.dispose()

    asyncio.run(bootstrap())
    return password


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def wait_until_ready(url: str, supervisor: Supervisor) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and not supervisor.stopping.is_set():
        if supervisor.first_exited() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def run_dev(settings: Settings) -> int:
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.set()

    # SIGHUP too: closing the terminal stops the embedded servers instead of orphaning them.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    with embedded.services(settings.database_url, settings.redis_url, settings.data_dir) as urls:
        if urls.embedded:
            click.echo(
                f"socialflow dev: embedded {', '.join(urls.embedded)} in {settings.data_dir}/"
            )
        env = embedded.child_environment(urls)
        if settings.jwt_signing_key is None:
            env["JWT_SIGNING_KEY"] = secrets.token_urlsafe(48)
            click.echo(
                "socialflow dev: generated a JWT signing key for this run "
                "(set JWT_SIGNING_KEY to keep tokens valid across runs)"
            )
        upgrade_shared(urls.database_url)
        seed_catalogue(settings, urls.database_url)
        operator_password = _bootstrap_operator(settings, urls.database_url)
        supervisor = Supervisor(env=env, stopping=stop_requested)
        for name, command in PROCESSES.items():
            supervisor.start(name, command)
        base = f"http://{settings.host}:{settings.port}"
        try:
            if wait_until_ready(base, supervisor):
                click.echo(
                    f"\nSocialFlow is ready at {base}\n  OpenAPI: {base}/schema\n"
                    f"  Operator login: {BOOTSTRAP_OPERATOR} / {operator_password}\n"
                    f"  (POST {base}/api/v1/auth/token with that email and password)\n"
                )
            return _watch(supervisor, stop_requested)
        finally:
            supervisor.stop_all()


def _watch(supervisor: Supervisor, stop_requested: threading.Event) -> int:
    while not stop_requested.wait(0.2):
        exited = supervisor.first_exited()
        if exited is not None:
            name, code = exited
            click.echo(
                f"socialflow dev: {name} {describe_exit(code)}; stopping the others "
                f"(its own log above says why)",
                err=True,
            )
            return 1
    click.echo("socialflow dev: stopping")
    return 0


if os.name != "posix":  # pragma: no cover
    raise ImportError("socialflow dev needs a POSIX system")
