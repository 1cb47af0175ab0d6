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
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
        handler = _handler(live, ready, registry)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(live: Live, ready: Ready, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
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
