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
    status: str = "valid"  # invalid: the provider refused it; replace it to use it again
    invalid_reason: str | None = None
    invalid_at: datetime | None = None


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


class AISettingsRow(msgspec.Struct):
    """The columns of the tenant's AI settings row."""

    caption_model: str
    embedding_model: str
    embedding_dimension: int
    brand_voice: str | None
    caption_language: str | None
    hashtag_count: int
    embedding_generation: int
    reembed_total: int
    reembed_done: int
    updated_at: datetime


class Reembedding(msgspec.Struct):
    """Progress of the backfill that embeds every item again after a model change."""

    done: int
    total: int
    running: bool


class AISettingsOut(msgspec.Struct):
    caption_model: str
    embedding_model: str
    embedding_dimension: int
    brand_voice: str | None
    caption_language: str | None  # None: the tenant's locale
    hashtag_count: int
    reembedding: Reembedding
    updated_at: datetime


Language = Annotated[
    str, msgspec.Meta(max_length=16, pattern=r"^([a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*)?$")
]


class AISettingsPut(msgspec.Struct, forbid_unknown_fields=True):
    caption_model: ModelName | None = None
    embedding_model: ModelName | None = None
    embedding_dimension: Annotated[int, msgspec.Meta(ge=1, le=16000)] | None = None
    brand_voice: Annotated[str, msgspec.Meta(max_length=1000)] | None = None  # "" clears it
    caption_language: Language | None = None  # "" follows the tenant's locale again
    hashtag_count: Annotated[int, msgspec.Meta(ge=0, le=30)] | None = None


class AIUsageLine(msgspec.Struct):
    operation: str
    model: str
    key_source: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class AIBudgetOut(msgspec.Struct):
    limit_usd: float | None  # None: unlimited
    spent_usd: float  # settled calls of the month, and reservations of calls in flight
    remaining_usd: float | None
    resets_at: datetime | None
    exceeded: bool


class AIUsageOut(msgspec.Struct):
    month: str  # YYYY-MM of the billing period's start
    period_start: datetime
    period_end: datetime
    totals: list[AIUsageLine]
    cost_usd: float
    calls: int
    budget: AIBudgetOut
