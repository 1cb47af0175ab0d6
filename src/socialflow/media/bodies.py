"""Request and response bodies of the media library."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

# A name as the user's device gave it: no path, no control characters.
Filename = Annotated[
    str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[^/\\\x00-\x1f\x7f]+$")
]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f\x7f]+$")]
Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
Title = Annotated[str, msgspec.Meta(max_length=300)]
AltText = Annotated[str, msgspec.Meta(max_length=5000)]


class UploadCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    filename: Filename
    content_type: Annotated[str, msgspec.Meta(min_length=3, max_length=100)]
    size: Annotated[int, msgspec.Meta(ge=1, le=2**40)]
    sha256: Sha256 | None = None
    title: Title | None = None
    alt_text: AltText | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=50)] = msgspec.field(default_factory=list)


class UploadInstructions(msgspec.Struct):
    url: str
    method: str
    headers: dict[str, str]


class UploadOut(msgspec.Struct, kw_only=True):
    media_id: str
    status: str
    upload: UploadInstructions | None = None  # None: nothing to upload (a duplicate)
    expires_at: datetime | None = None
    duplicate_of: str | None = None


class FocalPoint(msgspec.Struct, forbid_unknown_fields=True):
    x: Unit
    y: Unit


class MediaPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(max_length=300)] | msgspec.UnsetType | None = msgspec.UNSET
    alt_text: Annotated[str, msgspec.Meta(max_length=5000)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    tags: Annotated[list[Tag], msgspec.Meta(max_length=50)] | msgspec.UnsetType = msgspec.UNSET
    focal_point: FocalPoint | msgspec.UnsetType | None = msgspec.UNSET


class Derivative(msgspec.Struct, kw_only=True):
    name: str
    format: str
    width: int
    height: int
    size: int
    url: str | None = None  # short-lived; on a single item's answer


class CaptionOut(msgspec.Struct, kw_only=True):
    """The item's AI caption: `state` says whether there is one (generated, edited) or why not
    (pending, not_configured, budget_exceeded, key_invalid, refused, failed; `reason`)."""

    state: str
    caption: str | None = None
    alt_text: str | None = None
    description: str | None = None
    hashtags: list[str] = msgspec.field(default_factory=list)
    language: str | None = None
    model: str | None = None
    prompt_version: str | None = None
    reason: str | None = None
    generated_at: datetime | None = None


class MediaOut(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    status: str
    filename: str
    content_type: str
    size: int
    created_at: datetime
    updated_at: datetime
    uploaded_by: str
    sha256: str | None = None
    detected_format: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    codecs: str | None = None
    dominant_color: str | None = None
    blurhash: str | None = None
    title: str | None = None
    alt_text: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    focal_point: FocalPoint | None = None
    failure_reason: str | None = None
    derivatives: list[Derivative] = msgspec.field(default_factory=list)
    original_url: str | None = None  # short-lived; on a single item's answer
    # Near-duplicates (perceptual hash within MEDIA_SIMILAR_MAX_DISTANCE), nearest first; on a
    # single item's answer.
    similar: list[str] = msgspec.field(default_factory=list)
    caption: CaptionOut | None = None  # None: never asked for
    embedding_state: str | None = None


class MediaList(msgspec.Struct):
    items: list[MediaOut]
    next_cursor: str | None = None


def derivative_list(derivatives: dict[str, Any]) -> list[Derivative]:
    return [
        Derivative(
            name=name, format=d["format"], width=d["width"], height=d["height"], size=d["size"]
        )
        for name, d in sorted(derivatives.items())
    ]


class VariantOut(msgspec.Struct, kw_only=True):
    profile: str
    width: int
    height: int
    url: str  # short-lived
    focal_point: FocalPoint


class UsageFigure(msgspec.Struct, kw_only=True):
    limit: int | None  # None: unlimited
    used: int
    remaining: int | None


class MediaUsageOut(msgspec.Struct, kw_only=True):
    storage_bytes: UsageFigure
    media_items: UsageFigure
    by_status: dict[str, int]
    by_kind: dict[str, int]
