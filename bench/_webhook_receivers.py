"""Webhook receivers on loopback for bench/webhooks.py, in a process of their own.

Each receiver is what the Standard Webhooks spec asks a receiver to be: it verifies every
request with the `standardwebhooks` package (a bad signature gets 401 and is counted) and
answers 204. It writes one line per request to its file: the time it arrived (time.time(),
this machine's clock), the `webhook-id`, the number the benchmark put in the event
(`data.after.display_name` = "bench <n>") and whether the signature verified.

A receiver with `listen_at` does not listen before then: its port refuses connections, as a
receiver that is down does.

    python bench/_webhook_receivers.py < config.json
    config: {"receivers": [{"port": 8001, "secret": "whsec_…", "file": "…", "listen_at": null}]}
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    webhook: Webhook
    out: TextIO
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the workers reuse their connections
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        arrived = time.time()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            self.server.webhook.verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        number = _number(body)
        line = f"{arrived:.6f} {headers.get('webhook-id', '-')} {number} {int(verified)}\n"
        with self.server.lock:
            self.server.out.write(line)
        self.send_response(204 if verified else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _number(body: bytes) -> int:
    try:
        name = json.loads(body)["data"]["after"]["display_name"]
        return int(str(name).removeprefix("bench "))
    except (ValueError, KeyError, TypeError):
        return -1


def _serve(spec: dict[str, Any]) -> None:
    if spec.get("listen_at"):
        time.sleep(max(0.0, float(spec["listen_at"]) - time.time()))
    server = _Server(("127.0.0.1", int(spec["port"])), _Handler)
    server.webhook = Webhook(spec["secret"])
    server.out = open(spec["file"], "a", buffering=1)  # noqa: SIM115 - lives with the process
    server.lock = threading.Lock()
    server.serve_forever(poll_interval=0.05)


def main() -> None:
    config = json.load(sys.stdin)
    for spec in config["receivers"]:
        threading.Thread(target=_serve, args=(spec,), daemon=True).start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
