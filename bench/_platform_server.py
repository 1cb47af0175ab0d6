"""Mastodon-shaped instances on loopback for bench/publishing.py, in a process of their own.

One asyncio server answers on several ports, each port one instance (a tenant's `server_url`),
with the calls the publish engine makes: `GET /api/v2/instance` (the adapter's validate),
`POST /api/v1/statuses` (Bearer token, `Idempotency-Key`) and
`GET /api/v1/accounts/{id}/statuses` (the watchdog's lookup). Every answer comes after a fixed
latency, on its own task: a thousand requests at once wait side by side, not in line.

Unlike Mastodon, and unlike tests/integration/social/fake_mastodon.py, a status POST ALWAYS
creates a status, whatever its Idempotency-Key: the statuses counted per key then measure
the engine's own "never twice", not the platform's dedup. Each status records when its
request arrived (time.time(), this machine's clock) and the key it carried.

A control port (no latency) takes the accounts and tokens (`POST /_bench/accounts`) and
hands back what happened (`GET /_bench/statuses`, `GET /_bench/stats`).

    python bench/_platform_server.py --instances 201 --latency-ms 50
    (prints one JSON line: {"control": port, "instances": [port, ...]})
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import itertools
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 64 * 1024
PAGE_LIMIT = 40


@dataclass(frozen=True)
class Status:
    id: int
    account: str
    key: str | None
    text: str
    created_at: datetime
    arrived: float  # time.time() once the request was read
    port: int


@dataclass
class Platform:
    """Every instance's accounts and statuses (one state: ports only tell instances apart)."""

    latency_s: float
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # token → (id, username)
    statuses: list[Status] = field(default_factory=list)
    by_account: dict[str, list[Status]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    # Status POSTs under way (read, not answered yet), by the client's port.
    posting: Counter[int] = field(default_factory=Counter)
    max_posting: int = 0
    _sequence: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def create(self, account: str, key: str | None, text: str, arrived: float, port: int) -> Status:
        moment = datetime.now(UTC)
        # Mastodon's ids are snowflakes: milliseconds, then a sequence (ordered by time).
        snowflake = (int(moment.timestamp() * 1000) << 16) | (next(self._sequence) & 0xFFFF)
        status = Status(snowflake, account, key, text, moment, arrived, port)
        self.statuses.append(status)
        self.by_account.setdefault(account, []).append(status)
        return status


Reply = tuple[int, Any]


def status_json(origin: str, status: Status, username: str) -> dict[str, Any]:
    return {
        "id": str(status.id),
        "created_at": status.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "sensitive": False,
        "spoiler_text": "",
        "visibility": "public",
        "language": "en",
        "uri": f"{origin}/users/{username}/statuses/{status.id}",
        "url": f"{origin}/@{username}/{status.id}",
        "content": f"<p>{html.escape(status.text)}</p>",
        "reblog": None,
        "account": {"id": status.account, "username": username, "acct": username},
        "media_attachments": [],
        "mentions": [],
        "tags": [],
    }


INSTANCE = {
    "domain": "127.0.0.1",
    "title": "Bench instance",
    "version": "4.3.0",
    "configuration": {
        "statuses": {
            "max_characters": 500,
            "max_media_attachments": 4,
            "characters_reserved_per_url": 23,
        },
        "media_attachments": {
            "supported_mime_types": ["image/jpeg", "image/png", "image/webp", "video/mp4"],
            "image_size_limit": 16_777_216,
            "video_size_limit": 103_809_024,
            "description_limit": 1500,
        },
    },
}


class Server:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, control: bool
    ) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                try:
                    body = await reader.readexactly(int(headers.get("content-length") or 0))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the client died mid-request: nothing was asked
                arrived = time.time()
                peer = int(writer.get_extra_info("peername")[1])
                if control:
                    status, payload = self.control(method, target, body)
                else:
                    status, payload = await self.api(
                        method, target, headers, body, arrived, port, peer
                    )
                data = json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    async def api(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        arrived: float,
        port: int,
        peer: int,
    ) -> Reply:
        platform = self.platform
        url = urlsplit(target)
        route = f"{method} {url.path}"
        if url.path.startswith("/api/v1/accounts/"):
            route = f"{method} /api/v1/accounts/:id/statuses"
        platform.requests[route] += 1
        posting = route == "POST /api/v1/statuses"
        if posting:
            platform.posting[peer] += 1
            platform.max_posting = max(platform.max_posting, platform.posting.total())
        try:
            reply = self.answer(route, url.path, url.query, headers, body, arrived, port)
            await asyncio.sleep(platform.latency_s)
            return reply
        finally:
            if posting:
                platform.posting[peer] -= 1
                if not platform.posting[peer]:
                    del platform.posting[peer]

    def answer(
        self,
        route: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        arrived: float,
        port: int,
    ) -> Reply:
        origin = f"http://127.0.0.1:{port}"
        if route == "GET /api/v2/instance":
            return 200, INSTANCE
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        owner = self.platform.tokens.get(token)
        if route not in ("POST /api/v1/statuses", "GET /api/v1/accounts/:id/statuses"):
            return 404, {"error": "Record not found"}
        if owner is None:
            return 401, {"error": "The access token is invalid"}
        account, username = owner
        if route == "POST /api/v1/statuses":
            fields = json.loads(body or b"{}")
            text = fields.get("status") if isinstance(fields, dict) else None
            if not isinstance(text, str) or not text.strip():
                return 422, {"error": "Validation failed: Text can't be blank"}
            created = self.platform.create(
                account, headers.get("idempotency-key"), text, arrived, port
            )
            return 200, status_json(origin, created, username)
        if path.split("/")[4] != account:
            return 404, {"error": "Record not found"}
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        limit = min(int(params.get("limit", "20")), PAGE_LIMIT)
        newest_first = sorted(self.platform.by_account.get(account, []), key=lambda s: -s.id)
        if "max_id" in params:
            newest_first = [s for s in newest_first if s.id < int(params["max_id"])]
        return 200, [status_json(origin, s, username) for s in newest_first[:limit]]

    def control(self, method: str, target: str, body: bytes) -> Reply:
        platform = self.platform
        if method == "POST" and target == "/_bench/accounts":
            for token, (account, username) in json.loads(body).items():
                platform.tokens[token] = (account, username)
            return 200, {"accounts": len(platform.tokens)}
        if target == "/_bench/statuses":
            return 200, [
                [s.arrived, s.key, s.account, str(s.id), s.port, s.text] for s in platform.statuses
            ]
        if target == "/_bench/posting":
            return 200, sorted(platform.posting)
        if target == "/_bench/stats":
            return 200, {
                "statuses": len(platform.statuses),
                "requests": dict(platform.requests),
                "max_posting": platform.max_posting,
            }
        return 404, {"error": "unknown"}


