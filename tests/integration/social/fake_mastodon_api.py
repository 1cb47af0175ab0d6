"""The fake Mastodon's endpoints: each request's answer as the real API gives it (status codes,
error bodies, headers), with the instance's mode applied to the calls it concerns."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tests.integration.social.fake_mastodon_oauth import create_app, issue_token
from tests.integration.social.fake_mastodon_shapes import (
    FakeMedia,
    FakeStatus,
    FakeToken,
    RecordedRequest,
    Reply,
    account_json,
    error_reply,
    iso,
    media_json,
    status_json,
)

if TYPE_CHECKING:
    from tests.integration.social.fake_mastodon import FakeMastodon

INVALID_TOKEN = "The access token is invalid"
NOT_FOUND = "Record not found"
_SERVER_ERROR_PAGE = "<html><body><h1>We're sorry, but something went wrong.</h1></body></html>"
_GATEWAY_TIMEOUT_PAGE = "<html><head><title>504 Gateway Time-out</title></head></html>"
_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,:;!?)]", re.IGNORECASE)
_REMOTE_MENTION = re.compile(r"(?<![=/\w])@(\w+)@[\w.-]+\w+")


Route = Callable[["FakeMastodon", RecordedRequest, re.Match[str]], Reply]


def answer(fake: FakeMastodon, request: RecordedRequest) -> Reply:
    """The answer to `request`, misbehaving as the fake's mode says."""
    found = _route(request)
    if found is None:
        return error_reply(404, NOT_FOUND)
    route, match, concerns = found
    mode = fake.take_mode(concerns)
    if mode == "rate_limited":
        reset = datetime.now(UTC) + timedelta(seconds=fake.retry_after_s)
        limits = {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0"}
        return Reply(
            429, {"error": "Too many requests"}, limits | {"X-RateLimit-Reset": iso(reset)}
        )
    if mode == "server_error":
        return Reply(500, _SERVER_ERROR_PAGE)
    if mode == "unauthorized":
        return _unauthorized(INVALID_TOKEN)
    if mode == "reject":
        return error_reply(422, fake.reject_error)
    if mode == "media_reject":
        return error_reply(422, fake.media_reject_error)
    reply = route(fake, request, match)
    if mode == "slow":
        reply.delay_s = fake.slow_s
    elif mode == "drop_after_accept":
        reply.drop = True
    elif mode == "gateway_timeout":
        reply = Reply(504, _GATEWAY_TIMEOUT_PAGE)
    return reply


def _route(request: RecordedRequest) -> tuple[Route, re.Match[str], frozenset[str]] | None:
    for method, pattern, route, concerns in _ROUTES:
        match = pattern.fullmatch(request.path)
        if method == request.method and match:
            return route, match, concerns
    return None


def _unauthorized(message: str) -> Reply:
    challenge = f'Bearer realm="Doorkeeper", error="invalid_token", error_description="{message}"'
    return error_reply(401, message, **{"WWW-Authenticate": challenge})


def _token(fake: FakeMastodon, request: RecordedRequest) -> FakeToken | Reply | None:
    """The request's valid token; a 401 Reply for a bad one; None when none was sent."""
    given = request.headers.get("authorization", "")
    if not given.startswith("Bearer "):
        return None
    token = fake.tokens.get(given.removeprefix("Bearer ").strip())
    if token is None or token.revoked:
        return _unauthorized(INVALID_TOKEN)
    if token.expires_at is not None and token.expires_at <= time.time():
        return _unauthorized("The access token expired")
    return token


def _authorized(fake: FakeMastodon, request: RecordedRequest, scope: str) -> FakeToken | Reply:
    token = _token(fake, request)
    if token is None:
        return error_reply(401, INVALID_TOKEN)
    if isinstance(token, FakeToken) and not _allows(token.scopes, scope):
        return error_reply(403, "This action is outside the authorized scopes")
    return token


def _allows(scopes: tuple[str, ...], needed: str) -> bool:
    return needed in scopes or needed.split(":", 1)[0] in scopes


# --- accounts and the instance


def _verify_credentials(fake: FakeMastodon, request: RecordedRequest, _: re.Match[str]) -> Reply:
    with fake.lock:
        token = _authorized(fake, request, "read:accounts")
        if isinstance(token, Reply):
            return token
        account = fake.accounts[token.account_id]
        answer = account_json(fake.origin, account, len(fake.statuses_of(account)))
    answer["source"] = {"privacy": "public", "sensitive": False, "language": "en", "note": ""}
    return Reply(200, answer)


def _instance(fake: FakeMastodon, request: RecordedRequest, _: re.Match[str]) -> Reply:
    statuses = {
        "max_characters": fake.max_characters,
        "max_media_attachments": fake.max_media,
        "characters_reserved_per_url": fake.characters_per_url,
    }
    media = {
        "supported_mime_types": list(fake.supported_mime_types),
        "image_size_limit": 16_777_216,
        "image_matrix_limit": 33_177_600,
        "video_size_limit": 103_809_024,
        "video_frame_rate_limit": 120,
        "video_matrix_limit": 8_294_400,
    }
    return Reply(
        200,
        {
            "domain": fake.host,
            "title": "Fake Mastodon",
            "version": "4.3.0",
            "source_url": "https://github.com/mastodon/mastodon",
            "description": "A Mastodon instance on loopback, for tests.",
            "usage": {"users": {"active_month": len(fake.accounts)}},
            "languages": ["en"],
            "configuration": {
                "urls": {"streaming": f"ws://{fake.host}:{fake.port}"},
                "accounts": {"max_featured_tags": 10, "max_pinned_statuses": 5},
                "statuses": statuses,
                "media_attachments": media,
                "polls": {"max_options": 4, "max_characters_per_option": 50},
                "translation": {"enabled": False},
            },
            "registrations": {"enabled": False, "approval_required": False, "message": None},
            "contact": {"email": "admin@example.invalid", "account": None},
            "rules": [],
        },
    )


# --- media


def _upload(fake: FakeMastodon, request: RecordedRequest, _: re.Match[str]) -> Reply:
    with fake.lock:
        token = _authorized(fake, request, "write:media")
        if isinstance(token, Reply):
            return token
        file = next((f for f in request.files if f.field == "file"), None)
        if file is None or file.size == 0:
            return error_reply(422, "Validation failed: File can't be blank")
        if file.content_type not in fake.supported_mime_types:
            return error_reply(422, fake.media_reject_error)
        media = FakeMedia(
            id=fake.next_id(),
            account_id=token.account_id,
            filename=file.filename or "file",
            content_type=file.content_type,
            size=file.size,
            description=request.form.get("description") or None,
            polls_left=fake.processing_polls,
        )
        fake.media[media.id] = media
        # Mastodon answers 202 while it still processes the file (always, for video).
        return Reply(202 if media.polls_left > 0 else 200, media_json(fake.origin, media))


def _media(fake: FakeMastodon, request: RecordedRequest, match: re.Match[str]) -> Reply:
    with fake.lock:
        token = _authorized(fake, request, "read:statuses")
        if isinstance(token, Reply):
            return token
        media = fake.media.get(match["id"])
        if media is None or media.account_id != token.account_id:
            return error_reply(404, NOT_FOUND)
        if media.polls_left > 0:
            media.polls_left -= 1
            return Reply(206, media_json(fake.origin, media) | {"url": None})
        return Reply(200, media_json(fake.origin, media))


# --- statuses


def _post_status(fake: FakeMastodon, request: RecordedRequest, _: re.Match[str]) -> Reply:
    with fake.lock:
        token = _authorized(fake, request, "write:statuses")
        if isinstance(token, Reply):
            return token
        key = request.headers.get("idempotency-key")
        if key:
            seen = fake.idempotency.get((token.account_id, key))
            if seen is not None and seen[1] > time.monotonic() and seen[0] in fake.statuses:
                return Reply(200, _status_answer(fake, fake.statuses[seen[0]]))
        form = request.form
        text = str(form.get("status") or "")
        media_ids = tuple(str(m) for m in (form.get("media_ids") or ()))
        refusal = _status_refusal(fake, token.account_id, text, media_ids)
        if refusal is not None:
            return refusal
        parent = None
        if form.get("in_reply_to_id"):
            parent = fake.statuses.get(str(form["in_reply_to_id"]))
            if parent is None or parent.deleted:
                return error_reply(404, NOT_FOUND)
        status = fake.create_status(
            token.account_id,
            text,
            media_ids=media_ids,
            in_reply_to=parent,
            visibility=str(form.get("visibility") or "public"),
            idempotency_key=key or None,
        )
        return Reply(200, _status_answer(fake, status))


def _status_refusal(
    fake: FakeMastodon, account_id: str, text: str, media_ids: tuple[str, ...]
) -> Reply | None:
    if not text.strip() and not media_ids:
        return error_reply(422, "Validation failed: Text can't be blank")
    counted = _REMOTE_MENTION.sub(r"@\1", _URL.sub("x" * fake.characters_per_url, text))
    if len(counted) > fake.max_characters:
        return error_reply(
            422, f"Validation failed: Text character limit of {fake.max_characters} exceeded"
        )
    if len(media_ids) > fake.max_media:
        return error_reply(422, f"Cannot attach more than {fake.max_media} files")
    for media_id in media_ids:
        media = fake.media.get(media_id)
        if media is None or media.account_id != account_id or media.status_id is not None:
            return error_reply(422, f"Media attachment {media_id} not found")
        if media.polls_left > 0:
            return error_reply(
                422, "Cannot attach files that have not finished processing. Try again in a moment!"
            )
    return None


def _status_answer(fake: FakeMastodon, status: FakeStatus, *, with_source: bool = False) -> Any:
    media = [fake.media[m] for m in status.media_ids]
    account = fake.accounts[status.account_id]
    return status_json(fake.origin, status, account, media, with_source=with_source)


def _delete_status(fake: FakeMastodon, request: RecordedRequest, match: re.Match[str]) -> Reply:
    with fake.lock:
        token = _authorized(fake, request, "write:statuses")
        if isinstance(token, Reply):
            return token
        status = fake.statuses.get(match["id"])
        if status is None or status.deleted or status.account_id != token.account_id:
            return error_reply(404, NOT_FOUND)
        status.deleted = True
        return Reply(200, _status_answer(fake, status, with_source=True))


def _account_statuses(fake: FakeMastodon, request: RecordedRequest, match: re.Match[str]) -> Reply:
    with fake.lock:
        token = _token(fake, request)  # public, but a token sent must be valid
        if isinstance(token, Reply):
            return token
        account = fake.accounts.get(match["id"])
        if account is None:
            return error_reply(404, NOT_FOUND)
        query = {k: v[-1] for k, v in request.query.items()}
        limit = min(int(query.get("limit") or 20), 40)
        max_id = int(query["max_id"]) if query.get("max_id") else None
        found = [
            s
            for s in fake.statuses_of(account)
            if (max_id is None or int(s.id) < max_id)
            # exclude_replies keeps a thread's own replies, as Mastodon does
            and not (
                query.get("exclude_replies") == "true"
                and s.in_reply_to_id is not None
                and s.in_reply_to_account_id != account.id
            )
        ][:limit]
        page = [_status_answer(fake, s) for s in found]
    headers: dict[str, str] = {}
    if len(found) == limit:
        path = f"{fake.origin}/api/v1/accounts/{account.id}/statuses"
        headers["Link"] = f'<{path}?limit={limit}&max_id={found[-1].id}>; rel="next"'
    return Reply(200, page, headers)


_ALL = frozenset({"rate_limited", "server_error", "unauthorized", "slow"})
_ROUTES: list[tuple[str, re.Pattern[str], Route, frozenset[str]]] = [
    ("POST", re.compile(r"/api/v1/apps"), create_app, _ALL),
    ("POST", re.compile(r"/oauth/token"), issue_token, frozenset()),
    ("GET", re.compile(r"/api/v1/accounts/verify_credentials"), _verify_credentials, _ALL),
    ("GET", re.compile(r"/api/v2/instance"), _instance, _ALL),
    ("POST", re.compile(r"/api/v2/media"), _upload, _ALL | {"media_reject"}),
    ("GET", re.compile(r"/api/v1/media/(?P<id>\d+)"), _media, _ALL),
    (
        "POST",
        re.compile(r"/api/v1/statuses"),
        _post_status,
        _ALL | {"reject", "drop_after_accept", "gateway_timeout"},
    ),
    ("DELETE", re.compile(r"/api/v1/statuses/(?P<id>\d+)"), _delete_status, _ALL),
    ("GET", re.compile(r"/api/v1/accounts/(?P<id>\d+)/statuses"), _account_statuses, _ALL),
]
