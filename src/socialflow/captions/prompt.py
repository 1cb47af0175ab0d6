"""The caption prompt (versioned: each result stores the version that wrote it), the answer's
JSON schema, and a parser that takes what a model returns without trusting it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

PROMPT_VERSION = "c1"
MAX_CAPTION = 2_200  # Instagram's limit, the tightest of the networks
MAX_ALT_TEXT = 1_000
MAX_DESCRIPTION = 4_000

CAPTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "caption": {"type": "string"},
        "alt_text": {"type": "string"},
        "description": {"type": "string"},
        "hashtags": {"type": "array", "items": {"type": "string"}},
        "language": {"type": "string"},
    },
    "required": ["caption", "alt_text", "description", "hashtags", "language"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "media_caption", "schema": CAPTION_SCHEMA, "strict": True},
}

_SYSTEM = """You write social media content for a brand's media library.
Look at the image and answer with one JSON object with exactly these keys:
- "caption": an engaging post caption, at most {max_caption} characters, without hashtags;
- "alt_text": a factual description for people using screen readers, at most 250 characters;
- "description": a detailed description of everything visible (people, objects, setting,
  colours, text in the image, mood), for search, at most 1500 characters;
- "hashtags": a list of exactly {hashtags} relevant hashtags, each starting with #;
- "language": the BCP 47 code of the language you wrote in.
Write everything in the language {language}.{voice}
Answer with the JSON object only."""


@dataclass(frozen=True)
class CaptionPrompt:
    language: str
    hashtag_count: int
    brand_voice: str | None = None
    instructions: str | None = None  # a member's own, on regenerate

    def messages(
        self, image_data_url: str, *, kind: str, title: str | None, tags: list[str]
    ) -> list[dict[str, Any]]:
        voice = f"\nThe brand's voice: {self.brand_voice}" if self.brand_voice else ""
        system = _SYSTEM.format(
            max_caption=MAX_CAPTION,
            hashtags=self.hashtag_count,
            language=self.language,
            voice=voice,
        )
        about = "a frame of a video" if kind == "video" else "an image"
        lines = [f"Write the caption for {about} from the library."]
        if title:
            lines.append(f"Its title: {title}")
        if tags:
            lines.append(f"Its tags: {', '.join(tags)}")
        if self.instructions:
            lines.append(f"Instructions for this caption: {self.instructions}")
        return [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "\n".join(lines)},
                    {"type": "image_url", "image_url": {"url": image_data_url}},
                ],
            },
        ]

    def text_length(self, title: str | None = None, tags: list[str] | None = None) -> int:
        """The prompt's text bytes at most (its part of the call's upper bound), with the
        item's title and tags."""
        extra = sum(
            len(part.encode())
            for part in (self.brand_voice, self.instructions, title, *(tags or []))
            if part
        )
        return len(_SYSTEM.encode()) + 600 + 2 * len(tags or []) + extra


class Malformed(ValueError):
    """The model's answer is not the caption object asked for."""


class _Answer(msgspec.Struct):
    caption: Annotated[str, msgspec.Meta(min_length=1)]
    alt_text: str
    description: str
    hashtags: list[str]
    language: str = ""


@dataclass(frozen=True)
class Caption:
    caption: str
    alt_text: str
    description: str
    hashtags: list[str]
    language: str


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
_TAG_CHARS = re.compile(r"[^\w]", re.UNICODE)
_LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8}){0,2}\Z")
MAX_LANGUAGE = 16  # the column's length
# Control characters (NUL among them, which PostgreSQL text refuses) but newline and tab.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str, limit: int) -> str:
    """A model's (or an editor's) text as stored: no control characters, trimmed, bounded."""
    return _CONTROL.sub("", text).strip()[:limit]


def parse_caption(content: object, *, language: str, hashtag_count: int) -> Caption:
    """The caption in a model's answer: JSON (in a code fence or with text around it is taken
    too), every field checked, hashtags normalised (#word, no duplicates, at most asked)."""
    if not isinstance(content, str) or not content.strip():
        raise Malformed("the answer is empty")
    body = _FENCE.sub("", content.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise Malformed("the answer holds no JSON object")
    try:
        answer = msgspec.convert(json.loads(body[start : end + 1]), _Answer)
    except (ValueError, msgspec.ValidationError) as exc:
        raise Malformed(f"the answer is not the caption object: {exc}") from None
    tags: list[str] = []
    for raw in answer.hashtags:
        word = _TAG_CHARS.sub("", raw.lstrip("#"))[:99]
        if word and f"#{word}".lower() not in {t.lower() for t in tags}:
            tags.append(f"#{word}")
    said = answer.language.strip()
    caption = clean(answer.caption, MAX_CAPTION)
    if not caption:
        raise Malformed("the caption is empty")
    return Caption(
        caption=caption,
        alt_text=clean(answer.alt_text, MAX_ALT_TEXT),
        description=clean(answer.description, MAX_DESCRIPTION),
        hashtags=tags[:hashtag_count],
        language=said
        if len(said) <= MAX_LANGUAGE and _LANGUAGE.match(said)
        else language[:MAX_LANGUAGE],
    )
