"""Tenancy use cases: agencies, provisioning in one transaction, lifecycle. Never commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import Text, and_, cast, delete, exists, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.directory import TenantDirectory, TenantRef
from socialflow.access.permissions import Role
from socialflow.access.principal import Principal
from socialflow.access.slugs import validate_new_slug
from socialflow.access.tenant_access import TenantAccess
from socialflow.audit.record import record_change
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.db.tenant_schema import quote_schema, schema_for_tenant
from socialflow.identity import services as identity
from socialflow.lib.pagination import PageRequest
from socialflow.lib.problems import Problem
from socialflow.members.invitations import create_invitation
from socialflow.members.models import Membership
from socialflow.outbox.models import EventHistory, OutboxDeadLetter, OutboxEvent
from socialflow.plans import services as plans
from socialflow.plans.quota import TenantKey
from socialflow.settings import Settings
from socialflow.tenancy.bodies import AgencyAdminOut, AgencyOut, TenantOut, TenantUpdateOut
from socialflow.tenancy.events import (
    AgencyAdminAdded,
    AgencyCreated,
    TenantChange,
    TenantCreated,
    TenantDeleted,
    TenantPurged,
    TenantRestored,
    TenantResumed,
    TenantSuspended,
    TenantUpdated,
)
from socialflow.tenancy.fleet.ddl import create_tenant_schema
from socialflow.tenancy.fleet.models import TenantSchemaMigration
from socialflow.tenancy.models import Agency, AgencyAdmin, Tenant
from socialflow.vault.service import Vault

# -- agencies -------------------------------------------------------------------------------


def _agency_out(agency: Agency) -> AgencyOut:
    return AgencyOut(str(agency.id), agency.slug, agency.name, agency.created_at)


async def create_agency(
    session: AsyncSession, principal: Principal, *, slug: str, name: str
) -> AgencyOut:
    validate_new_slug(slug, what="agency")
    if (await session.execute(select(Agency).where(Agency.slug == slug))).first():
        raise Problem(409, "slug-taken", f"An agency {slug!r} exists.")
    agency = Agency(id=uuid.uuid4(), slug=slug, name=name)
    session.add(agency)
    await session.flush()
    created = AgencyCreated(agency_id=agency.id, slug=slug, name=name)
    await record_change(session, principal, created, tenant=None, agency_id=agency.id)
    return _agency_out(agency)


async def list_agencies(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> list[AgencyOut]:
    """Agencies by slug; one more than the page."""
    query = select(Agency).order_by(Agency.slug).limit(page.limit + 1)
    if page.after:
        query = query.where(Agency.slug > page.after[0])
    return [_agency_out(agency) for agency in (await session.execute(query)).scalars()]


async def add_agency_admin(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    *,
    agency_slug: str,
    email: str,
    password: str | None,
) -> AgencyAdminOut:
    """Make `email` an admin of the agency, creating the account if new (`created`)."""
    agency = await _agency_by_slug(session, agency_slug)
    if agency is None:
        raise Problem(404, "not-found", f"No agency {agency_slug!r}.")
    user = await identity.find_user_by_email(session, email)
    created = user is None
    if user is None:
        user = await identity.create_user(session, settings, email=email, password=password)
    admin = insert(AgencyAdmin).values(agency_id=agency.id, user_id=user.id)
    await session.execute(admin.on_conflict_do_nothing())
    added = AgencyAdminAdded(
        agency_id=agency.id, user_id=user.id, email=user.email, account_created=created
    )
    await record_change(session, principal, added, tenant=None, agency_id=agency.id)
    # The address as the caller wrote it (the account's may differ in case).
    return AgencyAdminOut(str(user.id), email, agency_slug, created)


async def _agency_by_slug(session: AsyncSession, slug: str) -> Agency | None:
    return (await session.execute(select(Agency).where(Agency.slug == slug))).scalar_one_or_none()


async def _is_agency_admin(session: AsyncSession, agency_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    found = await session.execute(
        select(AgencyAdmin).where(
            AgencyAdmin.agency_id == agency_id, AgencyAdmin.user_id == user_id
        )
    )
    return found.first() is not None


# -- provisioning ---------------------------------------------------------------------------


DUPLICATE_SCHEMA = "42P06"
# The partial unique index that keeps a slug taken until its tenant is purged, as the model
# declares it: ON CONFLICT takes its columns and its predicate from it.
LIVE_SLUG = next(
    index
    for index in Tenant.metadata.tables["shared.tenants"].indexes
    if index.name == "uq_tenants_slug_live"
)


async def provision_tenant(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    *,
    slug: str,
    name: str,
    agency_slug: str,
    plan: str,
    owner_email: str,
    directory: TenantDirectory | None = None,
) -> TenantOut:
    """Tenant row, schema with every tenant table at head, owner membership and invitation,
    `tenant.created` and the audit entry — all in the caller's one transaction.

    The slug may have belonged to a purged tenant: `directory` announces the new one once it
    commits, so no process keeps serving the old row."""
    validate_new_slug(slug)
    await plans.require_plan(session, plan)
    agency = await _agency_by_slug(session, agency_slug)
    if agency is None or not (
        principal.is_operator or await _is_agency_admin(session, agency.id, principal.user_id)
    ):
        # An agency the caller does not administer is as good as absent.
        raise Problem(404, "not-found", f"No agency {agency_slug!r}.")
    owner_email = identity.normalise_email(owner_email)

    schema = schema_for_tenant(slug)
    tenant_id = uuid.uuid4()
    # The row first: it takes the slug's unique-index lock, so of concurrent requests for one
    # slug the first proceeds and the rest wait, then find the slug taken.
    new_tenant = insert(Tenant).values(
        id=tenant_id, slug=slug, name=name, agency_id=agency.id, plan=plan, schema_name=schema
    )
    inserted = await session.execute(
        new_tenant.on_conflict_do_nothing(constraint=LIVE_SLUG).returning(Tenant.id)
    )
    if inserted.scalar_one_or_none() is None:
        raise Problem(409, "slug-taken", f"The slug {slug!r} is taken.")
    try:
        revision = await create_tenant_schema(session, schema)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != DUPLICATE_SCHEMA:
            raise
        # A schema of that name outside any live tenant (left by hand, or restored from a
        # backup): refuse, and the transaction rolls back whole.
        raise Problem(
            409,
            "schema-exists",
            f"A schema for {slug!r} exists already; an operator must "
            "remove it before this slug can be provisioned.",
        ) from exc
    await session.execute(
        insert(TenantSchemaMigration).values(
            schema_name=schema, tenant_id=tenant_id, revision=revision, last_run_at=func.now()
        )
    )

    await plans.start_billing(session, tenant_id)

    owner, _ = await identity.get_or_create_user(session, owner_email)
    session.add(Membership(tenant_id=tenant_id, user_id=owner.id, role=Role.OWNER.value))
    await session.flush()

    created = TenantCreated(
        tenant_id=tenant_id,
        slug=slug,
        name=name,
        agency=agency.slug,
        plan=plan,
        owner_user_id=owner.id,
    )
    await record_change(
        session, principal, created, tenant=slug, tenant_id=tenant_id, agency_id=agency.id
    )
    if owner.password_hash is None:
        # A new owner sets a password through the invitation the email job sends; the
        # invitation is audited in the new tenant's own log.
        await enter_tenant_schema(session, schema)
        await create_invitation(
            session,
            settings,
            principal,
            tenant=TenantKey(tenant_id, slug, schema),
            user=owner,
            role=Role.OWNER,
        )
    if directory is not None:
        directory.changed(session, slug)
    return await _tenant_out(session, tenant_id)


# -- listing --------------------------------------------------------------------------------


# A tenant as shown: its agency by slug, its id as text (as TenantOut has them).
TENANT_OUT = (
    cast(Tenant.id, Text).label("id"),
    Tenant.slug,
    Tenant.name,
    Agency.slug.label("agency"),
    Tenant.plan,
    Tenant.status,
    Tenant.created_at,
    Tenant.updated_at,
    Tenant.deleted_at,
    Tenant.purge_after,
)
TENANTS = select(*TENANT_OUT).select_from(Tenant).join(Agency, Agency.id == Tenant.agency_id)


async def visible_tenants(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    status: str | None = None,
    agency: str | None = None,
) -> list[TenantOut]:
    """Tenants the caller may see (members: live ones; managers: deleted ones too), by slug;
    one more than the page asks, to tell whether another page follows."""
    query = TENANTS.where(Tenant.status != "purged").order_by(Tenant.slug)
    if not principal.is_operator:
        administers = exists().where(
            AgencyAdmin.agency_id == Tenant.agency_id, AgencyAdmin.user_id == principal.user_id
        )
        belongs = exists().where(
            Membership.tenant_id == Tenant.id, Membership.user_id == principal.user_id
        )
        query = query.where(or_(administers, and_(Tenant.status != "deleted", belongs)))
    if page.after:
        query = query.where(Tenant.slug > page.after[0])
    if status is not None:
        query = query.where(Tenant.status == status)
    if agency is not None:
        query = query.where(Agency.slug == agency)
    rows = await session.execute(query.limit(page.limit + 1))
    return msgspec.convert(rows.mappings().all(), list[TenantOut])


async def tenant_metadata(session: AsyncSession, access: TenantAccess) -> TenantOut:
    return await _tenant_out(session, access.tenant.id)


async def _tenant_out(session: AsyncSession, tenant_id: uuid.UUID) -> TenantOut:
    row = (await session.execute(TENANTS.where(Tenant.id == tenant_id))).mappings().one()
    return msgspec.convert(row, TenantOut)


# -- lifecycle ------------------------------------------------------------------------------

# transition → (statuses it starts from, status it ends in, event)
TRANSITIONS: dict[str, tuple[frozenset[str], str, type[TenantChange]]] = {
    "suspend": (frozenset({"active"}), "suspended", TenantSuspended),
    "resume": (frozenset({"suspended"}), "active", TenantResumed),
    "delete": (frozenset({"active", "suspended"}), "deleted", TenantDeleted),
    "restore": (frozenset({"deleted"}), "active", TenantRestored),
}


async def change_status(
    session: AsyncSession,
    settings: Settings,
    directory: TenantDirectory,
    access: TenantAccess,
    transition: str,
) -> TenantOut:
    sources, target, event = TRANSITIONS[transition]
    tenant = await _locked_tenant(session, access.tenant)
    if tenant.status not in sources:
        raise Problem(
            409, "invalid-transition", f"A {tenant.status} tenant cannot be {transition}d."
        )
    before = {"status": tenant.status}
    tenant.status = target
    tenant.updated_at = datetime.now(UTC)
    if transition == "delete":
        tenant.deleted_at = tenant.updated_at
        tenant.purge_after = tenant.updated_at + timedelta(days=settings.tenant_retention_days)
    elif transition == "restore":
        tenant.deleted_at = tenant.purge_after = None
    changed = event(tenant_id=tenant.id, slug=tenant.slug, before=before, after={"status": target})
    await _record_tenant_change(session, access.principal, tenant, changed)
    directory.changed(session, tenant.slug)
    return await tenant_metadata(session, access)


async def update_tenant(
    session: AsyncSession,
    settings: Settings,
    directory: TenantDirectory,
    access: TenantAccess,
    *,
    name: str | None,
    plan: str | None,
) -> TenantUpdateOut:
    """Rename or move to another plan. A plan whose limits are below what the tenant uses is
    allowed: it blocks new use of those resources, and the answer's `over_limit` says which."""
    if plan is not None:
        await plans.require_plan(session, plan)
    tenant = await _locked_tenant(session, access.tenant)
    if tenant.status == "deleted":
        raise Problem(409, "invalid-transition", "Restore the tenant before changing it.")
    before = {"name": tenant.name, "plan": tenant.plan}
    tenant.name = name if name is not None else tenant.name
    tenant.plan = plan if plan is not None else tenant.plan
    after = {"name": tenant.name, "plan": tenant.plan}
    if after != before:
        tenant.updated_at = datetime.now(UTC)
        changed = TenantUpdated(tenant_id=tenant.id, slug=tenant.slug, before=before, after=after)
        await _record_tenant_change(session, access.principal, tenant, changed)
        directory.changed(session, tenant.slug)
    shown = msgspec.structs.asdict(await tenant_metadata(session, access))
    over_limit = await plans.over_limit(session, access.tenant)
    return TenantUpdateOut(**shown, over_limit=over_limit)


