"""The HTTP client platform calls go through, and the adapter of each platform."""

from __future__ import annotations

import httpx

from socialflow.lib.outbound_http import guarded_client
from socialflow.settings import Settings
from socialflow.social.platforms.base import PlatformAdapter
from socialflow.social.platforms.bluesky import BlueskyAdapter
from socialflow.social.platforms.mastodon import MastodonAdapter
from socialflow.social.platforms.webhook import WebhookAdapter


def platform_client(settings: Settings) -> httpx.AsyncClient:
    """A guarded client (instances and webhook URLs are tenant-chosen): every address checked,
    no redirect followed (a platform API that redirects a POST is refused, not obeyed), answers
    bounded, one timeout per call."""
    return guarded_client(settings, max_redirects=0, timeout=settings.social_call_timeout_s)


def adapter_for(platform: str, http: httpx.AsyncClient) -> PlatformAdapter:
    adapters: dict[str, type[MastodonAdapter] | type[BlueskyAdapter] | type[WebhookAdapter]] = {
        "mastodon": MastodonAdapter,
        "bluesky": BlueskyAdapter,
        "webhook": WebhookAdapter,
    }
    return adapters[platform](http)
