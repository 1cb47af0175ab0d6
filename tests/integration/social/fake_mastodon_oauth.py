"""The fake Mastodon's app registration and OAuth token endpoint (authorization code with PKCE,
refresh tokens that rotate), answering errors as Doorkeeper does."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from tests.integration.social.fake_mastodon_shapes import (
    FakeApp,
    FakeGrant,
    FakeToken,
    RecordedRequest,
    Reply,
    app_json,
    error_reply,
)

if TYPE_CHECKING:
    from tests.integration.social.fake_mastodon import FakeMastodon

KNOWN_SCOPES = frozenset({"read", "write", "follow", "push", "profile"})


def create_app(fake: FakeMastodon, request: RecordedRequest, _: re.Match[str]) -> Reply:
    form = request.form
    name = str(form.get("client_name") or "").strip()
    uris_given = form.get("redirect_uris") or ""
    uris = tuple(uris_given if isinstance(uris_given, list) else str(uris_given).split())
    scopes = tuple(str(form.get("scopes") or "read").split())
    if not name:
        return error_reply(422, "Validation failed: Application name can't be blank")
    if not uris or not all(_absolute_uri(u) for u in uris):
        return error_reply(422, "Validation failed: Redirect URI must be an absolute URI.")
    if not all(s in KNOWN_SCOPES or s.split(":", 1)[0] in KNOWN_SCOPES for s in scopes):
        return error_reply(422, "Validation failed: Scopes are invalid")
    with fake.lock:
        app = FakeApp(
            id=fake.next_id(),
            name=name,
            client_id=secrets.token_urlsafe(32),
            client_secret=secrets.token_urlsafe(32),
            redirect_uris=uris,
            scopes=scopes,
            website=str(form["website"]) if form.get("website") else None,
        )
        fake.apps[app.client_id] = app
    return Reply(200, app_json(app))


def _absolute_uri(uri: str) -> bool:
    return (
        uri == "urn:ietf:wg:oauth:2.0:oob"
        or re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", uri) is not None
    )


def _oautherror_reply(status: int, error: str, description: str) -> Reply:
    return Reply(status, {"error": error, "error_description": description})


_INVALID_GRANT = (
    "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client."
)


def issue_token(fake: FakeMastodon, request: RecordedRequest, _: re.Match[str]) -> Reply:
    form = request.form
    with fake.lock:
        app = _client(fake, request)
        if app is None:
            return _oautherror_reply(
                401,
                "invalid_client",
                "Client authentication failed due to unknown client, no client authentication "
                "included, or unsupported authentication method.",
            )
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return _issue_for_code(fake, app, form)
        if grant_type == "refresh_token":
            return _issue_for_refresh(fake, app, str(form.get("refresh_token") or ""))
        return _oautherror_reply(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        )


def _client(fake: FakeMastodon, request: RecordedRequest) -> FakeApp | None:
    client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
    basic = request.headers.get("authorization", "")
    if basic.startswith("Basic "):
        client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
    app = fake.apps.get(str(client_id or ""))
    if app is None or not secrets.compare_digest(str(secret or ""), app.client_secret):
        return None
    return app


def _issue_for_code(fake: FakeMastodon, app: FakeApp, form: dict[str, Any]) -> Reply:
    grant = fake.grants.get(str(form.get("code") or ""))
    if (
        grant is None
        or grant.used
        or grant.expires_at < time.time()
        or grant.client_id != app.client_id
        or grant.redirect_uri != form.get("redirect_uri")
        or not pkce_matches(grant, form.get("code_verifier"))
    ):
        return _oautherror_reply(400, "invalid_grant", _INVALID_GRANT)
    grant.used = True
    token = fake.new_token(grant.account_id, grant.scopes, app.client_id, None, False)
    return _token_answer(token)


def _issue_for_refresh(fake: FakeMastodon, app: FakeApp, refresh_token: str) -> Reply:
    old = next(
        (t for t in fake.tokens.values() if refresh_token and t.refresh_token == refresh_token),
        None,
    )
    if old is None or old.revoked or old.client_id != app.client_id:
        return _oautherror_reply(400, "invalid_grant", _INVALID_GRANT)
    old.revoked = True  # rotated: the old access and refresh tokens stop working
    lifetime = fake.refreshed_token_lifetime_s
    token = fake.new_token(old.account_id, old.scopes, app.client_id, lifetime, True)
    return _token_answer(token)


def pkce_matches(grant: FakeGrant, verifier: Any) -> bool:
    """Whether `verifier` is the one the grant's PKCE challenge was made from."""
    if grant.code_challenge is None:
        return True
    if not isinstance(verifier, str) or not verifier:
        return False
    if grant.code_challenge_method == "plain":
        return secrets.compare_digest(verifier, grant.code_challenge)
    digest = hashlib.sha256(verifier.encode()).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return secrets.compare_digest(computed, grant.code_challenge)


def _token_answer(token: FakeToken) -> Reply:
    body: dict[str, Any] = {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "scope": " ".join(token.scopes),
        "created_at": int(time.time()),
    }
    if token.expires_at is not None:
        body["expires_in"] = int(token.expires_at - time.time())
    if token.refresh_token is not None:
        body["refresh_token"] = token.refresh_token
    return Reply(200, body)
