"""Connecting a Mastodon account (app registration, PKCE code exchange, who the token is) and
reading an instance's limits, against a fake instance on loopback through the guarded client."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from socialflow.settings import Settings
from socialflow.social.platforms.base import ConnectRefused
from socialflow.social.platforms.mastodon import (
    authorization_url,
    code_challenge_for,
    exchange_code,
    instance_limits,
    normalize_instance_url,
    register_app,
)
from tests.integration.social.fake_mastodon import FakeMastodon, fake_mastodon, loopback_client
from tests.integration.social.fake_mastodon_shapes import FakeAccount

REDIRECT_URI = "https://app.socialflow.test/oauth/mastodon/callback"


@pytest.fixture
def fake() -> Iterator[FakeMastodon]:
    with fake_mastodon() as instance:
        yield instance


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_client(settings) as client:
        yield client


@pytest.fixture
def alice(fake: FakeMastodon) -> FakeAccount:
    return fake.add_account("alice")


async def test_connecting_registers_the_app_and_exchanges_the_code_with_pkce(
    fake: FakeMastodon, alice: FakeAccount, http: httpx.AsyncClient
) -> None:
    client_id, secret = await register_app(
        http, fake.origin, redirect_uri=REDIRECT_URI, scopes=("read", "write"), app_name="SF"
    )
    verifier = secrets.token_urlsafe(48)
    url = authorization_url(
        fake.origin,
        client_id=client_id,
        redirect_uri=REDIRECT_URI,
        scopes=("read", "write"),
        state="state-1",
        code_challenge=code_challenge_for(verifier),
    )
    callback = parse_qs(urlsplit(fake.approve(url, alice)).query)
    assert callback["state"] == ["state-1"]

    identity = await exchange_code(
        http,
        fake.origin,
        client_id=client_id,
        client_secret=secret,
        redirect_uri=REDIRECT_URI,
        code=callback["code"][0],
        code_verifier=verifier,
        scopes=("read", "write"),
    )

    assert (identity.account_ref, identity.handle) == (alice.id, "@alice@127.0.0.1")
    assert identity.scopes == ("read", "write")
    assert identity.credentials.client_id == client_id
    token = fake.tokens[identity.credentials.access_token or ""]
    assert token.account_id == alice.id
    assert fake.requests_to("POST", "/oauth/token")[0].form["code_verifier"] == verifier


async def test_a_wrong_code_verifier_is_refused(
    fake: FakeMastodon, alice: FakeAccount, http: httpx.AsyncClient
) -> None:
    client_id, secret = await register_app(
        http, fake.origin, redirect_uri=REDIRECT_URI, scopes="read write", app_name="SF"
    )
    url = authorization_url(
        fake.origin,
        client_id=client_id,
        redirect_uri=REDIRECT_URI,
        scopes="read write",
        state="s",
        code_challenge=code_challenge_for("the-right-verifier-" + "x" * 40),
    )
    code = parse_qs(urlsplit(fake.approve(url, alice)).query)["code"][0]

    with pytest.raises(ConnectRefused, match="invalid_grant"):
        await exchange_code(
            http,
            fake.origin,
            client_id=client_id,
            client_secret=secret,
            redirect_uri=REDIRECT_URI,
            code=code,
            code_verifier="a-wrong-verifier-" + "y" * 40,
            scopes="read write",
        )
    assert not any(t.account_id == alice.id for t in fake.tokens.values())


async def test_instance_limits_come_from_the_v2_instance_api(
    fake: FakeMastodon, http: httpx.AsyncClient
) -> None:
    fake.max_characters, fake.max_media = 1000, 6

    limits = await instance_limits(http, fake.origin + "/")

    assert (limits.max_characters, limits.max_media) == (1000, 6)


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Mastodon.Social", "https://mastodon.social"),
        ("https://a.example:443/", "https://a.example"),
    ],
)
def test_an_instance_address_is_reduced_to_its_origin(given: str, normal: str) -> None:
    assert normalize_instance_url(given) == normal


@pytest.mark.parametrize(
    "given",
    [
        "https://a.example/@alice",
        "ftp://a.example",
        "https://u:p@a.example",
        "https://a.example?x=1",
    ],
)
def test_an_instance_address_with_more_than_a_host_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="instance address"):
        normalize_instance_url(given)
