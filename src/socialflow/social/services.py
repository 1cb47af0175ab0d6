"""Connected accounts: connect (OAuth with PKCE, app password, webhook URL), list, disconnect,
and the per-account token refresh. Never commits."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.directory import tenant_by_id
from socialflow.access.permissions import Permission
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess, standing_in, tenant_not_found
from socialflow.audit.record import record_change
from socialflow.lib.outbound import check_outbound_url, url_origin
from socialflow.lib.problems import Problem
from socialflow.lib.webhook_signing import new_secret
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from socialflow.resources import Resources
from socialflow.settings import Settings
from socialflow.social import credentials as sealing
from socialflow.social.bodies import (
    AuthorizationOut,
    BlueskyConnect,
    MastodonConnect,
    SocialAccountOut,
    WebhookConnect,
)
from socialflow.social.events import (
    SocialAccountConnected,
    SocialAccountDisconnected,
    SocialAccountNeedsReconnect,
    SocialAuthorizationStarted,
)
from socialflow.social.models import OAuthState, SocialAccount, SocialApp, shown_handle
from socialflow.social.platforms import bluesky, mastodon
from socialflow.social.platforms.base import ConnectedIdentity, ConnectRefused, Credentials
from socialflow.vault.service import SealedSecret, Vault

log = structlog.get_logger(__name__)

# Ends the request's transaction (read-only so far) before a platform is called.
Release = Callable[[], Awaitable[None]]

MASTODON_SCOPES = ("read:accounts", "read:statuses", "write:media", "write:statuses")
APP_NAME = "SocialFlow"


def account_out(account: SocialAccount, *, signing_secret: str | None = None) -> SocialAccountOut:
    # A webhook destination's URL may hold a token in its path or query: only its origin is
    # shown.
    return SocialAccountOut(
        id=str(account.id),
        platform=account.platform,
        server_url=url_origin(account.server_url),
        handle=shown_handle(account.handle, account.server_url),
        display_name=account.display_name,
        status=account.status,
        status_reason=account.status_reason,
        scopes=list(account.scopes),
        expires_at=account.expires_at,
        connected_by=account.connected_by,
        created_at=account.created_at,
        refreshed_at=account.refreshed_at,
        signing_secret=signing_secret,
    )


def _not_found(account_id: uuid.UUID) -> Problem:
    return Problem(404, "not-found", f"No social account {account_id}.")


def _refused(error: ConnectRefused) -> Problem:
    return Problem(422, "connect-refused", error.detail)


async def list_accounts(session: AsyncSession) -> list[SocialAccountOut]:
    found = await session.scalars(
        select(SocialAccount)
        .where(SocialAccount.status != "disconnected")
        .order_by(SocialAccount.created_at, SocialAccount.id)
    )
    return [account_out(a) for a in found]


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> SocialAccountOut:
    account = await session.get(SocialAccount, account_id)
    if account is None or account.status == "disconnected":
        raise _not_found(account_id)
    return account_out(account)


async def _store(
    session: AsyncSession,
    vault: Vault,
    access: TenantAccess,
    *,
    platform: str,
    server_url: str,
    identity: ConnectedIdentity,
    display_name: str | None = None,
) -> SocialAccount:
    """The account, new or (connected again) renewed: new credentials, active again."""
    existing = (
        await session.scalars(
            select(SocialAccount)
            .where(
                SocialAccount.platform == platform,
                SocialAccount.server_url == server_url,
                SocialAccount.account_ref == identity.account_ref,
                SocialAccount.status != "disconnected",
            )
            .with_for_update()
        )
    ).one_or_none()
    if existing is None:
        await quota.reserve(session, access.tenant, Resource.SOCIAL_ACCOUNTS)
        account = SocialAccount(
            id=uuid.uuid4(),
            platform=platform,
            server_url=server_url,
            account_ref=identity.account_ref,
            handle=identity.handle,
            display_name=display_name,
            connected_by=access.principal.actor,
            credentials=b"",
        )
        session.add(account)
    else:
        account = existing
        account.credentials_version += 1
        account.status_reason = None
        account.updated_at = datetime.now(UTC)
    account.status = "active"
    account.handle = identity.handle
    account.scopes = list(identity.scopes)
    account.expires_at = identity.credentials.expires_at
    account.credentials = await sealing.seal(
        session, vault, access.tenant.id, account.id, identity.credentials
    )
    await session.flush()
    connected = SocialAccountConnected(
        account_id=account.id,
        platform=platform,
        handle=account.handle,
        reconnected=existing is not None,
    )
    await record_change(session, access.principal, connected, tenant=access.tenant.slug)
    await session.refresh(account)
    return account


@asynccontextmanager
async def _keeping(
    resources: Resources, access: TenantAccess
) -> AsyncIterator[tuple[AsyncSession, TenantAccess]]:
    """The unit of work that keeps what a connect brought back from the platform, with the
    caller's standing read again: a tenant suspended, deleted or purged, or a member removed
    or demoted while the platform answered, is refused as a new request would be."""
    async with resources.unit_of_work() as session:
        tenant = await tenant_by_id(session, access.tenant.id)
        if tenant is None or tenant.status == "purged":
            raise tenant_not_found(access.tenant.slug)
        now = await standing_in(session, tenant, access.principal, enter_schema=True)
        now.require(Permission.PUBLISH)
        yield session, now


# -- Mastodon: OAuth authorization code with PKCE --------------------------------------------


def redirect_uri(settings: Settings) -> str:
    return settings.social_oauth_redirect_uri or (
        settings.public_base_url.rstrip("/") + "/api/v1/oauth/callback"
    )


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def _sealed_app(
    session: AsyncSession,
    vault: Vault,
    tenant_id: uuid.UUID,
    *,
    instance: str,
    redirect: str,
    client_id: str,
    client_secret: str,
) -> str:
    """Keep the app just registered on `instance`; the client id to use: the one kept, which
    is another's when a concurrent registration was kept first."""
    sealed = await vault.encrypt(
        session, tenant_id, sealing.APP_PURPOSE, f"mastodon:{instance}", client_secret
    )
    await session.execute(
        insert(SocialApp)
        .values(
            platform="mastodon",
            server_url=instance,
            redirect_uri=redirect,
            client_id=client_id,
            client_secret=sealed.to_bytes(),
        )
        .on_conflict_do_nothing()
    )
    kept = await session.get(SocialApp, ("mastodon", instance, redirect), populate_existing=True)
    return kept.client_id if kept is not None else client_id


