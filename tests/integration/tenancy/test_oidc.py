"""Tokens from an external OIDC issuer, verified against its JWKS served on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from litestar import Litestar
from litestar.testing import AsyncTestClient

from socialflow.app import create_app
from socialflow.settings import Settings
from tests.integration.tenancy_fixtures import bearer, unique

ISSUER = "https://idp.example.com"
AUDIENCE = "socialflow-api"


class IdentityProvider:
    """Signing keys and a JWKS endpoint; `rotate()` publishes a new key in place of the old."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.rotate()

    def rotate(self) -> str:
        kid = unique("kid")
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published = [kid]
        return kid

    def jwks(self) -> bytes:
        keys = []
        for kid in self.published:
            jwk = json.loads(RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": keys}).encode()

    def token(self, *, kid: str | None = None, **claims: Any) -> str:
        kid = kid or self.published[0]
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "sub-1", "iat": now, "exp": now + 300,
                "email": "person@example.com", "email_verified": True, **claims}  # fmt: skip
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def idp() -> Iterator[tuple[IdentityProvider, str]]:
    provider = IdentityProvider()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = provider.jwks()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield provider, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def oidc_client(
    settings: Settings, idp: tuple[IdentityProvider, str]
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    configured = settings.model_copy(
        update={
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": idp[1],
            # Refetch on an unknown key id at once (production waits up to 30 s).
            "oidc_jwks_refresh_cooldown_s": 0.0,
        }
    )
    async with AsyncTestClient(create_app(configured)) as client:
        yield client


async def test_a_provider_token_signs_in_and_links_the_user_by_issuer_and_subject(
    oidc_client: AsyncTestClient[Litestar],
    idp: tuple[IdentityProvider, str],
    pg: psycopg.Connection[Any],
) -> None:
    provider = idp[0]
    subject, email = unique("sub"), f"{unique('oidc')}@example.com"
    token = provider.token(sub=subject, email=email)
    first = await oidc_client.get("/api/v1/me", headers=bearer(token))
    assert first.status_code == 200, first.text
    assert first.json()["email"] == email
    # The link holds even when the provider later reports another email.
    again = await oidc_client.get(
        "/api/v1/me", headers=bearer(provider.token(sub=subject, email="changed@example.com"))
    )
    assert again.json()["id"] == first.json()["id"]
    assert pg.execute("SELECT count(*) FROM shared.user_identities WHERE subject = %s",
                      (subject,)).fetchone() == (1,)  # fmt: skip


async def test_the_issuers_rotated_key_is_fetched_and_accepted(
    oidc_client: AsyncTestClient[Litestar], idp: tuple[IdentityProvider, str]
) -> None:
    provider = idp[0]
    subject, email = unique("sub"), f"{unique('rot')}@example.com"
    old = await oidc_client.get(
        "/api/v1/me", headers=bearer(provider.token(sub=subject, email=email))
    )
    assert old.status_code == 200
    provider.rotate()  # new key id: not in the client's cache yet
    new = await oidc_client.get(
        "/api/v1/me", headers=bearer(provider.token(sub=subject, email=email))
    )
    assert new.status_code == 200


@pytest.mark.parametrize(
    "claims",
    [{"aud": "someone-else"}, {"exp": int(time.time()) - 60}, {"email_verified": False}],
)
async def test_wrong_audience_expired_or_unlinkable_tokens_are_401(
    oidc_client: AsyncTestClient[Litestar], idp: tuple[IdentityProvider, str],
    claims: dict[str, Any],
) -> None:  # fmt: skip
    token = idp[0].token(sub=unique("sub"), email=f"{unique('x')}@example.com", **claims)
    response = await oidc_client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 401


async def test_a_token_signed_by_a_key_the_issuer_never_published_is_401(
    oidc_client: AsyncTestClient[Litestar], idp: tuple[IdentityProvider, str]
) -> None:
    provider = idp[0]
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    forged = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "exp": now + 60,
         "email": "x@example.com", "email_verified": True},
        stranger, algorithm="RS256", headers={"kid": provider.published[0]},
    )  # fmt: skip
    response = await oidc_client.get("/api/v1/me", headers=bearer(forged))
    assert response.status_code == 401
