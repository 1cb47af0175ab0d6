"""Captioning one media item: a vision call through litellm with the tenant's credentials, in
three steps so no transaction is held while the provider thinks:

1. (transaction) the item, the tenant's settings and key; the rate limit; the budget the call
   will reserve against; the item's state `pending`;
2. (no transaction) the budget's reservation of the call's upper bound with its ledger row (one
   statement: ai.ledger); the call, with the item's 640 px JPEG as a data URL (never a URL:
   the provider cannot fetch ours, and a signed one must not leave the platform); the
   reservation settled to the reported cost (one statement);
3. (transaction) the caption (or the state that says why there is none) on the item with
   `media.captioned`, the event recorded processed.

Retries (the provider's 429 / 5xx / timeouts, the tenant's rate limit, one malformed answer)
end step 3 without recording the event: the message comes back after the delay and its
ledger rows count the attempts made.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.ai import ledger
from socialflow.ai.calls import acompletion
from socialflow.ai.credentials import ProviderCredentials
from socialflow.ai.pricing import IMAGE_TOKENS_BOUND, ModelFacts
from socialflow.ai.services import SYSTEM_AI
from socialflow.audit.record import record_change
from socialflow.captions import calling
from socialflow.captions.calling import NoCall, Retry
from socialflow.captions.events import MediaCaptioned
from socialflow.captions.prompt import (
    PROMPT_VERSION,
    RESPONSE_FORMAT,
    Caption,
    CaptionPrompt,
    Malformed,
    clean,
    parse_caption,
)
from socialflow.db.rows import fetch_rows
from socialflow.media.models import MediaItem
from socialflow.media.storage import StorageError, media_storage
from socialflow.outbox.events import Event
from socialflow.plans.quota import TenantKey
from socialflow.resources import Resources
from socialflow.workers.actors import EventSteps

log = structlog.get_logger(__name__)

OPERATION = "caption"
IMAGE_DERIVATIVE = "small_jpeg"  # 640 px: what a vision model needs to caption, at low cost
MALFORMED_TRIES = 2  # a malformed answer is asked again once

_SETTINGS = text(
    "SELECT a.caption_model, a.brand_voice, a.caption_language, a.hashtag_count, s.locale "
    "FROM ai_settings a CROSS JOIN settings s WHERE a.id = 1 AND s.id = 1"
)


@dataclass(frozen=True)
class Plan:
    """A call ready to be made (step 1's result)."""

    tenant: TenantKey
    media_id: uuid.UUID
    kind: str
    image_key: str
    title: str | None
    tags: list[str]
    model: str
    credentials: ProviderCredentials
    facts: ModelFacts
    prompt: CaptionPrompt
    structured: bool
    spend: calling.Spend


@dataclass(frozen=True)
class Answer:
    """What the call returned (step 2's result)."""

    caption: Caption | None = None
    refusal: str | None = None
    malformed: str | None = None
    unreadable: str | None = None  # no call was made: the image is not in the store
    failure: calling.Failure | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False
    latency_ms: float = 0.0


async def caption_item(steps: EventSteps, event: Event, resources: Resources) -> Retry | None:
    """The caption actor's work for one event; a Retry when the message must come back."""
    async with steps.stage():
        async with steps.transaction() as session:
            if await steps.already_processed(session):
                return None
            prepared = await _prepare(session, steps, event, resources)
        if not isinstance(prepared, Plan):
            return prepared
        reservation = await calling.reserve(resources, prepared.tenant, event, prepared.spend)
        if isinstance(reservation, Retry):
            return reservation
        if isinstance(reservation, NoCall):
            async with steps.transaction() as session:
                await _not_reserved(session, steps, plan=prepared, why=reservation)
            return None
    answer = await _call(prepared, resources)
    async with steps.stage():
        settlement = _settlement(prepared, reservation, answer)
        await ledger.settle(resources.engine, prepared.tenant, reservation, settlement)
        async with steps.transaction() as session:
            return await _finish(session, steps, event, resources, plan=prepared, answer=answer)


async def _not_reserved(
    session: AsyncSession, steps: EventSteps, *, plan: Plan, why: NoCall
) -> None:
    item = await session.get(MediaItem, plan.media_id, with_for_update=True)
    if item is None or item.deleted_at is not None or item.caption_state == "edited":
        await steps.complete(session)
        return
    await _no_call(session, steps, tenant=plan.tenant, item=item, why=why, model=plan.model)


async def _prepare(
    session: AsyncSession, steps: EventSteps, event: Event, resources: Resources
) -> Plan | Retry | None:
    media_id = uuid.UUID(str(event.payload["media_id"]))
    item = await session.get(MediaItem, media_id)
    if item is None or item.deleted_at is not None or item.status != "ready":
        await steps.complete(session)  # nothing to caption (deleted, failed)
        return None
    if item.caption_state == "edited":
        # An editor wrote the caption after this was asked for (a request sets `pending`):
        # theirs stands, and no call is paid for.
        await steps.complete(session)
        return None
    item.caption_state = item.caption_state or "pending"  # shown while it waits (a retry)
    tenant = calling.tenant_of(steps)
    planned = await _plan(session, event, resources, tenant, item)
    if isinstance(planned, NoCall):
        model = str(event.payload.get("model") or "") or None
        await _no_call(session, steps, tenant=tenant, item=item, why=planned, model=model)
        return None
    if isinstance(planned, Plan):
        item.caption_state = "pending"
        item.caption_reason = None
    return planned


async def _plan(
    session: AsyncSession,
    event: Event,
    resources: Resources,
    tenant: TenantKey,
    item: MediaItem,
) -> Plan | Retry | NoCall:
    ((caption_model, brand_voice, caption_language, hashtag_count, locale),) = await fetch_rows(
        session, _SETTINGS
    )
    model = str(event.payload.get("model") or caption_model)
    if IMAGE_DERIVATIVE not in (item.derivatives or {}):
        return NoCall("failed", "The item has no image to caption.")
    credentials = await calling.credentials(session, resources, tenant, model)
    if isinstance(credentials, NoCall):
        return credentials
    facts = calling.facts_for(credentials, model, "chat", vision=True)
    if isinstance(facts, NoCall):
        return facts
    wait = await calling.rate_wait(resources, tenant, OPERATION)
    if wait is not None:
        return wait
    prompt = CaptionPrompt(
        language=caption_language or locale or "en",
        hashtag_count=hashtag_count,
        brand_voice=brand_voice,
        instructions=event.payload.get("prompt") or None,
    )
    max_tokens = resources.settings.ai_caption_max_tokens
    text_bytes = prompt.text_length(item.title, list(item.tags or []))
    bound = facts.cost(text_bytes + IMAGE_TOKENS_BOUND, max_tokens)
    spend = await calling.spend(
        session, resources, tenant, event, OPERATION, credentials, facts.name, bound, item.id
    )
    return Plan(
        tenant=tenant,
        media_id=item.id,
        kind=item.kind,
        image_key=str(item.derivatives[IMAGE_DERIVATIVE]["key"]),
        title=item.title,
        tags=list(item.tags or []),
        model=model,
        credentials=credentials,
        facts=facts,
        prompt=prompt,
        structured=_supports_schema(facts),
        spend=spend,
    )


def _supports_schema(facts: ModelFacts) -> bool:
    import litellm

    if not facts.known:
        return False
    try:
        return bool(litellm.supports_response_schema(model=facts.name))
    except Exception:  # litellm raises for models it half knows
        return False


async def _call(plan: Plan, resources: Resources) -> Answer:
    storage = media_storage(resources.settings)
    try:
        image = await asyncio.to_thread(_read_all, storage, plan.image_key)
    except (OSError, StorageError):
        return Answer(unreadable="The item's image could not be read from the store.")
    data_url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    messages = plan.prompt.messages(data_url, kind=plan.kind, title=plan.title, tags=plan.tags)
    params: dict[str, Any] = {"max_tokens": resources.settings.ai_caption_max_tokens}
    if plan.structured:
        params["response_format"] = RESPONSE_FORMAT
    started = time.perf_counter()
    try:
        response = await acompletion(
            plan.credentials,
            resources.settings,
            model=plan.model,
            messages=messages,
            timeout_s=resources.settings.ai_call_timeout_s,
            **params,
        )
    except Exception as exc:
        return Answer(
            failure=calling.failure_of(exc, plan.credentials),
            latency_ms=_ms(started),
        )
    usage = getattr(response, "usage", None)
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    counted: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usage_reported": usage is not None and prompt_tokens + completion_tokens > 0,
        "latency_ms": _ms(started),
    }
    message = response.choices[0].message if getattr(response, "choices", None) else None
    refusal = getattr(message, "refusal", None)
    if isinstance(refusal, str) and clean(refusal, 500):
        return Answer(refusal=clean(refusal, 500), **counted)
    try:
        caption = parse_caption(
            getattr(message, "content", None),
            language=plan.prompt.language,
            hashtag_count=plan.prompt.hashtag_count,
        )
    except Malformed as exc:
        return Answer(malformed=str(exc)[:200], **counted)
    return Answer(caption=caption, **counted)


