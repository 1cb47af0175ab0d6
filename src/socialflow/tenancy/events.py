"""Events of the tenancy feature: agencies, tenants and their lifecycle, tenant settings."""

from __future__ import annotations

import uuid

from socialflow.outbox.events import AuditLog, DomainEvent, FieldsChanged


class AgencyCreated(DomainEvent, frozen=True, kw_only=True):
    event_type = "agency.created"
    aggregate_type = "agency"
    aggregate_key = "agency_id"
    audit_log = AuditLog.PLATFORM

    agency_id: uuid.UUID
    slug: str
    name: str


class AgencyAdminAdded(DomainEvent, frozen=True, kw_only=True):
    event_type = "agency.admin_added"
    aggregate_type = "agency"
    aggregate_key = "agency_id"
    audit_log = AuditLog.PLATFORM

    agency_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    account_created: bool


class TenantCreated(DomainEvent, frozen=True, kw_only=True):
    event_type = "tenant.created"
    aggregate_type = "tenant"
    aggregate_key = "tenant_id"
    audit_log = AuditLog.PLATFORM

    tenant_id: uuid.UUID
    slug: str
    name: str
    agency: str  # its slug
    plan: str
    owner_user_id: uuid.UUID


class TenantChange(FieldsChanged, frozen=True, kw_only=True):
    """A change to a tenant row: what its fields were and became (a shared base)."""

    aggregate_type = "tenant"
    aggregate_key = "tenant_id"
    audit_log = AuditLog.PLATFORM

    tenant_id: uuid.UUID
    slug: str


class TenantUpdated(TenantChange, frozen=True, kw_only=True):
    event_type = "tenant.updated"  # name, plan


class TenantSuspended(TenantChange, frozen=True, kw_only=True):
    event_type = "tenant.suspended"


class TenantResumed(TenantChange, frozen=True, kw_only=True):
    event_type = "tenant.resumed"


class TenantDeleted(TenantChange, frozen=True, kw_only=True):
    event_type = "tenant.deleted"


class TenantRestored(TenantChange, frozen=True, kw_only=True):
    event_type = "tenant.restored"


class TenantPurged(TenantChange, frozen=True, kw_only=True):
    event_type = "tenant.purged"  # its schema dropped, its data keys destroyed


class SettingsChange(FieldsChanged, frozen=True, kw_only=True):
    """A change to one of a tenant's single-row settings tables (a shared base): the changed
    columns, before and after. The tenant is the event's; its row is always id 1."""

    aggregate_key = "row_id"
    audit_log = AuditLog.TENANT

    @property
    def row_id(self) -> str:
        return "1"


class SettingsUpdated(SettingsChange, frozen=True, kw_only=True):
    event_type = "settings.updated"
    aggregate_type = "settings"
