"""Connecting a Mastodon account: register SocialFlow as an app on the instance, send the person
to approve it (authorization code with PKCE), trade the code for a token and learn whose it is.

Every failure is a ConnectRefused whose detail is safe to show the person connecting."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from socialflow.social.platforms.base import (
    ConnectedIdentity,
    ConnectRefused,
    Credentials,
    FailureKind,
    Limits,
    PublishError,
)
from socialflow.social.platforms.mastodon_api import (
    as_dict,
    client_form,
    error_text,
    expiry,
    json_of,
    normalize_instance_url,
    oauth_error,
    request,
)
from socialflow.social.platforms.mastodon_rules import fetch_instance_config

_UNREACHABLE = {
    FailureKind.DESTINATION_REFUSED: "SocialFlow may not reach this instance's address.",
    FailureKind.RETRYABLE: "The instance could not be reached or is busy; try again shortly.",
}


def code_challenge_for(code_verifier: str) -> str:
    """PKCE S256: the challenge sent to /oauth/authorize for `code_verifier`."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def register_app(
    http: httpx.AsyncClient,
    instance_url: str,
    *,
    redirect_uri: str,
    scopes: str | Sequence[str],
    app_name: str,
    website: str | None = None,
) -> tuple[str, str]:
    """Register SocialFlow as an app on the instance: (client_id, client_secret)."""
    origin = _origin(instance_url)
    form = {"client_name": app_name, "redirect_uris": redirect_uri, "scopes": _scope_text(scopes)}
    if website:
        form["website"] = website
    response = await _request(http, "POST", f"{origin}/api/v1/apps", data=form)
    if response.status_code != 200:
        raise _refusal("to register SocialFlow", response)
    answer = as_dict(json_of(response))
    client_id, client_secret = answer.get("client_id"), answer.get("client_secret")
    if not isinstance(client_id, str) or not isinstance(client_secret, str):
        raise ConnectRefused("The instance's answer to registering SocialFlow is unreadable.")
    return client_id, client_secret


def authorization_url(
    instance_url: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: str | Sequence[str],
    state: str,
    code_challenge: str,
) -> str:
    """Where the person connecting approves SocialFlow on their instance."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": _scope_text(scopes),
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    return f"{_origin(instance_url)}/oauth/authorize?{urlencode(query)}"


async def exchange_code(
    http: httpx.AsyncClient,
    instance_url: str,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    scopes: str | Sequence[str],
) -> ConnectedIdentity:
    """Trade the approved code for a token, then ask the instance whose token it is."""
    origin = _origin(instance_url)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
        "scope": _scope_text(scopes),
        **client_form(client_id, client_secret),
    }
    response = await _request(http, "POST", f"{origin}/oauth/token", data=form)
    if response.status_code != 200:
        error = oauth_error(response)
        what = f"the authorization ({error})" if error else "the authorization"
        raise ConnectRefused(f"The instance refused {what}; please connect again.")
    answer = as_dict(json_of(response))
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise ConnectRefused("The instance's token answer is unreadable.")
    response = await _request(
        http, "GET", f"{origin}/api/v1/accounts/verify_credentials", token=token
    )
    me = as_dict(json_of(response))
    if response.status_code != 200 or me.get("id") is None or not isinstance(me.get("acct"), str):
        raise _refusal("to say which account was connected", response)
    acct = str(me["acct"])  # a local account's acct has no domain
    handle = f"@{acct}" if "@" in acct else f"@{acct}@{urlsplit(origin).hostname}"
    granted = answer.get("scope")
    refresh = answer.get("refresh_token")
    return ConnectedIdentity(
        account_ref=str(me["id"]),
        handle=handle,
        credentials=Credentials(
            access_token=token,
            refresh_token=refresh if isinstance(refresh, str) else None,
            expires_at=expiry(answer),
            client_id=client_id,
            client_secret=client_secret,
        ),
        scopes=tuple((granted if isinstance(granted, str) else _scope_text(scopes)).split()),
    )


async def instance_limits(http: httpx.AsyncClient, instance_url: str) -> Limits:
    """The instance's status length and media count, to show before anything is written."""
    origin = _origin(instance_url)
    try:
        config = await fetch_instance_config(http, origin)
    except PublishError as exc:
        raise ConnectRefused(
            _UNREACHABLE.get(exc.kind, f"The instance did not tell its limits ({exc.detail}).")
        ) from exc
    return Limits(max_characters=config.max_characters, max_media=config.max_media)


async def _request(
    http: httpx.AsyncClient, method: str, url: str, **options: Any
) -> httpx.Response:
    try:
        return await request(http, method, url, **options)
    except PublishError as exc:
        raise ConnectRefused(
            _UNREACHABLE.get(exc.kind, "The instance could not be reached.")
        ) from exc


def _origin(instance_url: str) -> str:
    try:
        return normalize_instance_url(instance_url)
    except ValueError as exc:
        raise ConnectRefused(f"The instance address is not valid: {exc}.") from exc


def _scope_text(scopes: str | Sequence[str]) -> str:
    return scopes if isinstance(scopes, str) else " ".join(scopes)


def _refusal(what: str, response: httpx.Response) -> ConnectRefused:
    said = error_text(response)
    return ConnectRefused(
        f"The instance refused {what}: {said}"
        if said
        else f"The instance refused {what} (HTTP {response.status_code})."
    )
