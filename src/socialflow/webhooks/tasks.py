"""The webhook actors: `deliver_webhooks` (its own `webhooks` queue) and the disabled-endpoint
email (`email` queue).

`deliver_webhooks` receives every event of a tenant that has endpoints (the relay routes them
to it as it claims) and each endpoint's `webhook_endpoint.due`. No transaction is held while a
receiver answers: deliveries are made and leased in one step, sent, then settled in another
(dispatch.py tells what survives a crash between them). A receiver that hangs holds one of the
requests in flight (each bounded by WEBHOOK_TIMEOUT_S), never the worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.email import send_email
from socialflow.lib.outbound import shown_url
from socialflow.outbox.events import Event
from socialflow.resources import Resources
from socialflow.webhooks import dispatch
from socialflow.webhooks.events import WebhookEndpointDue
from socialflow.webhooks.models import WebhookEndpoint
from socialflow.webhooks.sending import Answer, send, worker_client
from socialflow.workers.actors import EventSteps, event_actor, worker_resources

WEBHOOKS_QUEUE = "webhooks"
EMAIL_QUEUE = "email"
# A drain sends for this long at most, then hands over to its next scheduled run (other
# endpoints' drains and fresh events take their turns on the queue meanwhile).
DRAIN_BUDGET_S = 20.0


@event_actor(queue_name=WEBHOOKS_QUEUE, actor_name="deliver_webhooks", stepwise=True)
async def deliver_webhooks(steps: EventSteps, event: Event) -> None:
    """An event → its deliveries, sent at once to healthy endpoints; `webhook_endpoint.due` →
    the endpoint's due deliveries sent, earliest retry first."""
    resources = worker_resources()
    if event.event_type == WebhookEndpointDue.event_type:
        await _drain(steps, event, resources, uuid.UUID(event.payload["endpoint_id"]))
        return
    async with steps.transaction() as session:
        if not await steps.complete(session):
            return
        tenant = steps.tenant
        assert tenant is not None  # a tenant's event: the transaction entered its schema
        claimed = await dispatch.fan_out(
            session,
            event,
            settings=resources.settings,
            vault=resources.vault,
            tenant_id=tenant.id,
            tenant=tenant.slug,
        )
    if not claimed:
        return
    # One request per endpoint, all at once: none waits on another (nor outlives its lease).
    sent = await _send_all(claimed, resources, len(claimed))
    async with steps.transaction() as session:
        await dispatch.record_answers(
            session, sent, settings=resources.settings, tenant=tenant.slug
        )


async def _drain(
    steps: EventSteps, event: Event, resources: Resources, endpoint_id: uuid.UUID
) -> None:
    deadline = time.monotonic() + DRAIN_BUDGET_S
    async with steps.transaction() as session:
        if not await steps.complete(session):
            return  # this drain ran before (a redelivery)
    tenant = steps.tenant
    assert tenant is not None
    try:
        while time.monotonic() < deadline:
            async with steps.transaction() as session:
                claimed = await dispatch.claim_due(
                    session,
                    endpoint_id,
                    settings=resources.settings,
                    vault=resources.vault,
                    tenant_id=tenant.id,
                    tenant=tenant.slug,
                )
            if not claimed:
                break
            sent = await _send_all(claimed, resources, resources.settings.webhook_concurrency)
            async with steps.transaction() as session:
                healthy = await dispatch.record_answers(
                    session, sent, settings=resources.settings, tenant=tenant.slug
                )
            if endpoint_id not in healthy:
                break
            steps.anew()  # the next batch waits its turn like new work
    finally:
        # Also after a failure: the endpoint's next drain is scheduled (or none is needed).
        async with steps.transaction() as session:
            await dispatch.settle_schedule(
                session, endpoint_id, tenant=tenant.slug, tenant_id=tenant.id
            )


async def _send_all(
    claimed: list[dispatch.Claimed], resources: Resources, concurrency: int
) -> list[tuple[dispatch.Claimed, Answer]]:
    """Send, `concurrency` requests in flight at most, in claim order."""
    settings = resources.settings
    http = worker_client(settings)
    slots = asyncio.Semaphore(concurrency)

    async def one(delivery: dispatch.Claimed) -> tuple[dispatch.Claimed, Answer]:
        async with slots:
            answer = await send(
                http,
                settings,
                delivery.url,
                secrets=delivery.secrets,
                webhook_id=delivery.event_id,
                body=delivery.body,
            )
            return delivery, answer

    return list(await asyncio.gather(*(one(d) for d in claimed)))


_ADMINS = text("""
SELECT u.email FROM shared.memberships m JOIN shared.users u ON u.id = m.user_id
WHERE m.tenant_id = :tenant AND m.role IN ('owner', 'admin') AND u.email IS NOT NULL
ORDER BY u.email
""")


@event_actor(queue_name=EMAIL_QUEUE, actor_name="notify_webhook_disabled")
async def notify_webhook_disabled(session: AsyncSession, event: Event) -> None:
    """Tell the tenant's admins that an endpoint was disabled, why, and how to enable it."""
    endpoint = await session.get(WebhookEndpoint, uuid.UUID(event.payload["endpoint_id"]))
    if endpoint is None or endpoint.enabled:
        return  # deleted or enabled again meanwhile
    settings = worker_resources().settings
    emails = (await session.scalars(_ADMINS, {"tenant": event.tenant_id})).all()
    body = (
        f"The webhook endpoint {shown_url(endpoint.url)} of {event.tenant} was disabled.\n\n"
        f"Why: {event.payload['reason']}\n\n"
        "Its undelivered events are kept. Once the receiver works again, enable the endpoint "
        f"(PATCH {settings.public_base_url}/api/v1/tenants/{event.tenant}/webhooks/"
        f"{endpoint.id} with enabled=true) and they are sent.\n"
    )
    for email in emails:
        await send_email(settings, email, "A SocialFlow webhook endpoint was disabled", body)
