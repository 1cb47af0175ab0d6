"""No secret reaches the logs or the process's output: BYOK keys (also when a provider echoes
them), passwords, access and refresh tokens, API keys. Each test first sees its own request's
`request.completed` line in the capture, so it cannot pass on an empty one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from socialflow.app import create_app
from socialflow.settings import Settings
from tests.integration.ai.fake_openai import fake_openai_server
from tests.integration.tenancy_fixtures import PASSWORD, Platform, World, bearer, unique
from tests.log_capture import ProcessOutput, process_output_fixture  # noqa: F401


@pytest.fixture(autouse=True)
def _fresh_sign_in_limits(redis_client: Any) -> None:
    """These tests sign several accounts in: start with empty per-address windows."""


def _completed(output: ProcessOutput, response: Any) -> None:
    """The positive control: this request's completion line is in the capture."""
    output.assert_logged(
        "request.completed",
        request_id=response.headers["x-request-id"],
        status=response.status_code,
    )


def _assert_absent(output: ProcessOutput, *secrets: str) -> None:
    everything = output.everything()
    for secret in secrets:
        assert secret not in everything
        assert secret[:-4] not in everything  # not even shown without its last 4


@pytest.fixture
def fake_provider() -> Iterator[str]:
    with fake_openai_server() as (base_url, _):
        yield base_url


@pytest.fixture
async def loopback_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The API as an operator configured it to let tenants reach loopback over http."""
    allowed = settings.model_copy(
        update={"outbound_allowed_networks": ("127.0.0.0/8",), "outbound_allow_http": True}
    )
    async with AsyncTestClient(create_app(allowed)) as client:
        yield client


async def test_a_byok_key_is_in_no_log_line_and_no_printed_output(
    platform: Platform, world: World, process_output: ProcessOutput
) -> None:
    secret = "sk-proj-" + unique("x").replace("-", "") + "abcdefghijklmnopqrst"
    url = f"/api/v1/tenants/{world.tenant_a}/ai/keys"
    put = await platform.client.put(
        f"{url}/openai", json={"api_key": secret, "label": "prod"}, headers=world.owner_a.headers
    )
    assert put.status_code == 200, put.text
    listing = await platform.client.get(url, headers=world.owner_a.headers)
    assert listing.status_code == 200

    _completed(process_output, put)
    _completed(process_output, listing)
    _assert_absent(process_output, secret)


async def test_a_byok_key_the_provider_echoes_back_is_in_no_log_line_and_no_printed_output(
    loopback_client: AsyncTestClient[Litestar],
    world: World,
    fake_provider: str,
    process_output: ProcessOutput,
) -> None:
    # The fake provider, like OpenAI, quotes the key it refused in its error body.
    secret = "sk-wrong-" + unique("k").replace("-", "") + "abcdefghijklmnop"
    url = f"/api/v1/tenants/{world.tenant_a}/ai/keys/openai_compatible"
    put = await loopback_client.put(
        url, json={"api_key": secret, "base_url": fake_provider}, headers=world.owner_a.headers
    )
    assert put.status_code == 200, put.text
    tried = await loopback_client.post(
        f"{url}/test", json={"model": "llama3"}, headers=world.owner_a.headers
    )
    assert tried.status_code == 200, tried.text
    assert tried.json()["ok"] is False  # the call reached the provider and was refused

    _completed(process_output, tried)
    _assert_absent(process_output, secret)


async def test_passwords_tokens_and_api_keys_are_in_no_log_line_and_no_printed_output(
    platform: Platform, world: World, process_output: ProcessOutput
) -> None:
    wrong_password = "not-the-password-" + unique("p")
    refused = await platform.client.post(
        "/api/v1/auth/token", json={"email": world.owner_a.email, "password": wrong_password}
    )
    assert refused.status_code == 401
    signed_in = await platform.client.post(
        "/api/v1/auth/token", json={"email": world.owner_a.email, "password": PASSWORD}
    )
    assert signed_in.status_code == 200
    tokens = signed_in.json()
    refreshed = await platform.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    created = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": "ci", "role": "viewer"},
        headers=bearer(tokens["access_token"]),
    )
    assert created.status_code == 201, created.text
    api_key = created.json()["key"]
    used = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/settings", headers=bearer(api_key)
    )
    assert used.status_code == 200
    # A refused bearer is logged as a refusal, never quoted.
    forged = api_key[:-6] + "XXXXXX"
    refused_key = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/settings", headers=bearer(forged)
    )
    assert refused_key.status_code == 401

    for response in (refused, signed_in, refreshed, created, used, refused_key):
        _completed(process_output, response)
    _assert_absent(
        process_output,
        PASSWORD,
        wrong_password,
        tokens["access_token"],
        tokens["refresh_token"],
        refreshed.json()["refresh_token"],
        api_key,
        forged,
    )
