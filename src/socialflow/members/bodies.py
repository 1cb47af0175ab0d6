"""Request and response bodies of the members, invitations and API keys endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

EmailField = Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class MemberOut(msgspec.Struct):
    user_id: str
    email: str
    name: str | None
    role: str
    joined_at: datetime
    reviewer: bool = False


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


class ReviewerOut(msgspec.Struct):
    user_id: str
    reviewer: bool


class MemberList(msgspec.Struct):
    items: list[MemberOut]
    next_cursor: str | None = None


class InvitationAccept(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    password: Password
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class InvitationAccepted(msgspec.Struct):
    user_id: str
    tenant: str
    role: str
