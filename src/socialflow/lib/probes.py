"""A process's metrics and probes over HTTP, for the processes that serve no API (the relay, the
workers): `/metrics` (Prometheus text format), `/livez` (the process's loop is turning) and
`/readyz` (what it depends on answers).

A small server of the standard library in a daemon thread: it answers while the process's own
loop is stuck, which is the point of a liveness probe. The checks it is given run in its thread
and must be quick and bounded (their own timeouts).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import redis
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

Live = Callable[[], tuple[bool, Mapping[str, Any]]]
Ready = Callable[[], tuple[bool, Mapping[str, Any]]]


class ProbeServer:
    """Serves `/metrics`, `/livez` and `/readyz` on (host, port) until `stop()`; port 0 takes a
    free one (`port` then tells which)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        live: Live,
        ready: Ready,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        handler = _handler(live, _cached(ready), registry)
        self._server = _BoundedServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread (a process of its own, whose signals stop it)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# At most this many connections served at once (the rest closed at once), each given this long
# to send its request: a client holding connections open cannot exhaust the process's threads
# (the port belongs behind a NetworkPolicy all the same: kubelet and Prometheus only).
MAX_CONNECTIONS = 64
READ_TIMEOUT_S = 5.0
# Readiness opens connections to PostgreSQL and Redis: its answer is reused this long, so
# probes asked often (or by anyone who can reach the port) cost the servers little.
READY_CACHE_S = 1.0


class _BoundedServer(ThreadingHTTPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _cached(check: Ready) -> Ready:
    """`check`, its answer reused for READY_CACHE_S; one caller runs it at a time."""
    lock = threading.Lock()
    last: list[Any] = [float("-inf"), None]

    def cached() -> tuple[bool, Mapping[str, Any]]:
        with lock:
            if time.monotonic() - last[0] >= READY_CACHE_S or last[1] is None:
                last[1] = _checked(check)
                last[0] = time.monotonic()
            answer: tuple[bool, Mapping[str, Any]] = last[1]
            return answer

    return cached


def _handler(live: Live, ready: Ready, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_S

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes and probes every few seconds: not worth a log line each

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/readyz"):
                ok, detail = _checked(live if path == "/livez" else ready)
                body = json.dumps({"status": "ok" if ok else "failing", **detail}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _checked(check: Live) -> tuple[bool, Mapping[str, Any]]:
    try:
        return check()
    except Exception as exc:  # a probe that raises is a failing probe, never a crash
        return False, {"error": type(exc).__name__}


def servers_ready(database_url: str, redis_url: str, timeout_s: float) -> Ready:
    """Readiness of a process that needs PostgreSQL (`database_url` a libpq URL) and Redis:
    each answers within `timeout_s`, named in the detail either way."""

    def ready() -> tuple[bool, Mapping[str, Any]]:
        checks = {
            "database": _outcome(lambda: _ping_database(database_url, timeout_s)),
            "redis": _outcome(lambda: _ping_redis(redis_url, timeout_s)),
        }
        return all(v == "ok" for v in checks.values()), {"checks": checks}

    return ready


def _ping_database(url: str, timeout_s: float) -> None:
    with psycopg.connect(url, connect_timeout=max(1, round(timeout_s))) as conn:
        conn.execute("SELECT 1")


def _ping_redis(url: str, timeout_s: float) -> None:
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()


def _outcome(check: Callable[[], None]) -> str:
    try:
        check()
    except (psycopg.Error, redis.RedisError, OSError) as exc:
        return f"failing ({type(exc).__name__})"
    return "ok"
