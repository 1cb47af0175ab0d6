"""Request and response bodies of the BYOK key and AI settings endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[\w.:/@\-]+$")]


class AIKeyPut(msgspec.Struct, forbid_unknown_fields=True):
    api_key: Annotated[str, msgspec.Meta(min_length=8, max_length=500)]
    label: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    base_url: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    api_version: Annotated[str, msgspec.Meta(max_length=32)] | None = None


class AIKeyOut(msgspec.Struct):
    provider: str
    label: str | None
    last4: str
    fingerprint: str
    base_url: str | None
    api_version: str | None
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None


class AIKeyList(msgspec.Struct):
    items: list[AIKeyOut]
    next_cursor: str | None = None


class AIKeyTest(msgspec.Struct, forbid_unknown_fields=True):
    model: ModelName | None = None


class AIKeyTestResult(msgspec.Struct):
    ok: bool
    provider: str
    model: str
    latency_ms: float
    error_type: str | None = None
    status_code: int | None = None
    message: str | None = None


class AISettingsOut(msgspec.Struct):
    caption_model: str
    embedding_model: str
    embedding_dimension: int
    updated_at: datetime


class AISettingsPut(msgspec.Struct, forbid_unknown_fields=True):
    caption_model: ModelName | None = None
    embedding_model: ModelName | None = None
    embedding_dimension: Annotated[int, msgspec.Meta(ge=1, le=16000)] | None = None
