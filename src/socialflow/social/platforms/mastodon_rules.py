"""What a Mastodon instance accepts: its limits, how it counts a status's length, and how a
status's rendered HTML compares with the text that was sent."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import regex

from socialflow.social.platforms.base import (
    FailureKind,
    OutgoingMedia,
    OutgoingPost,
    PublishError,
)
from socialflow.social.platforms.mastodon_api import (
    as_dict,
    failure,
    json_of,
    positive_int,
    request,
)

DESCRIPTION_LIMIT = 1500  # alt text: Mastodon's MediaAttachment validation, unless configured

# Mastodon's StatusLengthValidator counts grapheme clusters, each http(s) URL as
# `characters_reserved_per_url` whatever its length, and a mention `@user@domain` as `@user`.
_GRAPHEME: Any = regex.compile(r"\X")
_URL = re.compile(r"(?<![\w@/.])https?://[^\s<>\"'\u3000]+", re.IGNORECASE)
_MENTION = re.compile(
    r"(?<![=/\w])@(?P<user>[a-z0-9_]+(?:[a-z0-9_.-]+[a-z0-9_]+)?)(?:@[\w.-]+\w+)?", re.IGNORECASE
)
_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<br\s*/?>|</p>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def mastodon_length(text: str, characters_per_url: int = 23) -> int:
    """The length of `text` as a Mastodon instance counts it."""

    def placeholder(match: re.Match[str]) -> str:
        url = match.group(0)
        counted_part = _trim_url(url)
        return "x" * characters_per_url + url[len(counted_part) :]

    counted = _short_mentions(_URL.sub(placeholder, text))
    return len(_GRAPHEME.findall(counted))


def _trim_url(url: str) -> str:
    # Trailing punctuation ends the sentence, not the URL (as Mastodon's extractor reads it).
    while url and (url[-1] in ".,:;!?'\"" or (url[-1] == ")" and url.count("(") < url.count(")"))):
        url = url[:-1]
    return url


def _short_mentions(text: str) -> str:
    return _MENTION.sub(lambda m: f"@{m.group('user')}", text)


def comparable_text(text: str) -> str:
    """`text` as it compares with a rendered status: Mastodon shows a remote mention as @user,
    and HTML keeps no line breaks or runs of spaces as they were typed."""
    return _SPACE.sub(" ", _short_mentions(text)).strip()


def status_text(status: dict[str, Any]) -> str:
    """A status's text from its rendered `content`: tags stripped, entities unescaped."""
    content = status.get("content")
    if not isinstance(content, str):
        return ""
    # Tags go before entities are unescaped, so an escaped "<" in the text stays text.
    return comparable_text(html.unescape(_TAG.sub("", _BREAK.sub(" ", content))))


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """What an instance's /api/v2/instance says about statuses and media (Mastodon's defaults
    for what it leaves out)."""

    max_characters: int = 500
    max_media: int = 4
    characters_per_url: int = 23
    description_limit: int = DESCRIPTION_LIMIT
    mime_types: frozenset[str] = frozenset()  # empty: the instance did not say
    image_size_limit: int | None = None
    video_size_limit: int | None = None

    @classmethod
    def from_answer(cls, body: Any) -> InstanceConfig:
        conf = as_dict(as_dict(body).get("configuration"))
        statuses, media = as_dict(conf.get("statuses")), as_dict(conf.get("media_attachments"))
        types = media.get("supported_mime_types")
        return cls(
            max_characters=positive_int(statuses.get("max_characters"))
            or positive_int(as_dict(body).get("max_toot_chars"))  # Pleroma, glitch-soc
            or 500,
            max_media=positive_int(statuses.get("max_media_attachments")) or 4,
            characters_per_url=positive_int(statuses.get("characters_reserved_per_url")) or 23,
            description_limit=positive_int(media.get("description_limit")) or DESCRIPTION_LIMIT,
            mime_types=frozenset(t for t in types if isinstance(t, str))
            if isinstance(types, list)
            else frozenset(),
            image_size_limit=positive_int(media.get("image_size_limit")),
            video_size_limit=positive_int(media.get("video_size_limit")),
        )


async def fetch_instance_config(http: httpx.AsyncClient, origin: str) -> InstanceConfig:
    """The instance's limits (the v2 API, else v1 for instances older than Mastodon 4.0)."""
    response = await request(http, "GET", f"{origin}/api/v2/instance")
    if response.status_code in (404, 410):
        response = await request(http, "GET", f"{origin}/api/v1/instance")
    if response.status_code != 200:
        raise failure(response, token=None)
    body = json_of(response)
    if not isinstance(body, dict):
        raise PublishError(FailureKind.DESTINATION_REFUSED, "The instance does not speak Mastodon.")
    return InstanceConfig.from_answer(body)


def refusals(config: InstanceConfig, post: OutgoingPost, host: str) -> list[str]:
    """Why an instance with `config` would refuse `post`, in words a person can act on."""
    reasons: list[str] = []
    if not post.text.strip() and not post.media:
        reasons.append("The post needs text or at least one media file.")
    length = mastodon_length(post.text, config.characters_per_url)
    if length > config.max_characters:
        reasons.append(
            f"The text is {length} characters as {host} counts them (each link counts "
            f"{config.characters_per_url}); it allows {config.max_characters}."
        )
    if post.first_comment:
        comment = mastodon_length(post.first_comment, config.characters_per_url)
        if comment > config.max_characters:
            reasons.append(
                f"The first comment is {comment} characters; {host} allows {config.max_characters}."
            )
    return reasons + _media_refusals(config, post.media, host)


def _media_refusals(config: InstanceConfig, items: Sequence[OutgoingMedia], host: str) -> list[str]:
    reasons: list[str] = []
    if len(items) > config.max_media:
        reasons.append(f"The post has {len(items)} media files; {host} allows {config.max_media}.")
    if len(items) > 1 and any(_is_av(m) for m in items):
        reasons.append("On Mastodon a video or audio file must be the post's only attachment.")
    for item in items:
        name = item.filename
        if config.mime_types and item.content_type not in config.mime_types:
            reasons.append(f"{name}: {host} does not accept {item.content_type} files.")
        limit = config.video_size_limit if _is_av(item) else config.image_size_limit
        if limit is not None and len(item.data) > limit:
            reasons.append(f"{name}: {host} accepts such files up to {limit / 1e6:.1f} MB.")
        if item.alt_text and len(item.alt_text) > config.description_limit:
            reasons.append(
                f"{name}: the alt text is {len(item.alt_text)} characters; "
                f"{host} allows {config.description_limit}."
            )
    return reasons


def _is_av(item: OutgoingMedia) -> bool:
    return item.content_type.startswith(("video/", "audio/"))