async def start_mastodon(
    access: TenantAccess,
    *,
    resources: Resources,
    http: httpx.AsyncClient,
    data: MastodonConnect,
    release: Release,
) -> AuthorizationOut:
    """Register the tenant's app on the instance (once) and hand out the authorization URL;
    the state is single-use, bound to the tenant and the caller, and expires.

    The instance is called with no transaction open: `release` ends the request's (read-only
    so far) one first, and what is kept is written in a unit of work of its own after."""
    await release()
    settings = resources.settings
    instance = await _checked_url(settings, data.instance_url, "instance_url", origin_only=True)
    redirect = redirect_uri(settings)
    async with _keeping(resources, access) as (fresh, standing):
        app = await fresh.get(SocialApp, ("mastodon", instance, redirect))
        if app is not None:
            return await _authorization(fresh, resources, standing, instance, app.client_id, False)
    try:
        client_id, client_secret = await mastodon.register_app(
            http, instance, redirect_uri=redirect, scopes=MASTODON_SCOPES, app_name=APP_NAME
        )
    except ConnectRefused as refused:
        raise _refused(refused) from None
    async with _keeping(resources, access) as (fresh, standing):
        client_id = await _sealed_app(
            fresh,
            resources.vault,
            standing.tenant.id,
            instance=instance,
            redirect=redirect,
            client_id=client_id,
            client_secret=client_secret,
        )
        return await _authorization(fresh, resources, standing, instance, client_id, True)


async def _authorization(  # noqa: PLR0917 - one flow's parts
    session: AsyncSession,
    resources: Resources,
    access: TenantAccess,
    instance: str,
    client_id: str,
    registered: bool,
) -> AuthorizationOut:
    """A new flow's state, kept sealed with its PKCE verifier, and the URL to authorize at."""
    settings = resources.settings
    redirect = redirect_uri(settings)
    await session.execute(_FORGET_EXPIRED_STATES)
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    digest = _digest(state)
    sealed = await resources.vault.encrypt(
        session, access.tenant.id, sealing.PKCE_PURPOSE, digest, verifier
    )
    expires_at = datetime.now(UTC) + timedelta(seconds=settings.social_oauth_state_ttl_s)
    session.add(
        OAuthState(
            state_sha256=digest,
            tenant_id=access.tenant.id,
            user_id=access.principal.user_id,
            platform="mastodon",
            server_url=instance,
            redirect_uri=redirect,
            code_verifier=sealed.to_bytes(),
            expires_at=expires_at,
        )
    )
    await session.flush()
    started = SocialAuthorizationStarted(
        platform="mastodon", server_url=instance, app_registered=registered
    )
    await record_change(session, access.principal, started, tenant=access.tenant.slug)
    url = mastodon.authorization_url(
        instance,
        client_id=client_id,
        redirect_uri=redirect,
        scopes=MASTODON_SCOPES,
        state=state,
        code_challenge=challenge.decode(),
    )
    return AuthorizationOut(authorization_url=url, expires_at=expires_at)


