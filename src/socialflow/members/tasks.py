"""Actors of the members feature: invitation emails."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.lib.email import send_email
from socialflow.members.invitations import mint_token
from socialflow.outbox.events import Event
from socialflow.workers.actors import event_actor, worker_resources

EMAIL_QUEUE = "email"


@event_actor(queue_name=EMAIL_QUEUE, actor_name="send_invitation_email")
async def send_invitation_email(session: AsyncSession, event: Event) -> None:
    """Mint the invitation's token and mail it. Sending happens before the commit: if the
    commit fails, the retry mints a new token, so the first email's link simply stops working."""
    invitation = await mint_token(session, uuid.UUID(event.payload["invitation_id"]))
    if invitation is None:
        return  # accepted, replaced or expired meanwhile
    token = invitation.token
    settings = worker_resources().settings
    link = f"{settings.public_base_url}/accept-invitation?token={token}"
    body = (
        f"You are invited to join {invitation.tenant_name} on SocialFlow as {invitation.role}.\n\n"
        f"Accept: {link}\n"
        f"or POST {settings.public_base_url}/api/v1/invitations/accept with this token:\n"
        f"{token}\n\nThe invitation expires at {invitation.expires_at:%Y-%m-%d %H:%M} UTC.\n"
    )
    await send_email(
        settings, invitation.email, f"Join {invitation.tenant_name} on SocialFlow", body
    )
