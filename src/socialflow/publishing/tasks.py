"""The publish engine's actor, on the `publishing` queue: each call mostly waits on a platform."""

from __future__ import annotations

from socialflow.outbox.events import Event
from socialflow.publishing.engine import handle
from socialflow.workers.actors import EventSteps, event_actor, worker_resources

PUBLISHING_QUEUE = "publishing"


@event_actor(queue_name=PUBLISHING_QUEUE, actor_name="publish_post", stepwise=True)
async def publish_post(steps: EventSteps, event: Event) -> None:
    """`post.publish_due` → every destination claimed and sent; `post.delivery_due` → a
    delivery's next attempt; `post.delivery_check_due` → a stalled or unknown delivery looked
    up on its platform (the watchdog)."""
    await handle(steps, event, worker_resources())