# Flows never completed: forgotten a day after they expired (a bounded, indexed delete).
_FORGET_EXPIRED_STATES = text(
    "DELETE FROM shared.oauth_states WHERE state_sha256 IN (SELECT state_sha256 "
    "FROM shared.oauth_states WHERE expires_at < now() - interval '1 day' LIMIT 100)"
)
_STATE = (
    "FROM shared.oauth_states WHERE state_sha256 = :digest AND user_id = :user "
    "AND expires_at > now()"
)
_FIND_STATE = text("SELECT tenant_id, platform, server_url, redirect_uri, code_verifier " + _STATE)
_TAKE_STATE = text("DELETE " + _STATE + " RETURNING 1")
_INVALID_STATE = (
    "This authorization is unknown, expired, already used, or was started by someone "
    "else: connect the account again."
)


async def complete_oauth(
    session: AsyncSession,
    principal: Principal,
    *,
    resources: Resources,
    http: httpx.AsyncClient,
    state: str,
    code: str,
    release: Release,
) -> SocialAccountOut:
    """The callback: the state is taken (once) only by the person who started the flow and
    only before it expires; the caller must still be allowed to connect accounts there.

    The code is exchanged with no transaction open (`release` ends the request's read-only
    one); the state is then taken in the unit of work that keeps the account, so of two
    callbacks racing with one state, one connects and the other is refused."""
    vault = resources.vault
    digest = _digest(state)
    params = {"digest": digest, "user": principal.user_id}
    found = (await session.execute(_FIND_STATE, params)).one_or_none()
    if found is None:
        raise Problem(400, "invalid-oauth-state", _INVALID_STATE)
    tenant = await tenant_by_id(session, found.tenant_id)
    if tenant is None or tenant.status != "active":
        raise Problem(400, "invalid-oauth-state", "The tenant of this authorization is gone.")
    access = await standing_in(session, tenant, principal, enter_schema=True)
    access.require(Permission.PUBLISH)
    verifier = await vault.decrypt(
        session, tenant.id, sealing.PKCE_PURPOSE, digest, found.code_verifier
    )
    app = await session.get(SocialApp, ("mastodon", found.server_url, found.redirect_uri))
    if app is None:  # the flow started with it: it cannot be gone
        raise Problem(400, "invalid-oauth-state", _INVALID_STATE)
    client_secret = await vault.decrypt(
        session, tenant.id, sealing.APP_PURPOSE, f"mastodon:{found.server_url}", app.client_secret
    )
    client_id = app.client_id
    await release()
    try:
        identity = await mastodon.exchange_code(
            http,
            found.server_url,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=found.redirect_uri,
            code=code,
            code_verifier=verifier,
            scopes=MASTODON_SCOPES,
        )
    except ConnectRefused as refused:
        raise _refused(refused) from None
    async with _keeping(resources, access) as (fresh, standing):
        if (await fresh.execute(_TAKE_STATE, params)).one_or_none() is None:
            raise Problem(400, "invalid-oauth-state", _INVALID_STATE)  # taken meanwhile
        account = await _store(
            fresh,
            vault,
            standing,
            platform="mastodon",
            server_url=found.server_url,
            identity=identity,
        )
        return account_out(account)


# -- Bluesky: app password ------------------------------------------------------------------


async def connect_bluesky(
    access: TenantAccess,
    *,
    resources: Resources,
    http: httpx.AsyncClient,
    data: BlueskyConnect,
    release: Release,
) -> SocialAccountOut:
    """Sign in with an app password; only the session's tokens are kept, never the password.

    The PDS is called with no transaction open (`release` ends the request's read-only one);
    the account is kept in a unit of work of its own after."""
    await release()
    service = await _checked_url(
        resources.settings, data.service_url, "service_url", origin_only=True
    )
    try:
        identity = await bluesky.sign_in(
            http, service, identifier=data.identifier, app_password=data.app_password
        )
    except ConnectRefused as refused:
        raise _refused(refused) from None
    async with _keeping(resources, access) as (fresh, standing):
        account = await _store(
            fresh,
            resources.vault,
            standing,
            platform="bluesky",
            server_url=service,
            identity=identity,
        )
        return account_out(account)


# -- Signed webhook destinations ------------------------------------------------------------


