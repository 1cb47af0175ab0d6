"""`socialflow api`: uvicorn in one process, or in N processes each with its own listening
socket on the same port (SO_REUSEPORT), so the kernel spreads connections evenly among them.

Why not uvicorn's `--workers`: its processes share one listening socket, and whichever process
wakes first accepts every connection waiting. Clients that keep their connections open (a load
balancer, wrk) then stay unevenly spread for good; measured with 32 connections on two
processes: 22 on one, 10 on the other, one core saturated while the other idled (p99 up ~30%).
With a socket per process, the kernel hashes each new connection to one of them.

The supervisor restarts a process that dies (after a pause, so a process that cannot start
does not spin), and on SIGTERM or SIGINT asks every process to finish its requests (uvicorn's
graceful shutdown) before it exits. Where the platform has no SO_REUSEPORT, uvicorn's own
multi-process mode runs instead.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from socialflow.settings import Settings

log = structlog.get_logger(__name__)

APP = "socialflow.app:create_app"
GRACEFUL_S = 10  # a process finishes its requests within this, then it is stopped
RESTART_PAUSE_S = 1.0
STARTUP_FAILURE = 3  # uvicorn's exit status when the app could not start


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,  # the request log line is ours (lib/request_context.py)
        "proxy_headers": True,
        "timeout_graceful_shutdown": GRACEFUL_S,
    }


def serve(settings: Settings, workers: int) -> None:
    """Serve the API on HOST:PORT with `workers` processes; returns when they have stopped."""
    import uvicorn

    if workers == 1:
        with _metrics_port(settings):
            uvicorn.run(APP, **uvicorn_options(settings))
    elif not hasattr(socket, "SO_REUSEPORT"):
        with _shared_metrics(), _metrics_port(settings):
            uvicorn.run(APP, workers=workers, **uvicorn_options(settings))
    else:
        _refuse_taken_port(settings.host, settings.port)
        with _shared_metrics(), _metrics_port(settings):
            status = Supervisor(workers).run()
        sys.exit(status)


@contextlib.contextmanager
def _metrics_port(settings: Settings) -> Iterator[None]:
    """With API_METRICS_PORT, this process (the one API process, or the supervisor of several,
    reading their shared folder) serves `/metrics` there, and the API's port does not; with
    `/livez` (this process answers) and `/readyz` (PostgreSQL and Redis answer). A port
    already taken is logged and the API serves without metrics."""
    if not settings.api_metrics_port:
        yield
        return
    from socialflow.db.engine import libpq_url
    from socialflow.lib.http_metrics import scrape_registry
    from socialflow.lib.probes import ProbeServer, servers_ready

    redis_url = settings.effective_cache_redis_url  # the Redis the API uses (caches)
    assert settings.database_url is not None
    assert redis_url is not None
    try:
        probes = ProbeServer(
            settings.probe_host,
            settings.api_metrics_port,
            live=lambda: (True, {}),
            ready=servers_ready(
                libpq_url(settings.database_url), redis_url, settings.ready_timeout_s
            ),
            registry=scrape_registry(),
        ).start()
    except OSError as exc:
        log.error("api.metrics_unavailable", port=settings.api_metrics_port, error=str(exc))
        yield
        return
    try:
        yield
    finally:
        probes.stop()


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """The processes write their metrics to files in a fresh PROMETHEUS_MULTIPROC_DIR (inherited:
    they are spawned), so a scrape of any of them reads all; removed when they have stopped."""
    from socialflow.lib.metrics_folders import metrics_folder

    folder = metrics_folder("api")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port in the port's SO_REUSEPORT group (not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _refuse_taken_port(host: str, port: int) -> None:
    """Fail now if anything listens on the port, even another SocialFlow: sockets that all
    set SO_REUSEPORT would share the port silently, and an old API would keep serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def _serve_process() -> None:
    """One API process (spawned; the settings come from the inherited environment): its own
    socket in the port's group, then uvicorn."""
    import uvicorn

    from socialflow.settings import get_settings

    settings = get_settings()

    sock = listening_socket(settings.host, settings.port)
    config = uvicorn.Config(APP, **uvicorn_options(settings))
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _forget_metrics_of(pid: int | None) -> None:
    """A dead process's live gauges (its pool) no longer count; its counters stay summed."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Supervisor:
    """Keeps `workers` API processes running until asked to stop."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")

    def _start(self) -> BaseProcess:
        process = self._context.Process(target=_serve_process, name="socialflow-api")
        process.start()
        log.info("api.process_started", pid=process.pid)
        return process

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; the exit status (non-zero if no process could start)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        processes = [self._start() for _ in range(self.workers)]
        status = 0
        while not self._stop.wait(0.5):
            for index, process in enumerate(processes):
                if process.is_alive():
                    continue
                log.error("api.process_exited", pid=process.pid, exitcode=process.exitcode)
                _forget_metrics_of(process.pid)
                if process.exitcode == STARTUP_FAILURE:
                    status = STARTUP_FAILURE  # the app cannot start: stop, as one process would
                    self._stop.set()
                    break
                time.sleep(RESTART_PAUSE_S)
                processes[index] = self._start()
        self._shut_down(processes)
        return status

    def _shut_down(self, processes: list[BaseProcess]) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes its requests, then exits
        deadline = time.monotonic() + GRACEFUL_S + 5
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("api.process_killed", pid=process.pid)
                process.kill()
                process.join()
