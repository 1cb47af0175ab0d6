"""BYOK keys: stored sealed, shown masked, tested for real, never echoed, logged or audited."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from socialflow.app import create_app
from socialflow.settings import Settings
from tests.integration.ai.fake_openai import (
    BIG_KEY,
    GOOD_KEY,
    RAW_BODY_MARKER,
    REDIRECT_KEY,
    SLOW_KEY,
    FakeProvider,
    fake_openai_server,
    fake_provider,
    loopback_alias_available,
)
from tests.integration.tenancy_fixtures import Platform, World, unique

BAD_KEY = "sk-wrong-0123456789abcdefghijklmnop"


@pytest.fixture
def fake_openai() -> Iterator[tuple[str, list[dict[str, object]]]]:
    with fake_openai_server() as server:
        yield server


@pytest.fixture
async def loopback_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The API as an operator configured it to let tenants reach the fake provider's one
    loopback address over http (tests), with small bounds."""
    allowed = settings.model_copy(
        update={
            "outbound_allowed_networks": ("127.0.0.1/32",),
            "outbound_allow_http": True,
            "ai_test_timeout_s": 0.5,
            "outbound_max_response_bytes": 64 * 1024,
        }
    )
    async with AsyncTestClient(create_app(allowed)) as client:
        yield client


def _event_types(pg: psycopg.Connection[Any], slug: str) -> list[str]:
    rows = pg.execute("SELECT event_type FROM shared.outbox WHERE tenant = %s ORDER BY id", (slug,))
    return [r[0] for r in rows]


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.msg!r} {r.args!r} {r.exc_text}" for r in caplog.records)


