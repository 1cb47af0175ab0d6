"""Bluesky's text rules and record keys: graphemes, facets at UTF-8 byte offsets, TIDs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from socialflow.social.platforms.base import OutgoingPost
from socialflow.social.platforms.bluesky import (
    TID_ALPHABET,
    comment_key,
    record_key,
    tid,
    token_expiry,
)
from socialflow.social.platforms.bluesky_text import (
    FacetSpan,
    detect_facets,
    facet_json,
    graphemes,
)

AT = datetime(2026, 12, 6, 9, 30, 15, 123456, tzinfo=UTC)


def _decode_tid(value: str) -> tuple[int, int]:
    number = 0
    for char in value:
        number = number * 32 + TID_ALPHABET.index(char)
    return number >> 10, number & 0x3FF


def _spans(text: str) -> list[tuple[str, str, str]]:
    """(kind, the bytes the facet covers, value) of each facet of `text`."""
    encoded = text.encode()
    return [
        (span.kind, encoded[span.byte_start : span.byte_end].decode(), span.value)
        for span in detect_facets(text)
    ]


# --- record keys


def test_a_tid_encodes_time_and_clock_id_as_the_atproto_libraries_do() -> None:
    assert tid(1724171495793000, 512) == "3l25zusnsfck2"


def test_a_record_key_is_a_tid_carrying_the_first_attempts_microseconds() -> None:
    key = record_key(AT, "post-1:dest-1:hash")
    assert len(key) == 13
    assert key[0] in "234567abcdefghij"
    assert set(key) <= set(TID_ALPHABET)
    micros, _ = _decode_tid(key)
    assert micros == (AT - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_a_record_key_is_the_same_on_every_retry_of_a_delivery() -> None:
    assert record_key(AT, "post-1:dest-1:hash") == record_key(AT, "post-1:dest-1:hash")
    naive = AT.replace(tzinfo=None)  # a naive time is taken as UTC
    assert record_key(naive, "post-1:dest-1:hash") == record_key(AT, "post-1:dest-1:hash")


def test_deliveries_at_the_same_moment_get_different_clock_ids() -> None:
    first, second = record_key(AT, "a"), record_key(AT, "b")
    assert first != second
    assert _decode_tid(first)[0] == _decode_tid(second)[0]


def test_the_first_comments_key_sorts_after_its_posts_key() -> None:
    post = OutgoingPost("p", "d", "key", "text", AT, first_comment="more")
    assert comment_key(post) > record_key(AT, "key")
    assert _decode_tid(comment_key(post))[0] == _decode_tid(record_key(AT, "key"))[0] + 1


def test_the_expiry_of_a_session_token_is_read_from_its_exp_claim() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 1_800_000_000}).encode()).rstrip(b"=")
    assert token_expiry(f"e30.{payload.decode()}.sig") == datetime.fromtimestamp(1_800_000_000, UTC)
    assert token_expiry("not-a-jwt") is None


# --- graphemes


def test_an_emoji_sequence_and_a_combining_accent_count_one_grapheme_each() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert graphemes(family + "e\u0301" + "\U0001f1eb\U0001f1f7") == 3
    assert graphemes("👍🏽" * 300) == 300


# --- facets


def test_a_link_after_emoji_and_accents_is_found_at_its_utf8_byte_offsets() -> None:
    text = "Grüße 👋🏽 café: https://example.com/a?b=1 ok"
    [span] = detect_facets(text)
    assert span.kind == "link"
    assert span.value == "https://example.com/a?b=1"
    assert span.byte_start == len("Grüße 👋🏽 café: ".encode())
    assert span.byte_end == span.byte_start + len(span.value)
    assert span.byte_start != text.index("https")  # characters and bytes differ here


def test_trailing_punctuation_is_not_part_of_a_link() -> None:
    assert _spans("See https://example.com/launch. And (https://example.org/x)!") == [
        ("link", "https://example.com/launch", "https://example.com/launch"),
        ("link", "https://example.org/x", "https://example.org/x"),
    ]


def test_a_link_keeps_its_own_balanced_parentheses() -> None:
    uri = "https://en.wikipedia.org/wiki/Bluesky_(social_network)"
    assert _spans(f"Read {uri}.") == [("link", uri, uri)]


def test_text_without_a_scheme_is_not_a_link() -> None:
    assert _spans("example.com and ftp://example.com and https:// alone") == []


def test_a_mention_covers_the_at_sign_and_stops_before_a_full_stop() -> None:
    assert _spans("Thanks, 🎉 @Bob.Bsky.Social. And (@carol.test)") == [
        ("mention", "@Bob.Bsky.Social", "Bob.Bsky.Social"),
        ("mention", "@carol.test", "carol.test"),
    ]


def test_an_email_address_or_a_bare_name_is_not_a_mention() -> None:
    assert _spans("mail bob@example.com or ask @bob or @-bad-.test") == []


def test_a_hashtag_is_found_without_its_trailing_punctuation() -> None:
    assert _spans("Olé 🎉 #Launch2026! #día, \uff03全角") == [
        ("tag", "#Launch2026", "Launch2026"),
        ("tag", "#día", "día"),
        ("tag", "\uff03全角", "全角"),
    ]


def test_a_hashtag_of_digits_only_or_a_keycap_is_not_a_tag() -> None:
    assert _spans("We are #1 and #2026 #️⃣ and a#b") == []


def test_a_hashtag_may_have_64_graphemes_but_not_65() -> None:
    assert [kind for kind, _, _ in _spans("#" + "é" * 64)] == ["tag"]
    assert _spans("#" + "é" * 65) == []


def test_facets_come_in_text_order() -> None:
    spans = _spans("#a https://x.org/#b @c.test #d")
    assert [kind for kind, _, _ in spans] == ["tag", "link", "mention", "tag"]


def test_of_overlapping_facets_the_one_starting_first_is_kept() -> None:
    # "(@bob.test" would be a mention, but it is inside the tag.
    assert _spans("#foo(@bob.test) end") == [("tag", "#foo(@bob.test", "foo(@bob.test")]


def test_facet_json_takes_bluesky_shapes() -> None:
    link = FacetSpan("link", 3, 10, "https://x.org")
    tag = FacetSpan("tag", 11, 15, "bsky")
    mention = FacetSpan("mention", 0, 9, "bob.test")
    assert facet_json(link) == {
        "index": {"byteStart": 3, "byteEnd": 10},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://x.org"}],
    }
    assert facet_json(tag)["features"] == [{"$type": "app.bsky.richtext.facet#tag", "tag": "bsky"}]
    assert facet_json(mention, did="did:plc:bob")["features"] == [
        {"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:bob"}
    ]


def test_a_mention_facet_needs_the_did_of_its_handle() -> None:
    with pytest.raises(ValueError, match="DID"):
        facet_json(FacetSpan("mention", 0, 9, "bob.test"))
