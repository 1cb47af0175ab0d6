"""A model's caption answer as stored: parsed leniently, cleaned strictly, bounded; its
vectors read in either form a provider sends."""

from __future__ import annotations

import base64
import binascii
import json
import struct

import pytest

from socialflow.captions import embedding
from socialflow.captions.prompt import MAX_CAPTION, Malformed, parse_caption

ANSWER = {
    "caption": "A harbour",
    "alt_text": "Boats",
    "description": "Boats at dawn",
    "hashtags": ["#sea", "sea", "#Sea", "#boats!", "#dawn"],
    "language": "en",
}


def parse(**changes: object) -> object:
    return parse_caption(json.dumps({**ANSWER, **changes}), language="fr", hashtag_count=2)


def test_a_fenced_answer_with_text_around_it_is_taken_and_hashtags_are_normalised() -> None:
    caption = parse_caption(
        "Here you go:\n```json\n" + json.dumps(ANSWER) + "\n```", language="fr", hashtag_count=3
    )
    assert caption.caption == "A harbour"
    assert caption.hashtags == ["#sea", "#boats", "#dawn"]


def test_control_characters_never_reach_the_database() -> None:
    caption = parse(caption="A\x00 har\x1bbour\n", alt_text="x\x00", description="d\x7f")
    assert caption.caption == "A harbour"  # type: ignore[attr-defined]
    assert caption.alt_text == "x"  # type: ignore[attr-defined]
    assert caption.description == "d"  # type: ignore[attr-defined]


@pytest.mark.parametrize("said", ["en-abcdefgh-abcdefgh-abcdefgh", "english please", "e"])
def test_a_language_tag_that_does_not_fit_falls_back_to_the_one_asked(said: str) -> None:
    assert parse(language=said).language == "fr"  # type: ignore[attr-defined]


def test_texts_are_bounded() -> None:
    assert len(parse(caption="x" * 10_000).caption) == MAX_CAPTION  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "content",
    ["", "no json here", '{"caption": 3}', json.dumps({**ANSWER, "caption": "\x00 "})],
)
def test_what_is_not_a_caption_is_malformed(content: str) -> None:
    with pytest.raises(Malformed):
        parse_caption(content, language="en", hashtag_count=2)


def test_a_vector_is_read_from_json_numbers_or_base64_float32() -> None:
    floats = [0.5, -1.25, 3.0]
    packed = base64.b64encode(struct.pack("<3f", *floats)).decode()
    assert embedding._floats(packed) == floats
    assert embedding._floats([1, "2.5"]) == [1.0, 2.5]
    with pytest.raises(ValueError, match="float32"):
        embedding._floats(base64.b64encode(b"12345").decode())
    with pytest.raises(binascii.Error):
        embedding._floats("not base64!")