async def serve(instances: int, latency_s: float) -> None:
    server = Server(Platform(latency_s))
    ports: list[int] = []
    listening = []
    for number in range(instances + 1):
        control = number == 0
        holder: dict[str, int] = {}

        async def handle(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            holder: dict[str, int] = holder,
            control: bool = control,
        ) -> None:
            await server.connection(reader, writer, holder["port"], control)

        listener = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096, limit=MAX_HEAD)
        holder["port"] = listener.sockets[0].getsockname()[1]
        ports.append(holder["port"])
        listening.append(listener)
    print(json.dumps({"control": ports[0], "instances": ports[1:]}), flush=True)
    await asyncio.Event().wait()  # until killed


# -- the benchmark's side ----------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """A status the platform created: when its POST arrived, with which key, for whom."""

    arrived: float
    key: str | None
    account: str
    status_id: str
    port: int
    text: str


class PlatformProcess:
    """The instances, running in a process of their own (so the benchmark's own work does not
    delay their answers), and the control calls the benchmark makes."""

    def __init__(self, instances: int, latency_s: float, log: Path) -> None:
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--instances",
                str(instances),
                "--latency-ms",
                str(latency_s * 1000),
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise SystemExit(f"the platform server did not start; see {log}")
        announced = json.loads(line)
        self.control = f"http://127.0.0.1:{announced['control']}"
        self.instance_ports: list[int] = announced["instances"]
        self.latency_s = latency_s

    def origin(self, number: int) -> str:
        return f"http://127.0.0.1:{self.instance_ports[number]}"

    def _call(self, method: str, path: str, body: object = None) -> Any:
        request = urllib.request.Request(
            self.control + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def add_accounts(self, tokens: dict[str, tuple[str, str]]) -> None:
        """Accounts by their access token: (account id, username)."""
        self._call("POST", "/_bench/accounts", {t: list(a) for t, a in tokens.items()})

    def arrivals(self) -> list[Arrival]:
        return [Arrival(*row) for row in self._call("GET", "/_bench/statuses")]

    def posting(self) -> set[int]:
        """The client ports of the status POSTs under way (read, not answered yet)."""
        return set(self._call("GET", "/_bench/posting"))

    def stats(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/_bench/stats")
        return found

    def stop(self) -> None:
        self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    asyncio.run(serve(args.instances, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
