"""Request and response bodies of the identity endpoints."""

from __future__ import annotations

from typing import Annotated

import msgspec

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class TokenResponse(msgspec.Struct):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class Membership(msgspec.Struct):
    tenant: str
    tenant_name: str
    status: str
    role: str


class AgencyRole(msgspec.Struct):
    agency: str
    name: str
    role: str


class Me(msgspec.Struct):
    id: str
    email: str
    name: str | None
    is_operator: bool
    memberships: list[Membership]
    agency_roles: list[AgencyRole]


class IdentityLink(msgspec.Struct, forbid_unknown_fields=True):
    id_token: Annotated[str, msgspec.Meta(min_length=1, max_length=16_384)]


class LinkedIdentity(msgspec.Struct):
    issuer: str
    subject: str
