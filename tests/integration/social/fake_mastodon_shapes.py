"""The fake Mastodon's records and their JSON as the real API shapes them (statuses rendered to
HTML as Mastodon's formatter does: paragraphs, links, mentions, hashtags)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Mastodon's MediaAttachment supported types (a subset: what tests upload and refuse).
SUPPORTED_MIME_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "audio/mpeg",
)


@dataclass
class FakeApp:
    id: str
    name: str
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    website: str | None = None


@dataclass
class FakeAccount:
    id: str
    username: str
    display_name: str = ""


@dataclass
class FakeToken:
    access_token: str
    account_id: str
    scopes: tuple[str, ...]
    client_id: str | None = None
    expires_at: float | None = None  # time.time(); None: never
    refresh_token: str | None = None
    revoked: bool = False


@dataclass
class FakeGrant:
    """An authorization code the person approved, with its PKCE challenge."""

    code: str
    client_id: str
    account_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    used: bool = False


@dataclass
class FakeMedia:
    id: str
    account_id: str
    filename: str
    content_type: str
    size: int
    description: str | None
    polls_left: int  # GETs answering 206 (still processing) before it is ready
    status_id: str | None = None


@dataclass
class FakeStatus:
    id: str
    account_id: str
    text: str
    created_at: datetime
    visibility: str = "public"
    media_ids: tuple[str, ...] = ()
    in_reply_to_id: str | None = None
    in_reply_to_account_id: str | None = None
    idempotency_key: str | None = None
    deleted: bool = False


@dataclass
class RecordedFile:
    field: str
    filename: str | None
    content_type: str | None
    size: int


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    form: dict[str, Any]  # a JSON object, or form fields (a `name[]` field as a list)
    files: list[RecordedFile] = field(default_factory=list)


@dataclass
class Reply:
    status: int
    payload: Any  # JSON, or a str sent as an HTML page
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering
    delay_s: float = 0.0  # wait this long before answering


def error_reply(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"error": message}, headers)


def iso(moment: datetime) -> str:
    """Times as Mastodon writes them: milliseconds, UTC, "Z"."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def app_json(app: FakeApp) -> dict[str, Any]:
    return {
        "id": app.id,
        "name": app.name,
        "website": app.website,
        "scopes": list(app.scopes),
        "redirect_uri": "\n".join(app.redirect_uris),
        "redirect_uris": list(app.redirect_uris),
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "client_secret_expires_at": 0,
        "vapid_key": "BCk-QqERU0q-CfYZjcuB6lnyyOYfJ2AifKqfeGIm7Z-HiTU5T9eTG5GxVA0_OH5mMlI4U"
        "kkDTpaZwozy0TzdZ2M=",
    }


def account_json(origin: str, account: FakeAccount, statuses: int = 0) -> dict[str, Any]:
    return {
        "id": account.id,
        "username": account.username,
        "acct": account.username,  # local: no domain
        "display_name": account.display_name,
        "locked": False,
        "bot": False,
        "group": False,
        "created_at": "2024-01-01T00:00:00.000Z",
        "note": "",
        "url": f"{origin}/@{account.username}",
        "uri": f"{origin}/users/{account.username}",
        "avatar": f"{origin}/avatars/original/missing.png",
        "followers_count": 0,
        "following_count": 0,
        "statuses_count": statuses,
        "emojis": [],
        "fields": [],
    }


def media_json(origin: str, media: FakeMedia) -> dict[str, Any]:
    ready = media.polls_left <= 0
    kind = media.content_type.split("/", 1)[0]
    path = f"{origin}/system/media_attachments/files/{media.id}"
    return {
        "id": media.id,
        "type": {"image": "image", "video": "video", "audio": "audio"}.get(kind, "unknown"),
        "url": f"{path}/original/{media.filename}" if ready else None,
        "preview_url": f"{path}/small/{media.filename}",
        "remote_url": None,
        "preview_remote_url": None,
        "text_url": None,
        "meta": {},
        "description": media.description,
        "blurhash": "UFBWY:8_0Jxv4mx]t8t64.%M-:IUWGWAt6M}",
    }


def status_json(
    origin: str,
    status: FakeStatus,
    account: FakeAccount,
    media: list[FakeMedia],
    *,
    with_source: bool = False,
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": status.id,
        "created_at": iso(status.created_at),
        "in_reply_to_id": status.in_reply_to_id,
        "in_reply_to_account_id": status.in_reply_to_account_id,
        "sensitive": False,
        "spoiler_text": "",
        "visibility": status.visibility,
        "language": "en",
        "uri": f"{origin}/users/{account.username}/statuses/{status.id}",
        "url": f"{origin}/@{account.username}/{status.id}",
        "replies_count": 0,
        "reblogs_count": 0,
        "favourites_count": 0,
        "edited_at": None,
        "content": render_content(origin, status.text),
        "reblog": None,
        "application": {"name": "SocialFlow", "website": None},
        "account": account_json(origin, account),
        "media_attachments": [media_json(origin, m) for m in media],
        "mentions": [],
        "tags": [],
        "emojis": [],
        "card": None,
        "poll": None,
    }
    if with_source:  # a deleted status's answer carries its source, to redraft it
        answer["text"] = status.text
    return answer


# --- rendering a status's text as Mastodon's TextFormatter does

_ENTITY = re.compile(
    r"(?P<url>https?://[^\s<>\"']+[^\s<>\"'.,:;!?)])"
    r"|(?<![=/\w])@(?P<user>[a-z0-9_]+(?:[a-z0-9_.-]+[a-z0-9_]+)?)(?P<domain>@[\w.-]+\w+)?"
    r"|(?<![=/\w])#(?P<tag>\w+)",
    re.IGNORECASE,
)


def render_content(origin: str, text: str) -> str:
    """`text` as the HTML of a status's `content`."""
    parts: list[str] = []
    last = 0
    for match in _ENTITY.finditer(text):
        parts.append(html.escape(text[last : match.start()]))
        parts.append(_entity_html(origin, match))
        last = match.end()
    parts.append(html.escape(text[last:]))
    body = "".join(parts).strip()
    paragraphs = re.split(r"\n{2,}", body)
    return "".join(f"<p>{p.replace(chr(10), '<br />')}</p>" for p in paragraphs if p)


def _entity_html(origin: str, match: re.Match[str]) -> str:
    if match.group("url"):
        url = match.group("url")
        scheme, rest = url.split("://", 1)
        shown, hidden = rest[:30], rest[30:]
        return (
            f'<a href="{html.escape(url)}" target="_blank" rel="nofollow noopener noreferrer" '
            f'translate="no"><span class="invisible">{scheme}://</span>'
            f'<span class="{"ellipsis" if hidden else ""}">{html.escape(shown)}</span>'
            f'<span class="invisible">{html.escape(hidden)}</span></a>'
        )
    if match.group("user"):
        # The mentioned account is taken as resolved: Mastodon then shows only @user.
        user = match.group("user")
        domain = (match.group("domain") or "").lstrip("@")
        href = f"https://{domain}/@{user}" if domain else f"{origin}/@{user}"
        return (
            f'<span class="h-card" translate="no"><a href="{href}" class="u-url mention">'
            f"@<span>{user}</span></a></span>"
        )
    tag = match.group("tag")
    return (
        f'<a href="{origin}/tags/{tag.lower()}" class="mention hashtag" rel="tag">'
        f"#<span>{tag}</span></a>"
    )
