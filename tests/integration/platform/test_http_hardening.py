"""Security headers on every response, a CORS allow-list, a request body size limit, and no
text PostgreSQL refuses (NUL, invalid UTF-8) reaching it from any input."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from socialflow.app import create_app
from socialflow.settings import Settings
from tests.integration.tenancy_fixtures import Platform, World


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
        ok = await client.options(
            "/health", headers={"Origin": "https://app.example.com", **preflight}
        )
        other = await client.options(
            "/health", headers={"Origin": "https://evil.example", **preflight}
        )
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


# -- text that PostgreSQL refuses: NUL and invalid UTF-8, in every input -------------------


def _refused_text(response: Any, source: str, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "/problems/invalid-text"
    [error] = body["errors"]
    assert (error["field"], error["source"]) == (field, source)
    assert error["message"] in {"contains a NUL character", "is not valid UTF-8"}


@pytest.mark.parametrize("query", ["agency=%00x", "agency=x%FFy", "status=%C0%80"])
async def test_nul_or_invalid_utf8_in_a_query_parameter_is_422(
    platform: Platform, world: World, query: str
) -> None:
    # Found by fuzzing: `?agency=%00x` reached PostgreSQL and answered 500.
    response = await platform.client.get(f"/api/v1/tenants?{query}", headers=world.operator.headers)
    _refused_text(response, "query", query.split("=", maxsplit=1)[0])


async def test_nul_in_a_tenant_content_filter_is_422(platform: Platform, world: World) -> None:
    base = f"/api/v1/tenants/{world.tenant_a}"
    for path in ("/members?role=%00", "/audit-log?action=a%00b"):
        response = await platform.client.get(base + path, headers=world.owner_a.headers)
        _refused_text(response, "query", path.split("?")[1].split("=")[0])


@pytest.mark.parametrize("segment", ["%00abc", "ab%FFc"])
async def test_nul_or_invalid_utf8_in_a_path_parameter_is_422(
    platform: Platform, world: World, segment: str
) -> None:
    response = await platform.client.get(
        f"/api/v1/tenants/{segment}/settings", headers=world.owner_a.headers
    )
    _refused_text(response, "path", "path")


async def test_nul_in_a_json_body_is_422_naming_the_field(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    url, headers = f"/api/v1/tenants/{world.tenant_a}/settings", world.owner_a.headers
    json_headers = {**headers, "content-type": "application/json"}
    refused = await platform.client.put(
        url, content=b'{"display_name": "a\\u0000b"}', headers=json_headers
    )
    _refused_text(refused, "body", "display_name")
    schema = world.tenant_a.replace("-", "_")
    assert pg.execute(f'SELECT display_name FROM "t_{schema}".settings').fetchone() == (None,)
    # An escaped backslash before "u0000" is ordinary text, not NUL.
    text = await platform.client.put(
        url, content=b'{"display_name": "a\\\\u0000b"}', headers=json_headers
    )
    assert text.status_code == 200, text.text
    assert text.json()["display_name"] == "a\\u0000b"


async def test_invalid_utf8_in_a_json_body_is_422(platform: Platform, world: World) -> None:
    response = await platform.client.put(
        f"/api/v1/tenants/{world.tenant_a}/settings",
        content=b'{"display_name": "a\xffb"}',
        headers={**world.owner_a.headers, "content-type": "application/json"},
    )
    _refused_text(response, "body", "body")


async def test_nul_in_the_credentials_is_422(platform: Platform, world: World) -> None:
    response = await platform.client.get("/api/v1/me", headers={"Authorization": "Bearer a\x00b"})
    _refused_text(response, "header", "Authorization")


async def test_json_nested_past_the_parsers_limit_is_a_400_problem_not_a_500(
    client: AsyncTestClient[Litestar],
) -> None:
    for inner in (b"1", b'"\\u0000"'):
        body = b"[" * 3000 + inner + b"]" * 3000
        response = await client.post(
            "/api/v1/auth/token", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