def _read_all(storage: Any, key: str) -> bytes:
    with storage.open_read(key) as fp:
        data: bytes = fp.read()
    return data


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


async def _finish(
    session: AsyncSession,
    steps: EventSteps,
    event: Event,
    resources: Resources,
    *,
    plan: Plan,
    answer: Answer,
) -> Retry | None:
    item = await session.get(MediaItem, plan.media_id, with_for_update=True)
    if item is None or item.deleted_at is not None or item.caption_state == "edited":
        await steps.complete(session)  # gone, or edited by hand during the call: theirs stands
        return None
    verdict = await _judge(session, event, resources, plan=plan, answer=answer)
    if isinstance(verdict, Retry):
        return verdict
    if isinstance(verdict, NoCall):
        await _no_call(session, steps, tenant=plan.tenant, item=item, why=verdict, model=plan.model)
        return None
    if not await steps.complete(session):
        return None  # a concurrent delivery wrote it
    item.caption_state = "generated"
    item.caption = verdict.caption
    item.caption_alt_text = verdict.alt_text
    item.description = verdict.description
    item.hashtags = verdict.hashtags
    item.caption_language = verdict.language
    item.caption_model = plan.model
    item.caption_prompt_version = PROMPT_VERSION
    item.caption_reason = None
    item.captioned_at = item.updated_at = datetime.now(UTC)
    captioned = MediaCaptioned(
        media_id=item.id,
        state="generated",
        model=plan.model,
        prompt_version=PROMPT_VERSION,
        language=verdict.language,
    )
    await record_change(session, SYSTEM_AI, captioned, tenant=plan.tenant.slug)
    return None


