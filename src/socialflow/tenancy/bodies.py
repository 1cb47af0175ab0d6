"""Request and response bodies of the agency and tenant endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from socialflow.plans.bodies import OverLimit

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


class TenantUpdateOut(TenantOut, kw_only=True):
    # Limits (of the new plan) below what the tenant uses: new use of these is refused.
    over_limit: list[OverLimit] = msgspec.field(default_factory=list)


class TenantList(msgspec.Struct):
    items: list[TenantOut]
    next_cursor: str | None = None


class AgencyList(msgspec.Struct):
    items: list[AgencyOut]
    next_cursor: str | None = None


class TenantSettingsOut(msgspec.Struct):
    display_name: str | None
    timezone: str
    locale: str
    review_required: bool
    self_approval_allowed: bool
    updated_at: datetime


class TenantSettingsUpdate(msgspec.Struct, forbid_unknown_fields=True):
    display_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None
    review_required: bool | None = None
    self_approval_allowed: bool | None = None
