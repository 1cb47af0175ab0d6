"""Which actors each event type reaches, on which queue: the whole routing in one table.

An event type listed with no route is known and simply has no consumer yet; a type missing
from the table is a producer bug, refused by `emit()` and dead-lettered by the relay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    actor: str
    queue: str


RoutingTable = Mapping[str, tuple[Route, ...]]

# event type            → actors (queue)
ROUTES: RoutingTable = {
    "tenant.created": (),
    "tenant.updated": (),
    "tenant.suspended": (),
    "tenant.resumed": (),
    "tenant.deleted": (),
    "tenant.restored": (),
    "tenant.purged": (),
    "member.invited": (Route("send_invitation_email", "email"),),
    "member.joined": (),
    "member.role_changed": (),
    "member.removed": (),
    "api_key.created": (),
    "api_key.revoked": (),
    "ai_key.configured": (),
    "ai_key.removed": (),
    "media.uploaded": (),  # → process_media (media)
    "media.processed": (),  # → caption_media (ai), embed_media (ai)
    "post.publish_due": (),  # → publish_post (publishing)
}
