"""Fixtures (a pytest plugin, loaded by the root conftest): a real PgBouncer in transaction mode
in front of the test PostgreSQL, and settings that reach the database through it."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from sqlalchemy.engine import make_url

from socialflow.db.engine import libpq_url
from socialflow.embedded import die_with_parent
from socialflow.settings import Settings

# Two server connections per pool: concurrent clients really take turns on the same backends.
POOL_SIZE = 2
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: `url` reaches the test database through it, `direct_url` does not."""

    url: str
    direct_url: str
    port: int
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""


UNAVAILABLE = "PgBouncer unavailable, pooled tests NOT run"


def pgbouncer_unavailable(reason: str) -> NoReturn:
    """Fail in CI, skip with the reason elsewhere (and a banner at the end): never pass."""
    message = f"{UNAVAILABLE}: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        pgbouncer_unavailable("no pgbouncer binary; scripts/ensure-test-packages installs it")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quote(value: str) -> str:
    """A value in PgBouncer's [databases] connection string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _write_config(
    directory: Path, direct_url: str, port: int, run_as: str | None, extra: Mapping[str, str]
) -> Path:
    url = make_url(direct_url)
    user = url.username or "postgres"
    server = {
        "host": url.query.get("host") or url.host or "localhost",
        "port": str(url.port or 5432),
        "dbname": url.database or user,
        "user": user,
    }
    if url.password:
        server["password"] = url.password
    target = " ".join(f"{key}={_quote(str(value))}" for key, value in server.items())
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        "\n".join(
            [
                "[databases]",
                f"{url.database} = {target}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {directory / 'userlist.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {POOL_SIZE}",
                "min_pool_size = 0",
                "reserve_pool_size = 0",
                "max_client_conn = 500",
                f"logfile = {directory / 'pgbouncer.log'}",
                f"pidfile = {directory / 'pgbouncer.pid'}",
                *([f"user = {run_as}"] if run_as else []),
                *(f"{key} = {value}" for key, value in extra.items()),
                "",
            ]
        )
    )
    return ini


def _unprivileged_user(direct_url: str) -> str | None:
    """PgBouncer refuses to run as root: as root, run it as the socket directory's owner."""
    if os.geteuid() != 0:
        return None
    socket_dir = make_url(direct_url).query.get("host")
    if isinstance(socket_dir, str) and Path(socket_dir).is_dir():
        owner = pwd.getpwuid(Path(socket_dir).stat().st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


def _wait_ready(process: subprocess.Popen[bytes], bouncer: PgBouncer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pgbouncer_unavailable(f"it exited with {process.returncode}:\n{bouncer.log_tail()}")
        try:
            with psycopg.connect(libpq_url(bouncer.url), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            error = str(exc)
        time.sleep(0.05)
    pgbouncer_unavailable(f"not ready in {START_TIMEOUT_S} s ({error}):\n{bouncer.log_tail()}")


@contextlib.contextmanager
def running_pgbouncer(direct_url: str, **extra: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode on a free loopback port, in front of `direct_url`.

    `extra` adds settings to its [pgbouncer] section (e.g. ignore_startup_parameters).
    """
    binary = _binary()
    run_as = _unprivileged_user(direct_url)
    directory = Path(tempfile.mkdtemp(prefix="socialflow-pgbouncer-"))
    if run_as is not None:
        account = pwd.getpwnam(run_as)
        os.chown(directory, account.pw_uid, account.pw_gid)
    port = _free_port()
    ini = _write_config(directory, direct_url, port, run_as, extra)
    pooled = make_url(direct_url).set(host="127.0.0.1", port=port, password=None, query={})
    bouncer = PgBouncer(
        url=pooled.render_as_string(hide_password=False),
        direct_url=direct_url,
        port=port,
        log_path=directory / "pgbouncer.log",
    )
    process = subprocess.Popen(
        [binary, "--quiet", str(ini)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
    )
    try:
        _wait_ready(process, bouncer)
        yield bouncer
    finally:
        process.terminate()  # SIGTERM: PgBouncer's immediate shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer(database_url: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode on loopback, in front of the test database."""
    with running_pgbouncer(database_url) as bouncer:
        yield bouncer


def through_pooler(settings: Settings, bouncer: PgBouncer) -> Settings:
    """`settings` with DATABASE_URL through PgBouncer (DB_POOLER=transaction)."""
    return settings.model_copy(
        update={
            "database_url": bouncer.url,
            "database_direct_url": bouncer.direct_url,
            "db_pooler": "transaction",
        }
    )


@pytest.fixture(scope="session")
def pooled_settings(settings: Settings, pgbouncer: PgBouncer) -> Settings:
    """The test settings, reaching the database through PgBouncer in transaction mode."""
    return through_pooler(settings, pgbouncer)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A skipped pooled test is easy to miss among the dots: say so at the end, loudly."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if UNAVAILABLE in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.section("PgBouncer", red=True, bold=True)
        terminalreporter.line(
            f"{len(skipped)} test(s) through PgBouncer did NOT run (reasons below). "
            "scripts/ensure-test-packages installs it (`make test` runs it).",
            red=True,
            bold=True,
        )
