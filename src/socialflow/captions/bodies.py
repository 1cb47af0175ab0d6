"""Request bodies of the caption endpoints (the caption is shown as media.bodies.CaptionOut)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from socialflow.ai.bodies import ModelName
from socialflow.captions.prompt import MAX_ALT_TEXT, MAX_CAPTION, MAX_DESCRIPTION

# A hashtag as stored: "#" then letters, digits or underscores.
Hashtag = Annotated[str, msgspec.Meta(min_length=2, max_length=100, pattern=r"^#\w+\Z")]


class CaptionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Ask for a new caption: extra instructions for this one, another (vision) model."""

    prompt: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    model: ModelName | None = None


class CaptionPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An editor's caption: the fields given replace the generated ones (null clears)."""

    caption: Annotated[str, msgspec.Meta(max_length=MAX_CAPTION)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    alt_text: Annotated[str, msgspec.Meta(max_length=MAX_ALT_TEXT)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    description: (
        Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    hashtags: Annotated[list[Hashtag], msgspec.Meta(max_length=30)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
