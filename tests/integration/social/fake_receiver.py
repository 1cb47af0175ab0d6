"""A webhook receiver on loopback that does what the Standard Webhooks spec asks of one: it
verifies every request with the `standardwebhooks` package and dedups by `webhook-id`. A
switchable `mode` makes it misbehave (see MODES)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

MODES = frozenset(
    {
        "ok",  # 200 with {"id": ..., "url": ...} (or `ok_answer`); a duplicate gets the same id
        "gone",  # 410
        "reject",  # 400 with `reject_body`
        "rate_limited",  # 429 with Retry-After: `retry_after`
        "server_error",  # 500
        "redirect",  # 302 to `redirect_to`
        "hang",  # reads the request, then answers nothing for `hang_s` (or until closed)
        "drop_after_read",  # reads and records the request, then closes without answering
        "huge",  # `huge_status` with a body of `huge_bytes`
    }
)
REJECT_BODY = b'{"error": "text too long"}'


@dataclass
class Delivery:
    """One request as received: its headers, raw body and whether its signature verified."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    duplicate: bool

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")

    @property
    def event(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeReceiver:
    host: str
    port: int
    secret: str
    mode: str = "ok"
    deliveries: list[Delivery] = field(default_factory=list)  # every request, in order
    connections: list[tuple[str, int]] = field(default_factory=list)  # every TCP accept
    bad_signatures: int = 0
    duplicates: int = 0  # verified requests whose webhook-id was seen before
    ok_answer: bytes | None = None  # what "ok" answers instead of its JSON
    reject_body: bytes = REJECT_BODY
    retry_after: str = "7"
    redirect_to: str | None = None
    hang_s: float = 30.0
    huge_bytes: int = 8 * 1024 * 1024
    huge_status: int = 200
    huge_announced: bool = False  # send the huge body's Content-Length (else: until close)
    on_delivery: Callable[[Delivery], None] | None = None  # runs mid-request, before answering
    _ids: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _closing: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/socialflow"

    @property
    def distinct(self) -> int:
        """How many different deliveries (webhook-ids) arrived with a good signature."""
        with self._lock:
            return len(self._ids)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {sorted(MODES)}")
        self.mode = mode

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> tuple[Delivery, str]:
        """Verify and dedup, as a receiver must before acting; the delivery and its answer id."""
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            duplicate = verified and webhook_id in self._ids
            if not verified:
                self.bad_signatures += 1
            elif duplicate:
                self.duplicates += 1
            else:
                self._ids[webhook_id] = f"rcv-{len(self._ids) + 1}"
            delivery = Delivery(path, headers, body, verified, duplicate)
            self.deliveries.append(delivery)
            return delivery, self._ids.get(webhook_id, "")


class _Server(ThreadingHTTPServer):
    receiver: FakeReceiver
    daemon_threads = True

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.receiver.connections.append(client_address)
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        delivery, answer_id = receiver._record(self.path, headers, body)
        if receiver.on_delivery is not None:
            receiver.on_delivery(delivery)
        mode = receiver.mode
        if not delivery.verified:
            self._send(401, b'{"error": "bad signature"}')
        elif mode == "ok":
            self._send(200, receiver.ok_answer or self._ok_answer(answer_id))
        elif mode == "gone":
            self._send(410, b'{"error": "this endpoint was removed"}')
        elif mode == "reject":
            self._send(400, receiver.reject_body)
        elif mode == "rate_limited":
            self._send(429, b'{"error": "slow down"}', {"Retry-After": receiver.retry_after})
        elif mode == "server_error":
            self._send(500, b'{"error": "internal"}')
        elif mode == "redirect":
            self._send(302, b"", {"Location": receiver.redirect_to or "/elsewhere"})
        elif mode == "hang":
            # Released when the receiver closes, so no thread outlives the test.
            receiver._closing.wait(receiver.hang_s)
            self._send(200, self._ok_answer(answer_id))
        elif mode == "drop_after_read":
            self.close_connection = True  # the server then closes the socket: no answer at all
        elif mode == "huge":
            self._send_huge(receiver)

    @staticmethod
    def _ok_answer(answer_id: str) -> bytes:
        return json.dumps(
            {"id": answer_id, "url": f"https://receiver.example/posts/{answer_id}"}
        ).encode()

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client left (after a hang): nothing to answer

    def _send_huge(self, receiver: FakeReceiver) -> None:
        start, chunk, end = b'{"id": "huge", "padding": "', b" " * 65536, b'"}'
        chunks = receiver.huge_bytes // len(chunk) + 1
        self.send_response(receiver.huge_status)
        self.send_header("Content-Type", "application/json")
        if receiver.huge_announced:
            self.send_header("Content-Length", str(len(start) + chunks * len(chunk) + len(end)))
        else:  # the body ends when the connection closes: only counting bytes can stop it
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(start)
            for _ in range(chunks):
                self.wfile.write(chunk)
            self.wfile.write(end)
        except OSError:
            pass  # the client stopped reading, as it should


@contextmanager
def fake_receiver(secret: str, host: str = "127.0.0.1") -> Iterator[FakeReceiver]:
    """A receiver verifying with `secret`, listening on `host` on a free port."""
    server = _Server((host, 0), _Handler)
    server.receiver = FakeReceiver(host, server.server_address[1], secret)
    # A short poll: shutting down waits for it, and every test starts and stops a receiver.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.receiver
    finally:
        server.receiver._closing.set()
        server.shutdown()
        server.server_close()