async def test_a_key_is_stored_sealed_and_only_ever_shown_masked(
    platform: Platform,
    world: World,
    pg: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk-proj-" + unique("x").replace("-", "") + "abcdefghijklmnopqrst"
    url = f"/api/v1/tenants/{world.tenant_a}/ai/keys"
    put = await platform.client.put(
        f"{url}/openai", json={"api_key": secret, "label": "prod"}, headers=world.owner_a.headers
    )
    assert put.status_code == 200, put.text
    shown = put.json()
    assert shown["last4"] == secret[-4:]
    assert len(shown["fingerprint"]) >= 8
    listing = await platform.client.get(url, headers=world.owner_a.headers)
    assert [k["provider"] for k in listing.json()["items"]] == ["openai"]

    schema = "t_" + world.tenant_a.replace("-", "_")
    (sealed,) = pg.execute(f'SELECT sealed_key FROM "{schema}".ai_provider_keys').fetchone()  # type: ignore[misc]
    assert secret.encode() not in bytes(sealed)
    for text in (
        put.text,
        listing.text,
        str(
            pg.execute(
                "SELECT payload FROM shared.outbox WHERE tenant = %s", (world.tenant_a,)
            ).fetchall()
        ),
        str(pg.execute(f'SELECT before, after FROM "{schema}".audit_log').fetchall()),
        _everything_logged(caplog),
    ):
        assert secret not in text
        assert secret[:-4] not in text
    assert "ai_key.configured" in _event_types(pg, world.tenant_a)


async def test_removing_a_key_emits_its_event_and_it_is_gone(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/ai/keys/anthropic"
    headers = world.owner_a.headers
    await platform.client.put(
        url, json={"api_key": "sk-ant-api03-abcdefghijklmnopq"}, headers=headers
    )
    assert (await platform.client.delete(url, headers=headers)).status_code == 204
    assert (await platform.client.delete(url, headers=headers)).status_code == 404
    assert (await platform.client.post(f"{url}/test", headers=headers)).status_code == 404
    assert _event_types(pg, world.tenant_a)[-1] == "ai_key.removed"


async def test_an_unknown_provider_is_404_and_azure_needs_a_base_url(
    platform: Platform, world: World
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/ai/keys"
    headers = world.owner_a.headers
    unknown = await platform.client.put(
        f"{url}/mistral", json={"api_key": "x" * 20}, headers=headers
    )
    assert unknown.status_code == 404
    azure = await platform.client.put(f"{url}/azure", json={"api_key": "x" * 32}, headers=headers)
    assert azure.status_code == 422
    assert azure.json()["errors"][0]["field"] == "base_url"


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:11434/v1",
        "https://127.0.0.1/v1",
        "https://169.254.169.254/latest",
        "https://localhost/v1",
        "https://[::1]/v1",
    ],
)
async def test_a_base_url_on_a_private_or_loopback_address_is_refused(
    platform: Platform, world: World, pg: psycopg.Connection[Any], base_url: str
) -> None:
    response = await platform.client.put(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible",
        json={"api_key": GOOD_KEY, "base_url": base_url},
        headers=world.owner_a.headers,
    )
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/url-not-allowed"
    schema = "t_" + world.tenant_a.replace("-", "_")
    assert pg.execute(f'SELECT count(*) FROM "{schema}".ai_provider_keys').fetchone() == (0,)


async def _configure(
    client: AsyncTestClient[Litestar], world: World, key: str, base_url: str
) -> Any:
    return await client.put(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible",
        json={"api_key": key, "base_url": base_url},
        headers=world.owner_a.headers,
    )


async def test_the_key_test_reports_success_from_the_real_provider_api(
    loopback_client: AsyncTestClient[Litestar],
    world: World,
    fake_openai: tuple[str, list[dict[str, object]]],
) -> None:
    base_url, calls = fake_openai
    assert (await _configure(loopback_client, world, GOOD_KEY, base_url)).status_code == 200
    result = await loopback_client.post(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible/test",
        json={"model": "llama3"},
        headers=world.owner_a.headers,
    )
    assert result.status_code == 200
    assert result.json()["ok"] is True
    assert calls[-1]["model"] == "llama3"
    assert calls[-1]["key"] == GOOD_KEY  # the tenant's own key reached the provider


async def test_a_rejected_key_is_reported_without_echoing_it(
    loopback_client: AsyncTestClient[Litestar],
    world: World,
    fake_openai: tuple[str, list[dict[str, object]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    base_url, _ = fake_openai
    await _configure(loopback_client, world, BAD_KEY, base_url)
    result = await loopback_client.post(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible/test",
        json={"model": "llama3"},
        headers=world.owner_a.headers,
    )
    body = result.json()
    assert (body["ok"], body["error_type"], body["status_code"]) == (
        False,
        "authentication_error",
        401,
    )
    assert BAD_KEY not in result.text
    assert BAD_KEY[:-4] not in result.text
    assert BAD_KEY not in _everything_logged(caplog)


async def test_the_key_test_never_echoes_the_providers_error_body(
    loopback_client: AsyncTestClient[Litestar],
    world: World,
    fake_openai: tuple[str, list[dict[str, object]]],
) -> None:
    base_url, calls = fake_openai
    await _configure(loopback_client, world, BAD_KEY, base_url)
    result = await loopback_client.post(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible/test",
        json={"model": "llama3"},
        headers=world.owner_a.headers,
    )
    assert calls, "the provider was called and answered with its error body"
    body = result.json()
    assert (body["ok"], body["error_type"], body["status_code"]) == (
        False,
        "authentication_error",
        401,
    )
    assert RAW_BODY_MARKER not in result.text
    assert body["message"] == "The provider did not accept the key."


@pytest.fixture
def provider_and_internal() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    """The tenant's provider on 127.0.0.1 and an internal service on 127.0.0.2."""
    if not loopback_alias_available("127.0.0.2"):
        pytest.skip("cannot listen on 127.0.0.2 here")
    with fake_provider() as provider, fake_provider("127.0.0.2") as internal:
        yield provider, internal


async def test_a_provider_redirect_to_an_address_not_allowed_is_refused_not_followed(
    loopback_client: AsyncTestClient[Litestar],
    world: World,
    provider_and_internal: tuple[FakeProvider, FakeProvider],
) -> None:
    provider, internal = provider_and_internal
    provider.redirect_to = f"{internal.base_url}/chat/completions"
    assert (await _configure(loopback_client, world, REDIRECT_KEY, provider.base_url)).is_success
    result = await loopback_client.post(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible/test",
        json={"model": "llama3"},
        headers=world.owner_a.headers,
    )
    body = result.json()
    assert (body["ok"], body["error_type"], body["status_code"]) == (
        False,
        "url_not_allowed",
        None,
    )
    assert len(provider.calls) == 1
    assert internal.connections == []


async def test_an_oversized_provider_answer_is_cut_off_with_a_clear_error(
    loopback_client: AsyncTestClient[Litestar],
    world: World,
    fake_openai: tuple[str, list[dict[str, object]]],
) -> None:
    base_url, _ = fake_openai
    await _configure(loopback_client, world, BIG_KEY, base_url)
    result = await loopback_client.post(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible/test",
        json={"model": "llama3"},
        headers=world.owner_a.headers,
    )
    body = result.json()
    assert (body["ok"], body["error_type"]) == (False, "response_too_large")
    assert body["message"] == "The provider's answer was larger than the platform accepts."


async def test_a_provider_that_does_not_answer_in_time_is_a_timeout(
    loopback_client: AsyncTestClient[Litestar],
    world: World,
    fake_openai: tuple[str, list[dict[str, object]]],
) -> None:
    base_url, _ = fake_openai
    await _configure(loopback_client, world, SLOW_KEY, base_url)
    result = await loopback_client.post(
        f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible/test",
        json={"model": "llama3"},
        headers=world.owner_a.headers,
    )
    assert result.json()["ok"] is False
    assert result.json()["error_type"] == "timeout"


async def test_only_admins_manage_keys(
    platform: Platform, world: World, pg: psycopg.Connection[Any]
) -> None:
    editor = await platform.member(world.tenant_a, "editor")
    url = f"/api/v1/tenants/{world.tenant_a}/ai"
    assert (await platform.client.get(f"{url}/keys", headers=editor.headers)).status_code == 403
    put = await platform.client.put(
        f"{url}/keys/openai", json={"api_key": "sk-" + "a" * 30}, headers=editor.headers
    )
    assert put.status_code == 403
    assert (
        await platform.client.get(f"{url}/keys", headers=world.owner_b.headers)
    ).status_code == 404


async def test_ai_settings_are_read_and_changed_per_tenant(
    platform: Platform, world: World
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/ai/settings"
    defaults = (await platform.client.get(url, headers=world.owner_a.headers)).json()
    assert defaults["embedding_dimension"] == 1536
    changed = await platform.client.put(
        url,
        json={"embedding_model": "openai/text-embedding-3-large", "embedding_dimension": 3072},
        headers=world.owner_a.headers,
    )
    assert changed.json()["embedding_dimension"] == 3072
    other = (
        await platform.client.get(
            f"/api/v1/tenants/{world.tenant_b}/ai/settings", headers=world.owner_b.headers
        )
    ).json()
    assert other["embedding_dimension"] == 1536
    bad = await platform.client.put(
        url, json={"embedding_dimension": 0}, headers=world.owner_a.headers
    )
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"caption_model": "openai/gpt-3.5-turbo"}, "caption_model"),  # cannot see images
        ({"caption_model": "openai/text-embedding-3-small"}, "caption_model"),
        ({"caption_model": "openai/not-a-model-at-all"}, "caption_model"),
        ({"embedding_model": "openai/gpt-4o-mini"}, "embedding_model"),
    ],
)
async def test_a_model_that_cannot_serve_its_setting_is_refused_and_nothing_changes(
    platform: Platform, world: World, change: dict[str, str], field: str
) -> None:
    url = f"/api/v1/tenants/{world.tenant_a}/ai/settings"
    before = (await platform.client.get(url, headers=world.owner_a.headers)).json()

    refused = await platform.client.put(url, json=change, headers=world.owner_a.headers)

    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == [field]
    after = (await platform.client.get(url, headers=world.owner_a.headers)).json()
    assert after == before
