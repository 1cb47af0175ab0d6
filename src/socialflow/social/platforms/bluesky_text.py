"""Bluesky's text rules: length in graphemes, and rich-text facets found at UTF-8 byte offsets.

A facet marks a range of the post's text as a link, a mention or a hashtag. Its range is counted
in bytes of the UTF-8 encoding (not characters, not UTF-16 units), so an emoji or an accented
letter before it shifts it by several. Detection follows the rules of Bluesky's own client
(`@atproto/api` rich text): a facet starts at the beginning of the text or after a space (a link
or mention also after "("), trailing punctuation is not part of it, and a hashtag is not only
digits and has at most 64 graphemes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import regex  # no stubs published

MAX_GRAPHEMES = 300  # app.bsky.feed.post#text: maxGraphemes
MAX_TEXT_BYTES = 3000  # app.bsky.feed.post#text: maxLength (UTF-8 bytes)
MAX_TAG_GRAPHEMES = 64  # app.bsky.richtext.facet#tag: maxGraphemes
MAX_TAG_BYTES = 640  # app.bsky.richtext.facet#tag: maxLength
MAX_HANDLE_LENGTH = 253

FACET_TYPES = {
    "link": "app.bsky.richtext.facet#link",
    "mention": "app.bsky.richtext.facet#mention",
    "tag": "app.bsky.richtext.facet#tag",
}

FacetKind = Literal["link", "mention", "tag"]

_GRAPHEME = regex.compile(r"\X")
_LINK = regex.compile(r"(?:^|\s|\()(https?://\S+)", regex.IGNORECASE | regex.MULTILINE)
_MENTION = regex.compile(r"(?:^|\s|\()@([a-zA-Z0-9.-]+)")
# The handle syntax of the AT Protocol: DNS labels, the last one starting with a letter.
_HANDLE = regex.compile(
    r"([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
# Invisible characters that end a hashtag as a space does (soft hyphen, zero-width spaces and
# joiners, the enclosing keycap): Bluesky's list.
_TAG_STOP = r"\s\u00AD\u2060\u200A\u200B\u200C\u200D\u20E2"
# "#" or the full-width U+FF03, not the keycap emoji (U+FE0F after it); at least one character
# that is not a digit or punctuation.
_TAG = regex.compile(
    r"(^|\s)[#\uFF03]((?!\uFE0F)[^" + _TAG_STOP + r"]*[^0-9\p{P}" + _TAG_STOP + r"]+"
    r"[^" + _TAG_STOP + r"]*)?"
)
_TRAILING_PUNCTUATION = regex.compile(r"\p{P}+$")
_LINK_TRAILING = ".,;:!?\"'"


@dataclass(frozen=True, slots=True)
class FacetSpan:
    """A facet found in a text: its kind, its UTF-8 byte range, and its value (the link's URI,
    the mentioned handle, or the tag without "#")."""

    kind: FacetKind
    byte_start: int
    byte_end: int
    value: str


def graphemes(text: str) -> int:
    """The length Bluesky limits: user-perceived characters (a flag or a family emoji is one)."""
    return len(_GRAPHEME.findall(text))


def detect_facets(text: str) -> list[FacetSpan]:
    """Links, mentions and hashtags of `text`, in text order, none overlapping another."""
    found = [*_links(text), *_mentions(text), *_tags(text)]
    found.sort(key=lambda span: (span.byte_start, -span.byte_end))
    spans: list[FacetSpan] = []
    for span in found:
        # The spec discourages overlapping facets, and clients render them unpredictably.
        if not spans or span.byte_start >= spans[-1].byte_end:
            spans.append(span)
    return spans


def facet_json(span: FacetSpan, *, did: str | None = None) -> dict[str, Any]:
    """The `app.bsky.richtext.facet` of `span`; a mention needs the DID its handle resolved to."""
    feature: dict[str, Any] = {"$type": FACET_TYPES[span.kind]}
    if span.kind == "link":
        feature["uri"] = span.value
    elif span.kind == "tag":
        feature["tag"] = span.value
    elif did is None:
        raise ValueError("a mention facet needs the DID of the handle")
    else:
        feature["did"] = did
    return {
        "index": {"byteStart": span.byte_start, "byteEnd": span.byte_end},
        "features": [feature],
    }


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _span(text: str, kind: FacetKind, start: int, end: int, value: str) -> FacetSpan:
    return FacetSpan(kind, _byte_offset(text, start), _byte_offset(text, end), value)


def _links(text: str) -> list[FacetSpan]:
    spans = []
    for match in _LINK.finditer(text):
        uri = _trim_link(match.group(1))
        if _has_host(uri):
            start = match.start(1)
            spans.append(_span(text, "link", start, start + len(uri), uri))
    return spans


def _trim_link(uri: str) -> str:
    """Without the punctuation that ends the sentence around it ("see https://x.org/a).")."""
    while uri:
        unbalanced = uri[-1] == ")" and uri.count("(") < uri.count(")")
        if uri[-1] in _LINK_TRAILING or unbalanced:
            uri = uri[:-1]
        else:
            break
    return uri


def _has_host(uri: str) -> bool:
    try:
        return bool(urlsplit(uri).hostname)
    except ValueError:  # an unclosed "[" of an IPv6 host
        return False


def _mentions(text: str) -> list[FacetSpan]:
    spans = []
    for match in _MENTION.finditer(text):
        # A handle ends at a word boundary: "@alice.bsky.social." ends a sentence.
        handle = match.group(1).rstrip(".-")
        if len(handle) <= MAX_HANDLE_LENGTH and _HANDLE.fullmatch(handle):
            at = match.start(1) - 1
            spans.append(_span(text, "mention", at, at + 1 + len(handle), handle))
    return spans


def _tags(text: str) -> list[FacetSpan]:
    spans = []
    for match in _TAG.finditer(text):
        tag = match.group(2)
        if not tag:
            continue
        tag = _TRAILING_PUNCTUATION.sub("", tag.strip())
        too_long = graphemes(tag) > MAX_TAG_GRAPHEMES or len(tag.encode()) > MAX_TAG_BYTES
        if not tag or too_long:
            continue
        at = match.start(0) + len(match.group(1))
        spans.append(_span(text, "tag", at, at + 1 + len(tag), tag))
    return spans
