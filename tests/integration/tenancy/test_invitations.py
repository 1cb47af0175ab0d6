"""Invitations: mailed over real SMTP by the email job, accepted once, before they expire."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import dramatiq
import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from socialflow.event_routing import ROUTES
from socialflow.settings import Settings
from socialflow.workers.actors import WorkerResources
from socialflow.workers.broker import create_broker
from socialflow.workers.testing import bind_event_actors
from tests.e2e.conftest import free_port
from tests.integration.conftest import RelayFactory
from tests.integration.outbox.support import wait_until
from tests.integration.tenancy_fixtures import PASSWORD, Platform, World, unique


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def token_for(self, email: str) -> str | None:
        for message in reversed(self.messages):
            if message["To"] == email:
                found = re.search(r"sfi_[A-Za-z0-9_\-]+", message.get_content())
                return found.group(0) if found else None
        return None


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def email_worker(
    redis_url: str, settings: Settings, mailbox: tuple[Mailbox, int], redis_client: Any
) -> Iterator[None]:
    """The real invitation job on a real worker, sending through the loopback SMTP server."""
    smtp = settings.model_copy(
        update={
            "email_backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": mailbox[1],
            "smtp_security": "none",
        }
    )
    broker = create_broker(redis_url)
    WorkerResources.configure(smtp)
    assert "send_invitation_email" in bind_event_actors(broker, max_retries=0)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    yield
    worker.stop()
    WorkerResources.configure(settings)


async def _mailed(box: Mailbox, pg: psycopg.Connection[Any], email: str) -> None:
    """The mail arrived and the job committed (it mails before its commit: at least once)."""
    await wait_until(
        lambda: (
            box.token_for(email) is not None
            and pg.execute(
                "SELECT count(*) FROM shared.invitations i JOIN shared.users u ON u.id = i.user_id "
                "WHERE u.email = %s AND i.sent_at IS NOT NULL",
                (email,),
            ).fetchone()
            == (1,)
        ),
        message="invitation mailed and recorded",
    )


async def _invite(platform: Platform, world: World, email: str, role: str, by: Any) -> Any:
    return await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/members",
        json={"email": email, "role": role},
        headers=by.headers,
    )


async def test_an_invitation_is_mailed_accepted_once_and_makes_a_member(
    platform: Platform,
    world: World,
    make_relay: RelayFactory,
    email_worker: None,
    mailbox: tuple[Mailbox, int],
    pg: psycopg.Connection[Any],
) -> None:
    email = f"{unique('invitee')}@example.com"
    invited = await _invite(platform, world, email, "editor", world.owner_a)
    assert invited.status_code == 201, invited.text
    # The secret is minted by the job: nothing in the outbox or the response carries it.
    assert "sfi_" not in invited.text
    assert "sfi_" not in str(pg.execute("SELECT payload FROM shared.outbox").fetchall())

    await make_relay(routes=ROUTES).dispatch_batch()
    await _mailed(mailbox[0], pg, email)
    token = mailbox[0].token_for(email)

    accepted = await platform.client.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD, "name": "Ed"}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["role"] == "editor"
    editor = await platform.login(email)
    members = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/members", headers=editor.headers
    )
    assert {m["email"]: m["role"] for m in members.json()["items"]}[email] == "editor"

    again = await platform.client.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert again.status_code == 404
    assert again.json()["type"] == "/problems/invalid-invitation"
    joined = pg.execute(
        "SELECT count(*) FROM shared.outbox WHERE event_type = 'member.joined' AND tenant = %s",
        (world.tenant_a,),
    ).fetchone()
    assert joined == (1,)


async def test_an_expired_invitation_is_refused(
    platform: Platform,
    world: World,
    make_relay: RelayFactory,
    email_worker: None,
    mailbox: tuple[Mailbox, int],
    pg: psycopg.Connection[Any],
) -> None:
    email = f"{unique('late')}@example.com"
    await _invite(platform, world, email, "viewer", world.owner_a)
    await make_relay(routes=ROUTES).dispatch_batch()
    await _mailed(mailbox[0], pg, email)
    pg.execute(
        "UPDATE shared.invitations SET expires_at = now() - interval '1 minute' "
        "WHERE user_id = (SELECT id FROM shared.users WHERE email = %s)",
        (email,),
    )
    response = await platform.client.post(
        "/api/v1/invitations/accept",
        json={"token": mailbox[0].token_for(email), "password": PASSWORD},
    )
    assert response.status_code == 410
    assert response.json()["type"] == "/problems/invitation-expired"


@pytest.mark.parametrize(("inviter_role", "role"), [("editor", "admin"), ("admin", "owner")])
async def test_nobody_invites_above_their_own_role(
    platform: Platform, world: World, pg: psycopg.Connection[Any], inviter_role: str, role: str
) -> None:
    inviter = await platform.member(world.tenant_a, inviter_role)
    email = f"{unique('x')}@example.com"
    response = await _invite(platform, world, email, role, inviter)
    assert response.status_code == 403
    assert pg.execute(
        "SELECT count(*) FROM shared.invitations i JOIN shared.users u ON u.id = i.user_id "
        "WHERE u.email = %s",
        (email,),
    ).fetchone() == (0,)
