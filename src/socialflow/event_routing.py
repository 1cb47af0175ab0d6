"""The routing table: which actors each declared event reaches, on which queue.

Keyed on the event classes the features declare in their `events.py`; the relay reads the
string-keyed form (`ROUTES`). `check_routing()` runs in a unit test and at worker start-up:
every route names an actor declared with `event_actor` on the route's queue, every such actor
is routed, and every declared event type has an entry (an event with no consumer yet is
routed to nothing).
"""

from __future__ import annotations

import importlib.util
import pkgutil

import socialflow
from socialflow.ai.events import (
    AiEmbeddingModelChanged,
    AiKeyConfigured,
    AiKeyInvalid,
    AiKeyRemoved,
    AiSettingsUpdated,
)
from socialflow.captions.events import (
    CaptionEdited,
    CaptionRequested,
    MediaCaptioned,
    MediaEmbedded,
)
from socialflow.identity.events import UserIdentityLinked
from socialflow.media.events import (
    MediaDeleted,
    MediaFailed,
    MediaProcessed,
    MediaUpdated,
    MediaUploaded,
    MediaUploadStarted,
    MediaVariantRendered,
)
from socialflow.members.events import (
    ApiKeyCreated,
    ApiKeyRevoked,
    MemberInvited,
    MemberJoined,
    MemberRemoved,
    MemberReviewerChanged,
    MemberRoleChanged,
)
from socialflow.outbox.events import DomainEvent, declared_events
from socialflow.outbox.routing import (
    EventRoutes,
    Route,
    RoutingTable,
    Subscription,
    by_event_type,
    routing_problems,
)
from socialflow.plans.events import (
    AiBudgetExceeded,
    AiBudgetWarning,
    EntitlementsChanged,
    PlanCreated,
    PlanUpdated,
    QuotaExceeded,
    QuotaWarning,
)
from socialflow.publishing.events import (
    DeliveryCheckDue,
    DeliveryDue,
    DestinationFailed,
    DestinationPublished,
    DestinationResolved,
    DestinationUnconfirmed,
    PostApproved,
    PostCancelled,
    PostChangesRequested,
    PostCommented,
    PostCreated,
    PostFailed,
    PostPartiallyPublished,
    PostPublishDue,
    PostPublished,
    PostScheduled,
    PostSubmitted,
    PostUnconfirmed,
    PostUpdated,
)
from socialflow.social.events import (
    SocialAccountConnected,
    SocialAccountDisconnected,
    SocialAccountNeedsReconnect,
    SocialAccountRefreshed,
    SocialAuthorizationStarted,
)
from socialflow.tenancy.events import (
    AgencyAdminAdded,
    AgencyCreated,
    SettingsUpdated,
    TenantCreated,
    TenantDeleted,
    TenantPurged,
    TenantRestored,
    TenantResumed,
    TenantSuspended,
    TenantUpdated,
)
from socialflow.webhooks.events import (
    WebhookEndpointCreated,
    WebhookEndpointDeleted,
    WebhookEndpointDisabled,
    WebhookEndpointDue,
    WebhookEndpointUpdated,
    WebhookReplayRequested,
    WebhookSecretRotated,
)

# The publish engine: one actor for a due post, a delivery's retry and its watchdog check.
PUBLISH = Route("publish_post", "publishing")
# Customer webhooks: each endpoint's drain here; every other event of a tenant with endpoints
# reaches it too, routed by the relay as it claims (SUBSCRIBED below).
WEBHOOKS = Route("deliver_webhooks", "webhooks")

