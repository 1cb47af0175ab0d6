"""Plans use cases: the catalogue (operators), a tenant's entitlements (its agency's admins,
operators) and usage views. Never commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.directory import TENANT_SELECT, TenantDirectory, TenantRef
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess, tenant_limit
from socialflow.audit.record import record_change
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.lib.rate_limits import current_counts
from socialflow.plans import quota
from socialflow.plans.bodies import (
    EntitlementsOut,
    EntitlementsUpdate,
    OverLimit,
    PlanCreate,
    PlanOut,
    PlanUpdate,
    ResourceUsage,
    TenantUsageOut,
)
from socialflow.plans.events import EntitlementsChanged, PlanCreated, PlanUpdated
from socialflow.plans.limits import (
    FIELDS,
    MAY_BE_UNLIMITED,
    MONEY_PLACES,
    OPERATOR_ONLY,
    Limits,
    Resource,
)
from socialflow.plans.models import Plan, TenantEntitlements
from socialflow.plans.quota import QuotaTenant

PLAN_COLUMNS = ("display_name", *FIELDS)


# -- the catalogue --------------------------------------------------------------------------


def _plan_out(plan: Plan) -> PlanOut:
    values = {name: getattr(plan, name) for name in PLAN_COLUMNS}
    money = values["ai_spend_usd_per_month"]
    values["ai_spend_usd_per_month"] = None if money is None else float(money)
    return msgspec.convert(
        {**values, "name": plan.name, "created_at": plan.created_at, "updated_at": plan.updated_at},
        PlanOut,
    )


def _column_values(values: dict[str, Any]) -> dict[str, Any]:
    """Body values as the columns hold them (dollars to cents precision)."""
    money = values.get("ai_spend_usd_per_month")
    if money is not None:
        values["ai_spend_usd_per_month"] = Decimal(str(money)).quantize(MONEY_PLACES)
    return values


async def list_plans(session: AsyncSession) -> list[PlanOut]:
    plans = await session.execute(select(Plan).order_by(Plan.name))
    return [_plan_out(plan) for plan in plans.scalars()]


async def get_plan(session: AsyncSession, name: str) -> PlanOut:
    plan = await session.get(Plan, name)
    if plan is None:
        raise Problem(404, "not-found", f"No plan {name!r}.")
    return _plan_out(plan)


async def create_plan(
    session: AsyncSession,
    directory: TenantDirectory,
    principal: Principal,
    data: PlanCreate,
) -> PlanOut:
    values = _column_values(msgspec.structs.asdict(data))
    created = await session.execute(
        insert(Plan).values(**values).on_conflict_do_nothing().returning(Plan.name)
    )
    if created.scalar_one_or_none() is None:
        raise Problem(409, "plan-exists", f"A plan {data.name!r} exists.")
    limits = msgspec.to_builtins(msgspec.structs.asdict(data))
    await record_change(session, principal, PlanCreated(name=data.name, limits=limits), tenant=None)
    return await get_plan(session, data.name)


async def update_plan(
    session: AsyncSession,
    directory: TenantDirectory,
    principal: Principal,
    name: str,
    data: PlanUpdate,
) -> PlanOut:
    """Change a plan's limits: every tenant on it gets them (its overrides still win). A limit
    lowered below what a tenant uses blocks that tenant's new use of it."""
    plan = (
        # FOR NO KEY UPDATE: tenants provisioned on the plan meanwhile (their foreign key
        # takes a key-share lock) are not blocked.
        await session.execute(select(Plan).where(Plan.name == name).with_for_update(key_share=True))
    ).scalar_one_or_none()
    if plan is None:
        raise Problem(404, "not-found", f"No plan {name!r}.")
    changes = _column_values(
        {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    )
    changes = {k: v for k, v in changes.items() if getattr(plan, k) != v}
    if not changes:
        return _plan_out(plan)
    before = {k: _shown(getattr(plan, k)) for k in changes}
    for column, value in changes.items():
        setattr(plan, column, value)
    plan.updated_at = datetime.now(UTC)
    await session.flush()
    after = {k: _shown(v) for k, v in changes.items()}
    await record_change(
        session, principal, PlanUpdated(name=name, before=before, after=after), tenant=None
    )
    # Every tenant's cached rate limit may come from this plan.
    directory.changed_all(session)
    return _plan_out(plan)


def _shown(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


async def seed_plans(session: AsyncSession, catalogue: dict[str, dict[str, Any]]) -> list[str]:
    """Add the plans of `catalogue` (settings: PLAN_CATALOGUE) that do not exist yet; plans
    already there are the operators' and stay as they are. Returns the names added."""
    added = []
    for name, limits in catalogue.items():
        try:
            data = msgspec.convert({**limits, "name": name}, PlanCreate)
        except msgspec.ValidationError as exc:
            raise ValueError(f"PLAN_CATALOGUE: plan {name!r}: {exc}") from exc
        inserted = await session.execute(
            insert(Plan)
            .values(**_column_values(msgspec.structs.asdict(data)))
            .on_conflict_do_nothing()
            .returning(Plan.name)
        )
        if inserted.scalar_one_or_none() is not None:
            added.append(name)
    return added


async def require_plan(session: AsyncSession, name: str) -> None:
    """422 unless `name` is a plan of the catalogue."""
    if await session.get(Plan, name) is None:
        names = (await session.execute(select(Plan.name).order_by(Plan.name))).scalars()
        raise Problem(
            422,
            "invalid-plan",
            f"Plan must be one of {', '.join(names)}.",
            errors=[{"field": "plan", "message": "unknown plan"}],
        )


# -- a tenant's entitlements ----------------------------------------------------------------


async def start_billing(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """A new tenant's entitlements row: no overrides, billed from today's day of the month."""
    await session.execute(
        insert(TenantEntitlements)
        .values(tenant_id=tenant_id, billing_anchor_day=datetime.now(UTC).day)
        .on_conflict_do_nothing()
    )


def _overrides_shown(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: "unlimited" if v is None else v for k, v in sorted(overrides.items())}


def _limits_shown(limits: Limits) -> dict[str, Any]:
    return {k: _shown(v) if isinstance(v, Decimal) else v for k, v in limits.values.items()}


async def over_limit(session: AsyncSession, tenant: QuotaTenant) -> list[OverLimit]:
    """The resources of which the tenant uses more than its limits now allow."""
    _, quotas = await quota.usage(session, tenant)
    return [_over(q) for q in quotas if q.over_limit]


def _over(q: quota.Quota) -> OverLimit:
    limit, used = quota.number(q.resource, q.limit), quota.number(q.resource, q.used)
    assert limit is not None
    assert used is not None
    return OverLimit(q.resource.value, limit, used)


async def read_entitlements(session: AsyncSession, access: TenantAccess) -> EntitlementsOut:
    entitlements = await quota.entitlements_for(session, access.tenant)
    row = await session.get(TenantEntitlements, access.tenant.id)
    return EntitlementsOut(
        tenant=access.tenant.slug,
        plan=entitlements.limits.plan,
        limits=_limits_shown(entitlements.limits),
        overrides=_overrides_shown(row.overrides if row else {}),
        billing_anchor_day=entitlements.anchor_day,
        over_limit=await over_limit(session, access.tenant),
    )


async def update_entitlements(
    session: AsyncSession,
    directory: TenantDirectory,
    access: TenantAccess,
    data: EntitlementsUpdate,
) -> EntitlementsOut:
    """Set or remove overrides (and the billing anchor day): audited, with an event. Lowering
    a limit below what is used is allowed; the answer's `over_limit` names what it blocks."""
    tenant = access.tenant
    await start_billing(session, tenant.id)
    row = (
        await session.execute(
            select(TenantEntitlements)
            .where(TenantEntitlements.tenant_id == tenant.id)
            .with_for_update()
        )
    ).scalar_one()
    overrides = dict(row.overrides)
    for name, value in msgspec.structs.asdict(data.overrides).items():
        if value is msgspec.UNSET:
            continue
        if name in OPERATOR_ONLY and not access.principal.is_operator:
            raise Problem(403, "forbidden", f"Only platform operators may override {name}.")
        if value is None:
            overrides.pop(name, None)
        elif value == "unlimited":
            if name not in MAY_BE_UNLIMITED:
                raise Problem(422, "validation-error", f"{name} cannot be unlimited.")
            overrides[name] = None
        elif name == "ai_spend_usd_per_month":
            overrides[name] = float(Decimal(str(value)).quantize(MONEY_PLACES))
        else:
            overrides[name] = value
    before = {"overrides": _overrides_shown(row.overrides), "anchor": row.billing_anchor_day}
    anchor = row.billing_anchor_day
    if data.billing_anchor_day is not msgspec.UNSET:
        anchor = data.billing_anchor_day
    after = {"overrides": _overrides_shown(overrides), "anchor": anchor}
    if after != before:
        row.overrides = overrides
        row.billing_anchor_day = anchor
        row.updated_at = datetime.now(UTC)
        await session.flush()
        changed = EntitlementsChanged(
            tenant_id=tenant.id,
            slug=tenant.slug,
            before={"overrides": before["overrides"], "billing_anchor_day": before["anchor"]},
            after={"overrides": after["overrides"], "billing_anchor_day": after["anchor"]},
        )
        await record_change(
            session,
            access.principal,
            changed,
            tenant=tenant.slug,
            tenant_id=tenant.id,
            agency_id=tenant.agency_id,
        )
        directory.changed(session, tenant.slug)  # its rate limit may have changed
    return await read_entitlements(session, access)


# -- usage ----------------------------------------------------------------------------------


async def tenant_usage(
    session: AsyncSession, tenant: TenantRef, *, rate_used: int = 0
) -> TenantUsageOut:
    """Every resource of the tenant against its limit; `rate_used` is this minute's requests
    (the rate limiter's count)."""
    entitlements, quotas = await quota.usage(session, tenant)
    period_start, period_end = await quota.current_period(session, tenant, entitlements)
    resources = []
    for q in quotas:
        used = Decimal(rate_used) if q.resource is Resource.API_REQUESTS_PER_MINUTE else q.used
        shown = quota.Quota(q.resource, q.limit, used, q.resets_at)
        resources.append(
            ResourceUsage(
                resource=q.resource.value,
                measure=q.resource.measure.value,
                limit=quota.number(q.resource, shown.limit),
                used=quota.number(q.resource, shown.used) or 0,
                remaining=quota.number(q.resource, shown.remaining),
                resets_at=q.resets_at,
            )
        )
    return TenantUsageOut(
        tenant=tenant.slug,
        plan=entitlements.limits.plan,
        period_start=period_start,
        period_end=period_end,
        resources=resources,
        over_limit=[_over(q) for q in quotas if q.over_limit],
    )


# An agency's live tenants, by slug.
AGENCY_TENANTS = text(
    TENANT_SELECT + "JOIN shared.agencies a ON a.id = t.agency_id "
    "WHERE a.slug = :agency AND t.status IN ('active', 'suspended') "
    "AND (CAST(:after AS text) IS NULL OR t.slug > :after) ORDER BY t.slug LIMIT :limit"
)
AGENCY_ADMIN = text("""
SELECT a.id, EXISTS (SELECT 1 FROM shared.agency_admins aa
                     WHERE aa.agency_id = a.id AND aa.user_id = :user)
FROM shared.agencies a WHERE a.slug = :agency
""")


async def usage_of(session: AsyncSession, redis: Redis, tenant: TenantRef) -> TenantUsageOut:
    (rate_used,) = await current_counts(redis, [tenant_limit(tenant).scope])
    return await tenant_usage(session, tenant, rate_used=rate_used)


async def agency_usage(
    session: AsyncSession, redis: Redis, principal: Principal, agency: str, page: PageRequest
) -> list[TenantUsageOut]:
    """Usage against limits of each live tenant of the agency (its admins, operators), by
    slug; one more than the page."""
    found = (
        await session.execute(AGENCY_ADMIN, {"agency": agency, "user": principal.user_id})
    ).one_or_none()
    if found is None or not (principal.is_operator or found[1]):
        # An agency the caller does not administer is as good as absent.
        raise Problem(404, "not-found", f"No agency {agency!r}.")
    params = {
        "agency": agency,
        "after": page.after[0] if page.after else None,
        "limit": page.limit + 1,
    }
    tenants = [TenantRef(*row) for row in await session.execute(AGENCY_TENANTS, params)]
    rates = await current_counts(redis, [tenant_limit(tenant).scope for tenant in tenants])
    return [
        await tenant_usage(session, tenant, rate_used=rate)
        for tenant, rate in zip(tenants, rates, strict=True)
    ]
