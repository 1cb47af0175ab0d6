"""Request and response bodies of connected social accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")]


class MastodonConnect(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    instance_url: Url


class BlueskyConnect(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    identifier: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]  # handle or e-mail
    app_password: Annotated[str, msgspec.Meta(min_length=4, max_length=100)]
    service_url: Url = "https://bsky.social"


class WebhookConnect(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Url
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class AuthorizationOut(msgspec.Struct, kw_only=True):
    expires_at: datetime
    authorization_url: str | None  # null in an Idempotency-Key replay: start again


class SocialAccountOut(msgspec.Struct, kw_only=True):
    """A connected account; its credentials are never shown."""

    id: str
    platform: str
    server_url: str
    handle: str
    display_name: str | None
    status: str
    status_reason: str | None
    scopes: list[str]
    expires_at: datetime | None
    connected_by: str
    created_at: datetime
    refreshed_at: datetime | None
    # A webhook destination's signing secret: shown once, when it is created.
    signing_secret: str | None = None


class SocialAccountList(msgspec.Struct):
    items: list[SocialAccountOut]