async def _locked_tenant(session: AsyncSession, ref: TenantRef) -> Tenant:
    return (
        await session.execute(select(Tenant).where(Tenant.id == ref.id).with_for_update())
    ).scalar_one()


async def _record_tenant_change(
    session: AsyncSession, actor: Principal | str, tenant: Tenant, event: TenantChange
) -> None:
    """The tenant row's change (flushed first), its event and its platform audit entry. A
    purged tenant's event names no tenant: its slug may already be another tenant's."""
    await session.flush()
    slug = None if tenant.status == "purged" else tenant.slug
    await record_change(
        session, actor, event, tenant=slug, tenant_id=tenant.id, agency_id=tenant.agency_id
    )


SYSTEM_PURGE = "system:purge"  # the actor of purges: a scheduled job, not a person
# Shared rows that name a tenant and go with it when it is purged.
PURGED_WITH_TENANT = (OutboxEvent, OutboxDeadLetter, EventHistory, TenantSchemaMigration)


async def purge_expired(
    session: AsyncSession, vault: Vault, *, now: datetime | None = None
) -> list[str]:
    """Drop the schemas of deleted tenants past their retention and destroy their data keys
    (crypto-shredding: copies of their secrets in backups can no longer be opened)."""
    due = (
        await session.execute(
            select(Tenant)
            .where(Tenant.status == "deleted", Tenant.purge_after <= (now or datetime.now(UTC)))
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    purged = []
    for tenant in due:
        # DDL takes no parameters: the name is validated and quoted by quote_schema.
        await session.execute(
            text(f"DROP SCHEMA IF EXISTS {quote_schema(tenant.schema_name)} CASCADE")
        )
        # Its pending and dead events and its fleet ledger row go too, so the slug (and schema
        # name) can be provisioned again; messages already in the broker name this tenant's
        # id, which workers find purged and drop.
        for model in PURGED_WITH_TENANT:
            await session.execute(delete(model).where(model.tenant_id == tenant.id))
        await vault.shred_tenant(session, tenant.id)
        tenant.status = "purged"
        tenant.updated_at = datetime.now(UTC)
        purge = TenantPurged(
            tenant_id=tenant.id,
            slug=tenant.slug,
            before={"status": "deleted"},
            after={"status": "purged"},
        )
        await _record_tenant_change(session, SYSTEM_PURGE, tenant, purge)
        purged.append(tenant.slug)
    return purged
