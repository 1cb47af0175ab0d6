"""The clients platform calls go through keep no cookie: one tenant's platform cannot set what
another tenant's calls send."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from socialflow.settings import Settings
from socialflow.social.clients import platform_client, platform_reach


class _SetsCookies(BaseHTTPRequestHandler):
    seen: list[str | None] = []  # noqa: RUF012 - the test reads what arrived

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Cookie"))
        self.send_response(200)
        self.send_header("Set-Cookie", "sid=tenant-a; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def cookie_setter() -> Iterator[str]:
    _SetsCookies.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SetsCookies)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def loopback(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"outbound_allowed_networks": ("127.0.0.1/32",), "outbound_allow_http": True}
    )


async def test_the_workers_shared_client_sends_no_cookie_a_platform_set(
    loopback: Settings, cookie_setter: str
) -> None:
    http = platform_reach(loopback).http
    await http.get(cookie_setter)
    await http.get(cookie_setter)
    assert _SetsCookies.seen == [None, None]


async def test_a_requests_client_sends_no_cookie_a_platform_set(
    loopback: Settings, cookie_setter: str
) -> None:
    async with platform_client(loopback) as http:
        await http.get(cookie_setter)
        await http.get(cookie_setter)
    assert _SetsCookies.seen == [None, None]
