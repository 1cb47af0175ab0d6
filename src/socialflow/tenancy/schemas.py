"""Request and response bodies of the agency and tenant endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Slug = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Plan = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
EmailField = Annotated[str, msgspec.Meta(min_length=3, max_length=320)]


class AgencyCreate(msgspec.Struct, forbid_unknown_fields=True):
    slug: Slug
    name: Name


class AgencyOut(msgspec.Struct):
    id: str
    slug: str
    name: str
    created_at: datetime


class AgencyAdminCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: EmailField
    password: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class AgencyAdminOut(msgspec.Struct):
    user_id: str
    email: str
    agency: str
    created: bool


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    slug: Slug
    name: Name
    agency: Slug
    plan: Plan
    owner_email: EmailField


class TenantUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    plan: Plan | None = None


class TenantOut(msgspec.Struct):
    id: str
    slug: str
    name: str
    agency: str
    plan: str
    status: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    purge_after: datetime | None = None


class TenantList(msgspec.Struct):
    items: list[TenantOut]
    next_cursor: str | None = None


class AgencyList(msgspec.Struct):
    items: list[AgencyOut]
    next_cursor: str | None = None


class AuditEntryOut(msgspec.Struct):
    id: int
    at: datetime
    actor: str | None
    action: str
    target_type: str
    target_id: str
    request_id: str | None
    before: dict[str, object] | None
    after: dict[str, object] | None


class AuditList(msgspec.Struct):
    items: list[AuditEntryOut]
    next_cursor: str | None = None


class MemberOut(msgspec.Struct):
    user_id: str
    email: str
    name: str | None
    role: str
    joined_at: datetime


class MemberInvite(msgspec.Struct, forbid_unknown_fields=True):
    email: EmailField
    role: Literal["owner", "admin", "editor", "viewer"]


class InvitationOut(msgspec.Struct):
    invitation_id: str
    email: str
    role: str


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    role: Literal["owner", "admin", "editor", "viewer"]
    expires_at: datetime | None = None


class ApiKeyOut(msgspec.Struct):
    id: str
    name: str
    prefix: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(msgspec.Struct):
    id: str
    name: str
    prefix: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    # Shown once; null in an Idempotency-Key replay (header `Idempotent-Withheld: key`).
    key: str | None


class ApiKeyList(msgspec.Struct):
    items: list[ApiKeyOut]
    next_cursor: str | None = None


class MemberRoleUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["owner", "admin", "editor", "viewer"]


class MemberRoleOut(msgspec.Struct):
    user_id: str
    role: str


class MemberList(msgspec.Struct):
    items: list[MemberOut]
    next_cursor: str | None = None


class TenantSettingsOut(msgspec.Struct):
    display_name: str | None
    timezone: str
    locale: str
    updated_at: datetime


class TenantSettingsUpdate(msgspec.Struct, forbid_unknown_fields=True):
    display_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None
