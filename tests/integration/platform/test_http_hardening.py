"""Security headers on every response, a CORS allow-list, and a request body size limit."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from socialflow.app import create_app
from socialflow.settings import Settings


async def test_every_response_carries_the_security_headers(
    client: AsyncTestClient[Litestar],
) -> None:
    for path in ("/health", "/no/such/path"):
        response = await client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_cors_answers_only_allowed_origins(settings: Settings) -> None:
    allowed = settings.model_copy(update={"cors_allowed_origins": ("https://app.example.com",)})
    async with AsyncTestClient(create_app(allowed)) as client:
        preflight = {"Access-Control-Request-Method": "GET"}
        ok = await client.options("/health", headers={"Origin": "https://app.example.com",
                                                      **preflight})  # fmt: skip
        other = await client.options("/health", headers={"Origin": "https://evil.example",
                                                         **preflight})  # fmt: skip
    assert ok.headers.get("access-control-allow-origin") == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers


async def test_a_body_over_the_limit_is_413_problem(settings: Settings) -> None:
    small = settings.model_copy(update={"max_request_body_bytes": 2048})
    async with AsyncTestClient(create_app(small)) as client:
        response = await client.post(
            "/api/v1/auth/token",
            content=b'{"email": "' + b"a" * 5000 + b'@example.com", "password": "x"}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
