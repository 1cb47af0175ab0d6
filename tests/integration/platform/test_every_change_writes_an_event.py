"""Every transaction that changes state writes an outbox row: one successful request through
every mutating route the app registers, with a watch on every transaction of the app's engine.

A listener on the app's engine notes, per transaction, the statements that wrote (INSERT,
UPDATE, DELETE, DDL) and whether one of them wrote `shared.outbox`; a commit that changed state
without an outbox row is a violation. A few writes are not state changes of the product and are
allowed on their own (NOT_STATE_CHANGES, each with its reason).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from litestar.types import Receive, Scope, Send
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from socialflow.app import create_app
from socialflow.db.session import unit_of_work
from socialflow.members.invitations import mint_token
from socialflow.plans.limits import MAY_BE_UNLIMITED
from socialflow.settings import Settings
from tests.integration.ai.fake_openai import GOOD_KEY, fake_openai_server
from tests.integration.media.support import photo
from tests.integration.social.fake_bluesky import fake_pds
from tests.integration.social.fake_mastodon import fake_mastodon
from tests.integration.tenancy import test_oidc
from tests.integration.tenancy.test_oidc import AUDIENCE, ISSUER, IdentityProvider
from tests.integration.tenancy_fixtures import (
    PASSWORD,
    Account,
    Platform,
    bearer,
    unique,
)

# The OIDC tests' identity provider (signing keys, a JWKS server on loopback), as a fixture here.
idp = test_oidc.idp

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The request a transaction serves, for the violation's message ("-" outside requests).
CURRENT_REQUEST: ContextVar[str] = ContextVar("current_request", default="-")
WRITE = re.compile(
    r"^\s*(?:(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(?P<table>[\w.\"]+)|CREATE|DROP|ALTER)",
    re.IGNORECASE,
)
OUTBOX = "shared.outbox"
OUTBOX_INSERT = re.compile(r"\bINSERT\s+INTO\s+shared\.outbox\b", re.IGNORECASE)
NOT_STATE_CHANGES = (
    # Refresh tokens issued at sign-in and spent at refresh: a session's credentials, not a
    # change anything reacts to (sign-ins are throttled and logged instead).
    re.compile(r"^INSERT INTO shared\.refresh_tokens "),
    re.compile(r"^UPDATE shared\.refresh_tokens SET used_at\s*="),
    # An API key's last use, stamped (at most once a minute) when the key authenticates.
    re.compile(r"^UPDATE shared\.api_keys SET last_used_at = now\(\) WHERE id = "),
)


@dataclass
class TransactionWatch:
    """What each transaction of an engine wrote; the commits that changed state without an
    outbox row."""

    violations: list[tuple[str, list[str]]] = field(default_factory=list)
    commits_with_events: int = 0

    def attach(self, connection_events: Any) -> None:
        event.listen(connection_events, "begin", self._begin)
        event.listen(connection_events, "before_cursor_execute", self._statement)
        event.listen(connection_events, "commit", self._commit)
        event.listen(connection_events, "rollback", self._begin)

    def detach(self, connection_events: Any) -> None:
        event.remove(connection_events, "begin", self._begin)
        event.remove(connection_events, "before_cursor_execute", self._statement)
        event.remove(connection_events, "commit", self._commit)
        event.remove(connection_events, "rollback", self._begin)

    def _begin(self, conn: Connection) -> None:
        conn.info["watch.writes"], conn.info["watch.outbox"] = [], False

    def _statement(self, conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        if OUTBOX_INSERT.search(statement):  # also inside a CTE (the insert that notifies)
            conn.info["watch.outbox"] = True
            return
        wrote = WRITE.match(statement)
        if wrote is None:
            return
        if wrote["table"] == OUTBOX:
            conn.info["watch.outbox"] = True
        elif not any(allowed.match(statement.lstrip()) for allowed in NOT_STATE_CHANGES):
            conn.info.setdefault("watch.writes", []).append(" ".join(statement.split())[:120])

    def _commit(self, conn: Connection) -> None:
        writes, outbox = conn.info.get("watch.writes", []), conn.info.get("watch.outbox", False)
        if writes and not outbox:
            self.violations.append((CURRENT_REQUEST.get(), writes))
        self.commits_with_events += bool(outbox)
        self._begin(conn)


@dataclass
class Answered:
    method: str
    route: str  # the route's path template, as the app registers it
    status: int


@pytest.fixture
def app(settings: Settings, idp: tuple[IdentityProvider, str]) -> Litestar:
    """The app with an OIDC issuer (identity links) and tenants allowed to reach the fake AI
    provider on loopback (the key test), answering every request through a recorder."""
    configured = settings.model_copy(
        update={
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": idp[1],
            "outbound_allowed_networks": ("127.0.0.1/32",),
            "outbound_allow_http": True,
        }
    )
    return create_app(configured)


@pytest.fixture
def answered(app: Litestar) -> list[Answered]:
    """Each request's route and status, read from the scope once the router has matched it."""
    seen: list[Answered] = []
    inner = app.asgi_handler

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        status = 0

        async def capture(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = CURRENT_REQUEST.set(f"{scope.get('method')} {scope.get('path')}")
        try:
            await inner(scope, receive, capture)
        finally:
            CURRENT_REQUEST.reset(token)
        if scope["type"] == "http":
            template = scope.get("path_template") or ""
            seen.append(Answered(scope["method"], template, status))

    app.asgi_handler = recording
    return seen


@pytest.fixture
async def watch(
    client: AsyncTestClient[Litestar], app: Litestar
) -> AsyncIterator[TransactionWatch]:
    """Every transaction of the app's engine, from the app's start (its lifespan made it)."""
    watcher = TransactionWatch()
    connection_events = app.state.engine.sync_engine
    watcher.attach(connection_events)
    yield watcher
    watcher.detach(connection_events)


def _mutating_routes(app: Litestar) -> set[tuple[str, str]]:
    return {
        (method, route.path_format)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for method in route.methods & MUTATING
    }


class Calls:
    """Requests that must succeed, as the named account."""

    def __init__(self, platform: Platform) -> None:
        self.client = platform.client

    async def __call__(
        self, method: str, url: str, by: Account | dict[str, str], body: Any = None
    ) -> Any:
        headers = by.headers if isinstance(by, Account) else by
        response = await self.client.request(method, url, json=body, headers=headers)
        assert response.status_code < 300, (method, url, response.text)
        return response.json() if response.content else None


async def _agency_and_admin(call: Calls, platform: Platform) -> tuple[str, Account]:
    operator = await platform.operator()
    agency = unique("agency")
    await call("POST", "/api/v1/agencies", operator, {"slug": agency, "name": agency})
    credentials = {"email": f"{unique('admin')}@example.com", "password": PASSWORD}
    await call("POST", f"/api/v1/agencies/{agency}/admins", operator, credentials)
    signed_in = await call("POST", "/api/v1/auth/token", {}, credentials)
    refresh = {"refresh_token": signed_in["refresh_token"]}
    await call("POST", "/api/v1/auth/refresh", {}, refresh)
    return agency, Account(credentials["email"], signed_in["access_token"])


async def _tenant_with_invited_owner(
    call: Calls, platform: Platform, agency: str, admin: Account
) -> tuple[str, Account]:
    """A tenant whose new owner joins through the invitation (its token minted as the email
    job mints it)."""
    slug, owner_email = unique("t"), f"{unique('owner')}@example.com"
    body = {"slug": slug, "name": slug, "agency": agency, "plan": "pro", "owner_email": owner_email}
    await call("POST", "/api/v1/tenants", admin, body)
    async with unit_of_work(platform.factory) as session:
        invitation = await session.execute(
            text(
                "SELECT i.id FROM shared.invitations i JOIN shared.users u ON u.id = i.user_id "
                "WHERE u.email = :email"
            ),
            {"email": owner_email},
        )
        minted = await mint_token(session, invitation.scalar_one())
    assert minted is not None
    acceptance = {"token": minted.token, "name": "Owner", "password": PASSWORD}
    await call("POST", "/api/v1/invitations/accept", {}, acceptance)
    return slug, await platform.login(owner_email)


async def _schema_of(session: Any, slug: str) -> str:
    found = await session.execute(
        text("SELECT schema_name FROM shared.tenants WHERE slug = :s"), {"s": slug}
    )
    return str(found.scalar_one())


async def _as_if_processed(platform: Platform, slug: str, media_id: str) -> None:
    async with unit_of_work(platform.factory) as session:
        schema = await _schema_of(session, slug)
        await session.execute(
            text(f"UPDATE \"{schema}\".media_items SET status = 'ready' WHERE id = :id"),
            {"id": media_id},
        )


async def _as_if_unconfirmed(platform: Platform, slug: str, post_id: str) -> str:
    """The post's one delivery as if its call had reached the platform and never answered."""
    async with unit_of_work(platform.factory) as session:
        schema = await _schema_of(session, slug)
        updated = await session.execute(
            text(
                f"UPDATE \"{schema}\".post_destinations SET state = 'unconfirmed' "
                "WHERE post_id = :id RETURNING id"
            ),
            {"id": post_id},
        )
        return str(updated.scalar_one())


async def _posts_and_accounts(call: Calls, platform: Platform, slug: str, owner: Account) -> None:
    """Connected accounts (each platform's connect flow) and a post through its states."""
    tenant = f"/api/v1/tenants/{slug}"
    accounts = f"{tenant}/social-accounts"
    hook = await call(
        "POST", f"{accounts}/connect/webhook", owner, {"url": "http://127.0.0.1:9/hook"}
    )
    with fake_mastodon() as instance:
        started = await call(
            "POST", f"{accounts}/connect/mastodon", owner, {"instance_url": instance.origin}
        )
        back = instance.approve(started["authorization_url"], instance.add_account("brand"))
        query = urlsplit(back).query
        await call("GET", f"/api/v1/oauth/callback?{query}", owner)
    with fake_pds() as pds:
        pds.add_account("brand.test", "app-pass-1234")
        bluesky = {
            "identifier": "brand.test",
            "app_password": "app-pass-1234",
            "service_url": pds.url,
        }
        await call("POST", f"{accounts}/connect/bluesky", owner, bluesky)

    editor = await platform.member(slug, "editor")
    posts = f"{tenant}/posts"
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    body = {"text": "Hello", "destinations": [{"account_id": hook["id"]}], "scheduled_at": later}
    post = await call("POST", posts, editor, body)
    await call("PATCH", f"{posts}/{post['id']}", editor, {"text": "Hello there"})
    await call("POST", f"{posts}/{post['id']}/comments", editor, {"body": "Ready?"})
    await call("POST", f"{posts}/{post['id']}/submit", editor)
    await call("POST", f"{posts}/{post['id']}/request-changes", owner, {"body": "Shorter"})
    await call("POST", f"{posts}/{post['id']}/submit", editor)
    await call("POST", f"{posts}/{post['id']}/approve", owner)
    await call("POST", f"{posts}/{post['id']}/schedule", editor)
    await call("POST", f"{posts}/{post['id']}/cancel", editor)
    now = await call(
        "POST", posts, editor, {"text": "Now", "destinations": [{"account_id": hook["id"]}]}
    )
    await call("POST", f"{posts}/{now['id']}/submit", editor)
    await call("POST", f"{posts}/{now['id']}/approve", owner)
    await call("POST", f"{posts}/{now['id']}/publish", editor)
    destination = await _as_if_unconfirmed(platform, slug, now["id"])
    resolve = f"{posts}/{now['id']}/destinations/{destination}/resolve"
    await call("POST", resolve, owner, {"outcome": "not_published"})
    await call("DELETE", f"{accounts}/{hook['id']}", owner)


async def _webhooks(call: Calls, slug: str, owner: Account) -> None:
    """A customer webhook endpoint through its changes (the receiver is not there: the test
    delivery's failure changes nothing)."""
    hooks = f"/api/v1/tenants/{slug}/webhooks"
    body = {"url": "http://127.0.0.1:9/events", "event_types": ["post.*"]}
    endpoint = await call("POST", hooks, owner, body)
    one = f"{hooks}/{endpoint['id']}"
    await call("PATCH", one, owner, {"event_types": ["post.*", "media.*"]})
    await call("POST", f"{one}/rotate-secret", owner, {"overlap_hours": 1})
    await call("POST", f"{one}/test", owner)
    await call("POST", f"{one}/replay", owner, {"since": "2026-01-01T00:00:00Z"})
    await call("DELETE", one, owner)


async def test_every_mutating_route_writes_an_outbox_row_with_its_change(
    watch: TransactionWatch,
    answered: list[Answered],
    app: Litestar,
    platform: Platform,
    idp: tuple[IdentityProvider, str],
) -> None:
    call = Calls(platform)
    agency, admin = await _agency_and_admin(call, platform)
    slug, owner = await _tenant_with_invited_owner(call, platform, agency, admin)
    tenant = f"/api/v1/tenants/{slug}"

    await call("PATCH", tenant, admin, {"name": "Renamed"})
    await call("POST", f"{tenant}/suspend", admin)
    await call("POST", f"{tenant}/resume", admin)
    await call("PUT", f"{tenant}/settings", owner, {"display_name": "Watched"})

    operator = await platform.operator()
    plan = unique("plan")
    limits = dict.fromkeys(MAY_BE_UNLIMITED) | {
        "api_requests_per_minute": 100,
        "event_retention_days": 7,
        "platform_ai_keys": False,
    }
    await call("POST", "/api/v1/plans", operator, {"name": plan, "display_name": plan, **limits})
    await call("PATCH", f"/api/v1/plans/{plan}", operator, {"seats": 10})
    await call("PATCH", f"{tenant}/entitlements", admin, {"overrides": {"seats": 40}})

    invitee = {"email": f"{unique('invitee')}@example.com", "role": "editor"}
    await call("POST", f"{tenant}/members", owner, invitee)
    viewer = await platform.member(slug, "viewer")
    viewer_id = (await call("GET", "/api/v1/me", viewer))["id"]
    await call("PATCH", f"{tenant}/members/{viewer_id}", owner, {"role": "editor"})
    await call("PUT", f"{tenant}/members/{viewer_id}/reviewer", owner)
    await call("DELETE", f"{tenant}/members/{viewer_id}/reviewer", owner)
    await call("DELETE", f"{tenant}/members/{viewer_id}", owner)
    await call("DELETE", f"{tenant}/members/me", await platform.member(slug, "viewer"))

    key = await call("POST", f"{tenant}/api-keys", owner, {"name": "k", "role": "viewer"})
    await call("GET", f"{tenant}/settings", bearer(key["key"]))  # stamps the key's last use
    await call("DELETE", f"{tenant}/api-keys/{key['id']}", owner)

    with fake_openai_server() as (base_url, _):
        ai_key = f"{tenant}/ai/keys/openai_compatible"
        await call("PUT", ai_key, owner, {"api_key": GOOD_KEY, "base_url": base_url})
        assert (await call("POST", f"{ai_key}/test", owner, {"model": "llama3"}))["ok"] is True
        await call("DELETE", ai_key, owner)
    await call("PUT", f"{tenant}/ai/settings", owner, {"embedding_dimension": 768})

    photo_bytes = photo(400, 300)
    media = f"{tenant}/media"
    upload_body = {"filename": "a.jpg", "content_type": "image/jpeg", "size": len(photo_bytes)}
    started = await call("POST", f"{media}/uploads", owner, upload_body)
    upload = started["upload"]
    sent = await platform.client.put(
        urlsplit(upload["url"]).path, content=photo_bytes, headers=upload["headers"]
    )
    assert sent.status_code == 204, sent.text  # the local store: files, no database
    await call("POST", f"{media}/{started['media_id']}/confirm", owner)
    await call("PATCH", f"{media}/{started['media_id']}", owner, {"title": "Watched"})
    await _as_if_processed(platform, slug, started["media_id"])  # the media worker's part
    await call("POST", f"{media}/{started['media_id']}/captions", owner, {"prompt": "Short."})
    await call("PATCH", f"{media}/{started['media_id']}/caption", owner, {"caption": "Mine"})
    await call("DELETE", f"{media}/{started['media_id']}", owner)

    await _posts_and_accounts(call, platform, slug, owner)
    await _webhooks(call, slug, owner)

    id_token = idp[0].token(sub=unique("sub"), email=f"{unique('elsewhere')}@example.org")
    await call("POST", "/api/v1/me/identities", owner, {"id_token": id_token})

    await call("DELETE", tenant, admin)
    await call("POST", f"{tenant}/restore", admin)

    succeeded = {(a.method, a.route) for a in answered if a.status < 300}
    assert _mutating_routes(app) - succeeded == set(), "mutating routes this test never ran"
    unrecorded = [request for request, _ in watch.violations]
    assert watch.violations == [], f"changed state without an outbox row: {unrecorded}"
    # The watch saw them: a commit with events for each route but sign-in, refresh, key test,
    # the webhook test and the local store's upload (a file, no transaction).
    assert watch.commits_with_events >= len(_mutating_routes(app)) - 5
