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
from tests.integration.tenancy_fixtures import PASSWORD, Platform, World, bearer, unique

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
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "sub-1",
            "iat": now,
            "exp": now + 300,
            "email": "person@example.com",
            "email_verified": True,
            **claims,
        }
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


def _with_issuer(settings: Settings, jwks_url: str, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": jwks_url,
            # Refetch on an unknown key id at once (production waits up to 30 s).
            "oidc_jwks_refresh_cooldown_s": 0.0,
            **extra,
        }
    )


@pytest.fixture
async def oidc_client(
    settings: Settings, idp: tuple[IdentityProvider, str]
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(create_app(_with_issuer(settings, idp[1]))) as client:
        yield client


@pytest.fixture
async def linking_client(
    settings: Settings, idp: tuple[IdentityProvider, str]
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An app that links verified @example.com emails to existing ordinary accounts."""
    configured = _with_issuer(settings, idp[1], oidc_link_email_domains=("Example.com",))
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
    assert pg.execute(
        "SELECT count(*) FROM shared.user_identities WHERE subject = %s", (subject,)
    ).fetchone() == (1,)


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
    oidc_client: AsyncTestClient[Litestar],
    idp: tuple[IdentityProvider, str],
    claims: dict[str, Any],
) -> None:
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
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "x",
            "iat": now,
            "exp": now + 60,
            "email": "x@example.com",
            "email_verified": True,
        },
        stranger,
        algorithm="RS256",
        headers={"kid": provider.published[0]},
    )
    response = await oidc_client.get("/api/v1/me", headers=bearer(forged))
    assert response.status_code == 401


def _identities(pg: psycopg.Connection[Any], subject: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in pg.execute(
            "SELECT user_id FROM shared.user_identities WHERE subject = %s", (subject,)
        )
    ]


async def _sign_in(client: AsyncTestClient[Litestar], email: str) -> dict[str, str]:
    response = await client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


async def test_an_existing_account_is_not_linked_by_email_unless_its_domain_is_allowed(
    oidc_client: AsyncTestClient[Litestar],
    idp: tuple[IdentityProvider, str],
    platform: Platform,
    pg: psycopg.Connection[Any],
) -> None:
    local = await platform.user()
    users_before = pg.execute("SELECT count(*) FROM shared.users").fetchone()
    subject = unique("sub")
    response = await oidc_client.get(
        "/api/v1/me", headers=bearer(idp[0].token(sub=subject, email=local.email))
    )
    assert response.status_code == 401
    assert response.json()["type"] == "/problems/identity-link-required"
    assert "/api/v1/me/identities" in response.json()["detail"]
    assert _identities(pg, subject) == []
    assert pg.execute("SELECT count(*) FROM shared.users").fetchone() == users_before


async def test_an_ordinary_account_in_an_allowed_domain_is_linked_automatically(
    linking_client: AsyncTestClient[Litestar],
    idp: tuple[IdentityProvider, str],
    platform: Platform,
) -> None:
    local = await platform.user()
    own = (await platform.client.get("/api/v1/me", headers=local.headers)).json()
    token = idp[0].token(sub=unique("sub"), email=local.email.upper())
    response = await linking_client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == own["id"]


@pytest.mark.parametrize("who", ["operator", "agency admin", "inactive user"])
async def test_operators_agency_admins_and_inactive_accounts_are_never_linked_automatically(
    linking_client: AsyncTestClient[Litestar],
    idp: tuple[IdentityProvider, str],
    platform: Platform,
    world: World,
    pg: psycopg.Connection[Any],
    who: str,
) -> None:
    if who == "operator":
        email = world.operator.email
    elif who == "agency admin":
        email = world.admin_x.email
    else:
        email = (await platform.user()).email
        pg.execute("UPDATE shared.users SET is_active = false WHERE email = %s", (email,))
    subject = unique("sub")
    response = await linking_client.get(
        "/api/v1/me", headers=bearer(idp[0].token(sub=subject, email=email))
    )
    assert response.status_code == 401
    assert response.json()["type"] == "/problems/identity-link-required"
    assert _identities(pg, subject) == []


async def test_a_signed_in_operator_links_an_identity_explicitly_and_then_signs_in_with_it(
    oidc_client: AsyncTestClient[Litestar],
    idp: tuple[IdentityProvider, str],
    world: World,
    pg: psycopg.Connection[Any],
) -> None:
    operator = await _sign_in(oidc_client, world.operator.email)
    subject = unique("sub")
    # The provider may know the person under another email: the link does not depend on it.
    id_token = idp[0].token(sub=subject, email=f"{unique('elsewhere')}@example.org")
    linked = await oidc_client.post(
        "/api/v1/me/identities", json={"id_token": id_token}, headers=operator
    )
    assert linked.status_code == 201, linked.text
    assert linked.json() == {"issuer": ISSUER, "subject": subject}
    again = await oidc_client.post(
        "/api/v1/me/identities", json={"id_token": id_token}, headers=operator
    )
    assert again.status_code == 200
    me = await oidc_client.get("/api/v1/me", headers=bearer(id_token))
    assert me.status_code == 200, me.text
    assert me.json()["email"] == world.operator.email
    assert me.json()["is_operator"] is True
    assert pg.execute(
        "SELECT count(*) FROM shared.platform_audit_log WHERE action = 'user.identity_linked' "
        "AND after->>'subject' = %s",
        (subject,),
    ).fetchone() == (1,)


async def test_an_identity_linked_to_another_account_cannot_be_linked_again(
    oidc_client: AsyncTestClient[Litestar],
    idp: tuple[IdentityProvider, str],
    world: World,
    pg: psycopg.Connection[Any],
) -> None:
    subject = unique("sub")
    id_token = idp[0].token(sub=subject, email=f"{unique('x')}@example.org")
    first = await oidc_client.post(
        "/api/v1/me/identities",
        json={"id_token": id_token},
        headers=await _sign_in(oidc_client, world.owner_a.email),
    )
    assert first.status_code == 201
    second = await oidc_client.post(
        "/api/v1/me/identities",
        json={"id_token": id_token},
        headers=await _sign_in(oidc_client, world.owner_b.email),
    )
    assert second.status_code == 409
    assert second.json()["type"] == "/problems/identity-taken"
    owner_a = pg.execute(
        "SELECT id FROM shared.users WHERE email = %s", (world.owner_a.email,)
    ).fetchone()
    assert _identities(pg, subject) == [owner_a]


async def test_only_a_valid_token_of_the_issuer_can_be_linked(
    oidc_client: AsyncTestClient[Litestar],
    idp: tuple[IdentityProvider, str],
    world: World,
    pg: psycopg.Connection[Any],
) -> None:
    headers = await _sign_in(oidc_client, world.owner_a.email)
    subject = unique("sub")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 60}
    candidates = {
        "forged": jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": idp[0].published[0]}
        ),
        "other issuer": idp[0].token(sub=subject, iss="https://elsewhere.example"),
        "expired": idp[0].token(sub=subject, exp=now - 60),
        "wrong audience": idp[0].token(sub=subject, aud="another-app"),
    }
    for name, token in candidates.items():
        response = await oidc_client.post(
            "/api/v1/me/identities", json={"id_token": token}, headers=headers
        )
        assert response.status_code == 422, name
        assert response.json()["type"] == "/problems/invalid-identity-token", name
    assert _identities(pg, subject) == []
