"""What captioning and embedding share around a provider call: the tenant, its credentials
(or the state that says why there are none), the rate limit, the budget's reservation, and
what a failure means (retry later, the key refused, the content refused, or failed)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.ai import ledger
from socialflow.ai.calls import (
    KEY_REFUSED,
    MESSAGES,
    RETRYABLE,
    log_failure,
    retry_after_s,
    summarise,
)
from socialflow.ai.credentials import ProviderCredentials, credentials_for
from socialflow.ai.pricing import ModelFacts, model_facts, unusable_model
from socialflow.ai.providers import litellm_model, provider_of
from socialflow.ai.rate import wait_ms
from socialflow.ai.services import mark_key_invalid
from socialflow.lib.problems import Problem
from socialflow.outbox.events import Event
from socialflow.plans.quota import TenantKey
from socialflow.resources import Resources
from socialflow.workers.actors import EventSteps

log = structlog.get_logger(__name__)

AI_QUEUE = "ai"
# After a call's timeout, the time its settlement may still take: a reservation of the same
# event older than both belongs to no running call.
CALL_SETTLE_MARGIN_S = 30.0

# Provider error codes a tenant may see in an item's reason (known ones, never free text).
SHOWN_CODES = frozenset(
    {
        "content_policy_violation",
        "content_filter",
        "context_length_exceeded",
        "model_not_found",
        "invalid_image",
        "image_parse_error",
        "insufficient_quota",
        "rate_limit_exceeded",
        "invalid_api_key",
    }
)


@dataclass(frozen=True)
class NoCall:
    """Why no call is made for an item: its state and a sentence for the tenant."""

    state: str
    reason: str


@dataclass(frozen=True)
class Retry:
    """Try again in `delay_ms` (rate limited here or by the provider, or a transient error)."""

    delay_ms: int


def tenant_of(steps: EventSteps) -> TenantKey:
    """The event's tenant, as the step's transaction entered it."""
    entered = steps.tenant
    assert entered is not None, "AI events name their tenant"
    return TenantKey(entered.id, entered.slug, entered.schema_name)


async def credentials(
    session: AsyncSession, resources: Resources, tenant: TenantKey, model: str
) -> ProviderCredentials | NoCall:
    """The tenant's key for `model`'s provider (BYOK first, then the platform's if its plan
    allows), or the state saying why there is none."""
    try:
        return await credentials_for(
            session, resources.vault, resources.settings, tenant, provider_of(model)
        )
    except Problem as problem:
        if problem.kind == "ai-provider-not-configured":
            return NoCall("not_configured", problem.detail)
        if problem.kind == "ai-key-invalid":
            return NoCall("key_invalid", problem.detail)
        raise


def facts_for(
    credentials: ProviderCredentials, model: str, mode: str, *, vision: bool = False
) -> ModelFacts | NoCall:
    """The model's facts, or `failed` saying why it cannot serve (pricing.unusable_model)."""
    why = unusable_model(model, mode, vision=vision)
    if why is not None:
        return NoCall("failed", why)
    facts = model_facts(litellm_model(credentials.provider, model))
    if not facts.known and credentials.source != "tenant":
        # An unpriced model costs the budget nothing: only on the tenant's own key.
        return NoCall("failed", f"The model {model!r} has no known price: use your own key.")
    return facts


async def rate_wait(resources: Resources, tenant: TenantKey, operation: str) -> Retry | None:
    limit = resources.settings.ai_rate_limits_per_minute.get(operation)
    if limit is None or resources.redis is None:
        return None
    delay = await wait_ms(resources.redis, tenant.id, operation, limit)
    return Retry(delay) if delay else None


@dataclass(frozen=True)
class Spend:
    """What a call will reserve of the tenant's budget, and against what (step 1's result)."""

    operation: str
    credentials: ProviderCredentials
    model: str
    amount: Decimal
    media_id: uuid.UUID | None
    allowance: ledger.Allowance


