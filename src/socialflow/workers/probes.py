"""A worker command's metrics and probes on WORKER_METRICS_PORT: `/metrics` (Dramatiq's
Prometheus middleware, every process's samples), `/livez` and `/readyz`.

Liveness is each worker process's: a heartbeat thread in it checks that every consumer's fetch
loop has come round and that its event loop (where async actors run) answers, and writes what
it saw to a file of the command's probe folder every few seconds. The probe server, a process
Dramatiq forks beside the workers, reads those files: a process whose loops have stopped, or
whose heartbeat itself has stopped (the process frozen or gone), fails the probe. Readiness is
PostgreSQL and Redis answering.

The folder is the one `socialflow worker` makes for the metrics (PROBE_DIR_ENV names it); when
it is unset (metrics off, tests) nothing here runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dramatiq
import structlog
from dramatiq import Middleware

PROBE_DIR_ENV = "SOCIALFLOW_WORKER_PROBE_DIR"
PROCESSES_ENV = "SOCIALFLOW_WORKER_PROCESSES"  # how many heartbeats to expect
_PREFIX = "live-"

log = structlog.get_logger("socialflow.worker")


class Heartbeat(Middleware):
    """In each worker process: every `every_s`, writes the age of each consumer's last fetch
    round and of the event loop's last answer to `live-<pid>.json` in the probe folder."""

    def __init__(self, folder: str, every_s: float) -> None:
        self.folder = Path(folder)
        self.every_s = every_s
        self._stop = threading.Event()
        self._loop_answered = time.monotonic()
        self._file = self.folder / f"{_PREFIX}{os.getpid()}.json"

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._file = self.folder / f"{_PREFIX}{os.getpid()}.json"
        threading.Thread(target=self._beat, args=(broker,), name="heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        self._file.unlink(missing_ok=True)

    def _beat(self, broker: dramatiq.Broker) -> None:
        while not self._stop.is_set():
            try:
                self.write(broker)
            except Exception:  # a beat missed (disk full…) is said; the next one may work
                log.exception("worker.heartbeat_failed", pid=os.getpid())
            self._stop.wait(self.every_s)

    def write(self, broker: dramatiq.Broker) -> None:
        now = time.monotonic()
        turns: Mapping[str, float] = getattr(broker, "consumer_turns", {})
        seen = {
            "pid": os.getpid(),
            "fetch_loops_s": {queue: round(now - at, 1) for queue, at in sorted(turns.items())},
            "event_loop_s": round(now - self._loop_answered, 1),
        }
        temporary = self._file.with_suffix(".tmp")
        temporary.write_text(json.dumps(seen))
        temporary.replace(self._file)  # the reader sees a whole file, old or new
        self._ask_event_loop()

    def _ask_event_loop(self) -> None:
        from dramatiq.asyncio import get_event_loop_thread

        loop_thread = get_event_loop_thread()
        if loop_thread is None:  # no AsyncIO middleware: nothing to watch
            self._loop_answered = time.monotonic()
            return

        def answered() -> None:
            self._loop_answered = time.monotonic()

        loop_thread.loop.call_soon_threadsafe(answered)


def heartbeats(
    folder: Path, timeout_s: float, started: float, expected: int = 1
) -> tuple[bool, dict[str, Any]]:
    """Liveness from the processes' heartbeat files: every one fresh (written within
    `timeout_s`) and reporting loops that turned within it, and `expected` of them once the
    command has booted (`timeout_s` after `started`, a time.time()): a process stuck before
    its first beat fails it then."""
    now = time.time()
    processes: dict[str, Any] = {}
    for path in sorted(folder.glob(f"{_PREFIX}*.json")):
        try:
            seen = json.loads(path.read_text())
            written_s = now - path.stat().st_mtime
        except (OSError, ValueError):
            continue  # replaced or removed while read: the next probe reads it
        stalled = [
            name
            for name, age in [("event_loop", seen["event_loop_s"]), *seen["fetch_loops_s"].items()]
            if age >= timeout_s
        ]
        if written_s >= timeout_s:
            stalled.append("heartbeat")
        processes[str(seen["pid"])] = {
            "heartbeat_s": round(written_s, 1),
            "event_loop_s": seen["event_loop_s"],
            "fetch_loops_s": seen["fetch_loops_s"],
            "stalled": stalled,
        }
    booting = now - started < timeout_s
    live = all(not p["stalled"] for p in processes.values())
    detail: dict[str, Any] = {"processes": processes}
    if len(processes) < expected:
        detail["missing"] = expected - len(processes)
        if booting:
            detail["booting"] = True
        else:
            live = False
    return live, detail


def serve() -> int:
    """The probe server's process (Dramatiq's `--fork-function`): serves until stopped."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from socialflow.db.engine import libpq_url
    from socialflow.lib.probes import ProbeServer, servers_ready
    from socialflow.settings import get_settings

    settings = get_settings()
    assert settings.database_url is not None
    assert settings.redis_url is not None
    folder = Path(os.environ[PROBE_DIR_ENV])
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    started = time.time()
    timeout_s = settings.worker_liveness_timeout_s
    expected = int(os.environ.get(PROCESSES_ENV, "1"))
    try:
        server = ProbeServer(
            settings.probe_host,
            settings.worker_metrics_port,
            live=lambda: heartbeats(folder, timeout_s, started, expected),
            ready=servers_ready(
                libpq_url(settings.database_url), settings.redis_url, settings.ready_timeout_s
            ),
            registry=registry,
        )
    except OSError as exc:  # taken since the command checked: the workers run without
        log.error("worker.probes_unavailable", port=settings.worker_metrics_port, error=str(exc))
        return 1
    server.serve_forever()
    return 0


def probe_middleware() -> list[Middleware]:
    """What a worker process adds to its broker when its command serves probes."""
    folder = os.environ.get(PROBE_DIR_ENV)
    if not folder:
        return []
    # Imported here: the module makes its folder at import (from `dramatiq_prom_db`).
    from dramatiq.middleware.prometheus import Prometheus

    from socialflow.settings import get_settings

    class ProcessPrometheus(Prometheus):
        """Dramatiq's Prometheus middleware without its own exposition server: `serve`
        serves the same samples beside the probes, on the same port."""

        @property
        def forks(self) -> list[Any]:
            return []

    every_s = min(5.0, get_settings().worker_liveness_timeout_s / 4)
    return [ProcessPrometheus(), Heartbeat(folder, every_s)]
