"""A tenant's AI usage of a billing period: the ledger's calls totalled by operation, model and
key source, and the state of its monthly budget."""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.ai.bodies import AIBudgetOut, AIUsageLine, AIUsageOut
from socialflow.ai.models import AIUsage
from socialflow.lib.problems import Problem
from socialflow.plans import quota
from socialflow.plans.limits import Resource
from socialflow.plans.quota import QuotaTenant

_MONTH = re.compile(r"^(20\d\d)-(0[1-9]|1[0-2])\Z")  # 2000-01 … 2099-12


async def period_of(
    session: AsyncSession, tenant: QuotaTenant, month: str | None
) -> tuple[datetime, datetime]:
    """The billing period starting in `month` (YYYY-MM, in the tenant's time zone, on its
    anchor day); the current one without a month."""
    entitlements = await quota.entitlements_for(session, tenant)
    current = await quota.current_period(session, tenant, entitlements)
    if month is None:
        return current
    found = _MONTH.match(month)
    if found is None:
        raise Problem(
            422,
            "validation-error",
            f"month must be YYYY-MM (2000 to 2099), not {month[:20]!r}.",
            errors=[{"field": "month", "message": "YYYY-MM"}],
        )
    zone = await quota.tenant_zone(session, tenant)
    if current[0].astimezone(zone).strftime("%Y-%m") == month:
        return current
    year, number = int(found.group(1)), int(found.group(2))
    day = min(entitlements.anchor_day, calendar.monthrange(year, number)[1])
    return quota.billing_period(
        datetime(year, number, day, tzinfo=zone), entitlements.anchor_day, zone
    )


async def usage(session: AsyncSession, tenant: QuotaTenant, month: str | None) -> AIUsageOut:
    start, end = await period_of(session, tenant, month)
    rows = (
        await session.execute(
            select(
                AIUsage.operation,
                AIUsage.model,
                AIUsage.key_source,
                func.count(),
                func.coalesce(func.sum(AIUsage.prompt_tokens), 0),
                func.coalesce(func.sum(AIUsage.completion_tokens), 0),
                func.coalesce(func.sum(AIUsage.cost_usd), 0),
            )
            .where(AIUsage.created_at >= start, AIUsage.created_at < end)
            .group_by(AIUsage.operation, AIUsage.model, AIUsage.key_source)
            .order_by(AIUsage.operation, AIUsage.model, AIUsage.key_source)
        )
    ).all()
    totals = [
        AIUsageLine(
            operation=op,
            model=model,
            key_source=source,
            calls=int(calls),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            cost_usd=float(cost),
        )
        for op, model, source, calls, prompt, completion, cost in rows
    ]
    spend = await quota.quota_of(session, tenant, Resource.AI_SPEND_USD_PER_MONTH, now=start)
    cost = sum((Decimal(str(line.cost_usd)) for line in totals), Decimal(0))
    return AIUsageOut(
        month=start.astimezone(await quota.tenant_zone(session, tenant)).strftime("%Y-%m"),
        period_start=start,
        period_end=end,
        totals=totals,
        cost_usd=float(cost),
        calls=sum(line.calls for line in totals),
        budget=AIBudgetOut(
            limit_usd=None if spend.limit is None else float(spend.limit),
            spent_usd=float(spend.used),
            remaining_usd=None if spend.remaining is None else float(spend.remaining),
            resets_at=end,
            exceeded=spend.limit is not None and spend.used >= spend.limit,
        ),
    )
