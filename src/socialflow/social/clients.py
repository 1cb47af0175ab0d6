"""The HTTP client platform calls go through, and the adapter of each platform."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from socialflow.lib.outbound_http import guarded_client, guarded_transport
from socialflow.settings import Settings
from socialflow.social.platforms.base import PlatformAdapter
from socialflow.social.platforms.bluesky import BlueskyAdapter
from socialflow.social.platforms.mastodon import MastodonAdapter
from socialflow.social.platforms.webhook import WebhookAdapter

ADAPTERS: dict[str, type[MastodonAdapter] | type[BlueskyAdapter] | type[WebhookAdapter]] = {
    "mastodon": MastodonAdapter,
    "bluesky": BlueskyAdapter,
    "webhook": WebhookAdapter,
}
# Deliveries a worker process has in flight at once share these connections.
_WORKER_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)


def platform_client(settings: Settings) -> httpx.AsyncClient:
    """A guarded client (instances and webhook URLs are tenant-chosen): every address checked,
    no redirect followed (a platform API that redirects a POST is refused, not obeyed), answers
    bounded, one timeout per call. For a request's one-off calls (connecting an account)."""
    return cookieless(
        guarded_client(settings, max_redirects=0, timeout=settings.social_call_timeout_s)
    )


def cookieless(http: httpx.AsyncClient) -> httpx.AsyncClient:
    """No cookie is kept: one tenant's platform must never set what another's calls send."""
    http.cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # kept as given
    return http


def adapter_for(platform: str, http: httpx.AsyncClient) -> PlatformAdapter:
    return ADAPTERS[platform](http)


@dataclass
class PlatformReach:
    """A worker's client and adapters, shared by its deliveries on one event loop: connections
    are reused, and an adapter's caches (a Mastodon instance's limits) last."""

    settings: Settings
    http: httpx.AsyncClient
    adapters: dict[str, PlatformAdapter] = field(default_factory=dict)

    def adapter(self, platform: str) -> PlatformAdapter:
        found = self.adapters.get(platform)
        if found is None:
            found = self.adapters[platform] = adapter_for(platform, self.http)
        return found


_REACH: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PlatformReach] = (
    weakref.WeakKeyDictionary()
)


def platform_reach(settings: Settings) -> PlatformReach:
    """The running loop's shared client and adapters for `settings`."""
    loop = asyncio.get_running_loop()
    reach = _REACH.get(loop)
    if reach is None or reach.settings is not settings or reach.http.is_closed:
        transport = guarded_transport(settings, max_redirects=0, limits=_WORKER_LIMITS)
        http = cookieless(
            guarded_client(settings, timeout=settings.social_call_timeout_s, transport=transport)
        )
        reach = _REACH[loop] = PlatformReach(settings, http)
    return reach