async def _judge(  # noqa: PLR0911 - one return per kind of answer
    session: AsyncSession, event: Event, resources: Resources, *, plan: Plan, answer: Answer
) -> Caption | NoCall | Retry:
    """What the answer means for the item: its caption, a state without one, or try again."""
    failure = answer.failure
    if failure is not None:
        if failure.key_refused:
            return await calling.key_refused(session, plan.tenant, plan.credentials, failure)
        if not failure.transient:
            state = "refused" if failure.kind == "content_refused" else "failed"
            return NoCall(state, failure.message + (f" ({failure.code})" if failure.code else ""))
        tried = await ledger.attempts(session, event_id=event.event_id, operation=OPERATION)
        attempts = tried.get("transient", 0)
        if attempts < resources.settings.ai_max_attempts:
            return Retry(calling.retry_delay_ms(failure, attempts))
        return NoCall("failed", f"{failure.message} (after {attempts} attempts)")
    if answer.unreadable is not None:
        return NoCall("failed", answer.unreadable)
    if answer.refusal is not None:
        return NoCall("refused", answer.refusal)
    if answer.malformed is not None:
        tried = await ledger.attempts(session, event_id=event.event_id, operation=OPERATION)
        if tried.get("malformed", 0) < MALFORMED_TRIES:
            return Retry(500)
        return NoCall("failed", "The model's answer was not a caption, twice.")
    assert answer.caption is not None
    return answer.caption


def _settlement(plan: Plan, reservation: ledger.Reservation, answer: Answer) -> ledger.Settlement:
    if answer.failure is not None:
        return answer.failure.settlement(answer.latency_ms)
    if answer.unreadable is not None:
        return ledger.Settlement("failed", error_type="image_unreadable")
    if answer.usage_reported:
        cost = plan.facts.cost(answer.prompt_tokens, answer.completion_tokens)
        error_type = None
    else:  # no usage in the answer: what was reserved is what it may have cost
        cost, error_type = reservation.amount, "usage_missing"
    outcome = "ok"
    if answer.malformed is not None:
        outcome = "malformed"
    elif answer.refusal is not None:
        outcome = "refused"
    return ledger.Settlement(
        outcome,
        cost=cost,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        latency_ms=answer.latency_ms,
        error_type=error_type,
    )


async def _no_call(
    session: AsyncSession,
    steps: EventSteps,
    *,
    tenant: TenantKey,
    item: MediaItem,
    why: NoCall,
    model: str | None = None,
) -> None:
    """The item gets the state saying why it has no (new) caption, with `media.captioned`."""
    if not await steps.complete(session):
        return
    item.caption_state = why.state
    item.caption_reason = why.reason
    item.updated_at = datetime.now(UTC)
    captioned = MediaCaptioned(media_id=item.id, state=why.state, model=model, reason=why.reason)
    await record_change(session, SYSTEM_AI, captioned, tenant=tenant.slug)