# event                 → actors (queue)
EVENT_ROUTES: EventRoutes = {
    AgencyCreated: (),
    AgencyAdminAdded: (),
    TenantCreated: (),
    TenantUpdated: (),
    TenantSuspended: (),
    TenantResumed: (),
    TenantDeleted: (),
    TenantRestored: (),
    TenantPurged: (),
    SettingsUpdated: (Route("follow_search_language", "media"),),
    MemberInvited: (Route("send_invitation_email", "email"),),
    MemberJoined: (),
    MemberRoleChanged: (),
    MemberRemoved: (),
    MemberReviewerChanged: (),
    ApiKeyCreated: (),
    ApiKeyRevoked: (),
    AiKeyConfigured: (),
    AiKeyRemoved: (),
    AiSettingsUpdated: (Route("follow_search_language", "media"),),
    AiKeyInvalid: (),
    AiEmbeddingModelChanged: (Route("reembed_media", "ai"),),
    CaptionRequested: (Route("caption_media", "ai"),),
    MediaCaptioned: (Route("embed_media", "ai"),),
    CaptionEdited: (Route("embed_media", "ai"),),
    MediaEmbedded: (),
    UserIdentityLinked: (),
    PlanCreated: (),
    PlanUpdated: (),
    EntitlementsChanged: (),
    QuotaWarning: (),
    QuotaExceeded: (),
    AiBudgetWarning: (),
    AiBudgetExceeded: (),
    MediaUploadStarted: (),
    MediaUploaded: (Route("process_media", "media"),),
    MediaProcessed: (Route("caption_media", "ai"),),
    MediaFailed: (Route("remove_media_objects", "media"),),
    MediaUpdated: (Route("embed_media", "ai"),),
    MediaVariantRendered: (),
    MediaDeleted: (Route("remove_media_objects", "media"),),
    PostCreated: (),
    PostUpdated: (),
    PostSubmitted: (),
    PostApproved: (),
    PostChangesRequested: (),
    PostCommented: (),
    PostScheduled: (),
    PostPublishDue: (PUBLISH,),
    PostCancelled: (),
    DeliveryDue: (PUBLISH,),
    DeliveryCheckDue: (PUBLISH,),
    DestinationPublished: (),
    DestinationFailed: (),
    DestinationUnconfirmed: (),
    DestinationResolved: (),
    PostPublished: (),
    PostPartiallyPublished: (),
    PostFailed: (),
    PostUnconfirmed: (),
    SocialAccountConnected: (),
    SocialAccountDisconnected: (),
    SocialAccountNeedsReconnect: (),
    SocialAccountRefreshed: (),
    SocialAuthorizationStarted: (),
    WebhookEndpointCreated: (),
    WebhookEndpointUpdated: (),
    WebhookEndpointDeleted: (),
    WebhookSecretRotated: (),
    WebhookEndpointDisabled: (Route("notify_webhook_disabled", "email"),),
    WebhookReplayRequested: (),
    WebhookEndpointDue: (WEBHOOKS,),
}

ROUTES: RoutingTable = by_event_type(EVENT_ROUTES)
# The product's own scheduling (internal events): kept out of the event history and webhooks.
INTERNAL_EVENT_TYPES: frozenset[str] = frozenset(e.event_type for e in EVENT_ROUTES if e.internal)
# What a tenant's webhooks may receive: every event that is not internal.
SUBSCRIBED = Subscription(WEBHOOKS, frozenset(e.event_type for e in EVENT_ROUTES if not e.internal))


class RoutingError(RuntimeError):
    """The routing table, the declared actors and the declared events disagree."""


def product_events() -> list[type[DomainEvent]]:
    """Every event the product declares: each feature's `events.py` is imported first, so an
    event declared where this table does not look is still found (test events are not)."""
    for feature in pkgutil.iter_modules(socialflow.__path__, "socialflow."):
        if feature.ispkg and importlib.util.find_spec(f"{feature.name}.events") is not None:
            importlib.import_module(f"{feature.name}.events")
    return [e for e in declared_events().values() if e.__module__.startswith("socialflow.")]


def check_routing() -> None:
    """Refuse a routing table that names an undeclared actor or queue, leaves a declared actor
    unrouted, or misses a declared event type."""
    from socialflow.workers.registry import event_actor_queues

    problems = routing_problems(EVENT_ROUTES, event_actor_queues(), product_events())
    if problems:
        raise RoutingError(
            "the routing table (socialflow/event_routing.py) does not match the declared "
            "actors and events:\n  " + "\n  ".join(problems)
        )
