"""A small AI provider on loopback speaking the real APIs: OpenAI chat completions (also as Azure
deployments), Anthropic messages and Gemini generateContent. Some keys make it misbehave."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GOOD_KEY = "sk-good-0123456789abcdefghijklmnop"
SLOW_KEY = "sk-slow-0123456789abcdefghijklmnop"
BIG_KEY = "sk-big-0123456789abcdefghijklmnopq"  # answers with a body of `big_bytes`
REDIRECT_KEY = "sk-redirect-0123456789abcdefghijk"  # answers 307 to `redirect_to`
DRIP_KEY = "sk-drip-0123456789abcdefghijklmno"  # answers a byte every 0.2 s, for 10 s
# Every error body carries this: a tenant must never see the provider's own words.
RAW_BODY_MARKER = "raw-provider-body-Q7X2"


@dataclass
class FakeProvider:
    host: str
    port: int
    calls: list[dict[str, object]] = field(default_factory=list)
    connections: list[tuple[str, int]] = field(default_factory=list)  # every TCP accept
    redirect_to: str | None = None
    big_bytes: int = 2 * 1024 * 1024

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"


class _Server(ThreadingHTTPServer):
    provider: FakeProvider

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.provider.connections.append(client_address)
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        provider = self.server.provider
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw or b"{}")
        url = urlsplit(self.path)
        key = self._key(url.query)
        provider.calls.append(
            {
                "path": url.path,
                "model": body.get("model"),
                "key": key,
                "host": self.headers.get("Host"),
            }
        )
        api = _api(url.path)
        if api is None:
            self._send(404, {"error": {"message": f"not found {RAW_BODY_MARKER}"}})
        elif key == REDIRECT_KEY and provider.redirect_to:
            self._redirect(provider.redirect_to)
        elif key == BIG_KEY:
            self._send_big(provider.big_bytes)
        elif key == DRIP_KEY:
            self._drip()
        elif key == SLOW_KEY:
            time.sleep(3)
            self._send(200, _answer(api, body, url.path))
        elif key != GOOD_KEY:
            # Like OpenAI, the error quotes the key it was given.
            self._send(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {key}. {RAW_BODY_MARKER}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        else:
            self._send(200, _answer(api, body, url.path))

    def _key(self, query: str) -> str:
        for header in ("x-api-key", "api-key", "x-goog-api-key"):
            if self.headers.get(header):
                return str(self.headers[header])
        from_query = parse_qs(query).get("key")
        if from_query:
            return from_query[0]
        return self.headers.get("Authorization", "").removeprefix("Bearer ")

    def _send(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_big(self, size: int) -> None:
        # No Content-Length: the body ends when the connection closes, so only counting the
        # bytes as they arrive can stop it.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        chunk = b" " * 65536
        try:
            self.wfile.write(b'{"padding": "')
            for _ in range(size // len(chunk) + 1):
                self.wfile.write(chunk)
            self.wfile.write(b'"}')
        except OSError:
            pass  # the client stopped reading, as it should

    def _drip(self) -> None:
        # Every read finishes well within a read timeout; the whole answer never does.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            for _ in range(50):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up, as it should


def _api(path: str) -> str | None:
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/messages"):
        return "anthropic"
    if path.endswith(":generateContent"):
        return "gemini"
    return None


def _answer(api: str, body: dict[str, Any], path: str) -> dict[str, object]:
    if api == "anthropic":
        return {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "test"),
            "content": [{"type": "text", "text": "p"}],
            "stop_reason": "max_tokens",
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    if api == "gemini":
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": "p"}], "role": "model"},
                    "finishReason": "MAX_TOKENS",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 1,
                "candidatesTokenCount": 1,
                "totalTokenCount": 2,
            },
            "modelVersion": path.rsplit("/", 1)[-1].split(":", 1)[0],
        }
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test"),
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": "p"},
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@contextmanager
def fake_provider(host: str = "127.0.0.1") -> Iterator[FakeProvider]:
    """A fake provider listening on `host` (any loopback address) on a free port."""
    server = _Server((host, 0), _Handler)
    server.provider = FakeProvider(host, server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.provider
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def fake_openai_server() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """Yield (base URL, calls received)."""
    with fake_provider() as provider:
        yield provider.base_url, provider.calls


def loopback_alias_available(host: str) -> bool:
    """Whether this machine can listen on another loopback address (Linux: all of 127/8)."""
    try:
        with socket.socket() as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True