async def connect_webhook(
    session: AsyncSession,
    access: TenantAccess,
    *,
    settings: Settings,
    vault: Vault,
    data: WebhookConnect,
) -> SocialAccountOut:
    """A URL that receives each post as signed JSON; its signing secret is shown once."""
    url = await _checked_url(settings, data.url, "url", origin_only=False)
    secret = new_secret()
    identity = ConnectedIdentity(
        account_ref=hashlib.sha256(url.encode()).hexdigest()[:32],
        handle=data.name or url_origin(url),  # events and lists show it: never the token
        credentials=Credentials(signing_secret=secret),
    )
    account = await _store(
        session,
        vault,
        access,
        platform="webhook",
        server_url=url,
        identity=identity,
        display_name=data.name,
    )
    return account_out(account, signing_secret=secret)


async def _checked_url(settings: Settings, url: str, field: str, *, origin_only: bool) -> str:
    """The URL as it will be called, refused (422) when the outbound policy forbids it (also
    after DNS); `origin_only`: scheme, host and port of a server, nothing else."""
    parsed = httpx.URL(await check_outbound_url(url, settings, field=field))
    if not origin_only:
        return str(parsed)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


# -- disconnecting and reconnect needs -------------------------------------------------------


async def disconnect(session: AsyncSession, access: TenantAccess, account_id: uuid.UUID) -> None:
    """Forget the account's credentials; posts keep naming it (their history stays)."""
    account = (
        await session.scalars(
            select(SocialAccount).where(SocialAccount.id == account_id).with_for_update()
        )
    ).one_or_none()
    if account is None or account.status == "disconnected":
        raise _not_found(account_id)
    account.status = "disconnected"
    account.credentials = b""
    account.disconnected_at = account.updated_at = datetime.now(UTC)
    await session.flush()
    handle = shown_handle(account.handle, account.server_url)
    gone = SocialAccountDisconnected(
        account_id=account.id, platform=account.platform, handle=handle
    )
    await record_change(session, access.principal, gone, tenant=access.tenant.slug)


async def mark_needs_reconnect(
    session: AsyncSession, tenant_slug: str, account_id: uuid.UUID, reason: str
) -> None:
    """The account's grant is gone (found by a refresh or a publish): once, with its event."""
    changed = await session.execute(
        update(SocialAccount)
        .where(SocialAccount.id == account_id, SocialAccount.status == "active")
        .values(status="needs_reconnect", status_reason=reason[:300], updated_at=datetime.now(UTC))
        .returning(SocialAccount.platform, SocialAccount.handle, SocialAccount.server_url)
    )
    row = changed.one_or_none()
    if row is None:
        return
    event = SocialAccountNeedsReconnect(
        account_id=account_id,
        platform=row.platform,
        handle=shown_handle(row.handle, row.server_url),
        reason=reason[:300],
    )
    await record_change(session, "system:publishing", event, tenant=tenant_slug)


# -- the tenant's data key rotated -----------------------------------------------------------


async def reseal_social_secrets(
    session: AsyncSession, vault: Vault, tenant_id: uuid.UUID, old_version: int
) -> int:
    """Re-encrypt the tenant's account credentials, app secrets and pending connect flows
    sealed under `old_version` with its active data key (a `rotate_tenant_key` callback; the
    session is in the tenant's schema). Returns how many."""
    count = 0
    accounts = await session.scalars(
        select(SocialAccount).where(SocialAccount.status != "disconnected").with_for_update()
    )
    for account in accounts:
        if account.credentials and _version(account.credentials) == old_version:
            resealed = await vault.reseal(
                session, tenant_id, sealing.TOKEN_PURPOSE, account.id, account.credentials
            )
            account.credentials = resealed.to_bytes()
            count += 1
    for app in await session.scalars(select(SocialApp).with_for_update()):
        if _version(app.client_secret) == old_version:
            record = f"{app.platform}:{app.server_url}"
            resealed = await vault.reseal(
                session, tenant_id, sealing.APP_PURPOSE, record, app.client_secret
            )
            app.client_secret = resealed.to_bytes()
            count += 1
    flows = await session.scalars(
        select(OAuthState).where(OAuthState.tenant_id == tenant_id).with_for_update()
    )
    for flow in flows:
        if _version(flow.code_verifier) == old_version:
            resealed = await vault.reseal(
                session, tenant_id, sealing.PKCE_PURPOSE, flow.state_sha256, flow.code_verifier
            )
            flow.code_verifier = resealed.to_bytes()
            count += 1
    await session.flush()
    return count


def _version(sealed: bytes) -> int:
    return SealedSecret.from_bytes(bytes(sealed)).key_version