async def spend(  # noqa: PLR0917 - the call's context, each distinct
    session: AsyncSession,
    resources: Resources,
    tenant: TenantKey,
    event: Event,
    operation: str,
    credentials: ProviderCredentials,
    model: str,
    amount: Decimal,
    media_id: uuid.UUID | None,
) -> Spend:
    """In step 1's transaction: give back what a lost delivery of this event reserved, and read
    the budget this call's `amount` will be reserved against once the transaction is over."""
    await ledger.release_abandoned(
        session,
        tenant,
        event_id=event.event_id,
        stale_after_s=resources.settings.ai_reservation_ttl_s,
        call_over_s=resources.settings.ai_call_timeout_s + CALL_SETTLE_MARGIN_S,
    )
    allowance = await ledger.allowance(session, tenant)
    return Spend(operation, credentials, model, amount, media_id, allowance)


async def reserve(
    resources: Resources, tenant: TenantKey, event: Event, spend: Spend
) -> ledger.Reservation | NoCall | Retry:
    """Reserve the call's bound, outside any transaction (ai.ledger says why). Refused while
    a delivery of this same event still holds a reservation (it died mid-call, or a duplicate's
    call is under way): come back once that one is released or settled, instead of failing the
    item for want of what the event itself holds."""
    try:
        return await ledger.reserve_call(
            resources.engine,
            tenant,
            spend.allowance,
            operation=spend.operation,
            model=spend.model,
            key_source="byok" if spend.credentials.source == "tenant" else "platform",
            amount=spend.amount,
            media_id=spend.media_id,
            event_id=event.event_id,
            request_id=str(event.headers.get("request_id") or event.event_id)[:64],
        )
    except ledger.BudgetExceeded as exceeded:
        if await ledger.holds_reservation(resources.engine, tenant, event.event_id):
            window = resources.settings.ai_call_timeout_s + CALL_SETTLE_MARGIN_S
            return Retry(int(window * 1000) + random.randint(0, 1000))  # noqa: S311 - jitter
        return NoCall("budget_exceeded", exceeded.problem.detail)


@dataclass(frozen=True)
class Failure:
    """A failed call: its kind (calls.MESSAGES), whether to try again and when."""

    kind: str
    status: int | None
    retry_after_s: float | None
    code: str | None  # the provider's error code when it is a plain identifier

    @property
    def transient(self) -> bool:
        return self.kind in RETRYABLE

    @property
    def key_refused(self) -> bool:
        return self.kind in KEY_REFUSED

    @property
    def message(self) -> str:
        return MESSAGES[self.kind]

    def settlement(self, latency_ms: float) -> ledger.Settlement:
        """The ledger's record of the failed call: nothing spent."""
        outcome = "transient" if self.transient else "failed"
        if self.key_refused:
            outcome = "key_refused"
        elif self.kind == "content_refused":
            outcome = "refused"
        return ledger.Settlement(outcome, latency_ms=latency_ms, error_type=self.kind)


def failure_of(exc: BaseException, credentials: ProviderCredentials) -> Failure:
    summary = summarise(exc)
    code = getattr(exc, "code", None)
    failure = Failure(
        summary.error_type,
        summary.status_code,
        retry_after_s(exc),
        code if isinstance(code, str) and code in SHOWN_CODES else None,
    )
    log_failure(credentials, summary, exc)
    return failure


def retry_delay_ms(failure: Failure, attempt: int) -> int:
    """Exponential backoff with jitter, never sooner than the provider's Retry-After."""
    backoff = min(1_000 * 2 ** max(attempt - 1, 0), 300_000)
    wanted = max(backoff, int((failure.retry_after_s or 0) * 1000))
    return int(wanted) + random.randint(0, 500)  # noqa: S311 - jitter, not a secret


async def key_refused(
    session: AsyncSession, tenant: TenantKey, credentials: ProviderCredentials, failure: Failure
) -> NoCall:
    """The provider refused the key: the tenant's is marked invalid (event ai_key.invalid);
    the platform's is the operator's to fix (logged as an error)."""
    if credentials.source == "tenant":
        await mark_key_invalid(session, tenant, credentials, failure.kind)
        return NoCall("key_invalid", f"The provider refused the tenant's key: {failure.message}")
    log.error("ai.platform_key_refused", provider=credentials.provider.value)
    return NoCall("failed", "The platform's key for this provider was refused; try later.")
