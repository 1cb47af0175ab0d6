"""A small OpenAI-compatible server on loopback, speaking the real chat completions API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD_KEY = "sk-good-0123456789abcdefghijklmnop"
SLOW_KEY = "sk-slow-0123456789abcdefghijklmnop"


class _Handler(BaseHTTPRequestHandler):
    calls: list[dict[str, object]] = []  # noqa: RUF012 - shared record of requests, per server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append({"path": self.path, "model": body.get("model"), "key": key})
        if not self.path.endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
        elif key == SLOW_KEY:
            time.sleep(3)
            self._send(200, _completion(body))
        elif key != GOOD_KEY:
            # Like OpenAI, the error quotes the key it was given.
            self._send(401, {"error": {
                "message": f"Incorrect API key provided: {key}.",
                "type": "invalid_request_error", "param": None, "code": "invalid_api_key",
            }})  # fmt: skip
        else:
            self._send(200, _completion(body))

    def _send(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _completion(body: dict[str, object]) -> dict[str, object]:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "test"),
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "p"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }  # fmt: skip


@contextmanager
def fake_openai_server() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """Yield (base URL, calls received)."""
    handler = type("Handler", (_Handler,), {"calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler.calls
    finally:
        server.shutdown()
        server.server_close()
