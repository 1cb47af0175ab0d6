"""The routing table, the declared actors and the declared events agree, and the worker refuses
to start when they do not."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from socialflow.event_routing import EVENT_ROUTES, ROUTES, check_routing, product_events
from socialflow.outbox.events import AuditLog, DomainEvent
from socialflow.outbox.routing import Route, routing_problems
from socialflow.workers.registry import event_actor_queues

ROOT = Path(__file__).resolve().parents[2]


class _Happened(DomainEvent, frozen=True, kw_only=True):
    """Unit-test events (a shared base)."""

    aggregate_type = "thing"
    aggregate_key = "thing_id"
    audit_log = AuditLog.NONE

    thing_id: uuid.UUID


class _Mailed(_Happened, frozen=True, kw_only=True):
    event_type = "unit.mailed"


class _Quiet(_Happened, frozen=True, kw_only=True):
    event_type = "unit.quiet"


def test_every_route_names_a_declared_actor_on_its_queue_and_everything_declared_is_routed() -> (
    None
):
    check_routing()  # raises RoutingError listing every disagreement
    assert all(isinstance(event, type) for event in EVENT_ROUTES)
    assert set(ROUTES) == {event.event_type for event in product_events()}
    assert event_actor_queues() == {
        "send_invitation_email": "email",
        "process_media": "media",
        "remove_media_objects": "media",
        "caption_media": "ai",
        "embed_media": "ai",
        "reembed_media": "ai",
        "follow_search_language": "media",
        "publish_post": "publishing",
        "deliver_webhooks": "webhooks",
        "notify_webhook_disabled": "email",
    }
    assert ROUTES["member.invited"] == (Route("send_invitation_email", "email"),)


def test_the_check_names_each_kind_of_disagreement() -> None:
    problems = routing_problems(
        {_Mailed: (Route("send_mail", "email"), Route("ghost", "email"))},
        {"send_mail": "mail", "forgotten": "email"},
        [_Mailed, _Quiet],
    )
    assert problems == [
        "unit.mailed → send_mail: the route says queue 'email', the actor is declared on 'mail'",
        "unit.mailed → ghost: no such actor is declared",
        "actor forgotten is declared but no event is routed to it",
        "event type unit.quiet has no entry in the routing table",
    ]


def test_an_event_type_is_declared_by_one_class_only() -> None:
    with pytest.raises(TypeError, match=r"'member\.invited' is declared twice"):

        class _Again(_Happened, frozen=True, kw_only=True):
            event_type = "member.invited"


def test_an_event_must_say_its_aggregate_and_audit_log() -> None:
    with pytest.raises(TypeError, match="does not declare aggregate_type, aggregate_key"):

        class _Bare(DomainEvent, frozen=True, kw_only=True):
            event_type = "unit.bare"


def _start_worker(prelude: str) -> subprocess.CompletedProcess[str]:
    """Import the worker's entry module as `socialflow worker` does, after `prelude`."""
    return subprocess.run(
        [sys.executable, "-c", f"{prelude}\nimport socialflow.workers.entry"],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": "redis://127.0.0.1:9/0"},  # never connected to
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_worker_starts_with_the_shipped_routing() -> None:
    started = _start_worker("")
    assert started.returncode == 0, started.stderr


def test_the_worker_refuses_to_start_when_a_declared_actor_is_not_routed() -> None:
    unrouted = (
        "from socialflow import event_routing\n"
        "from socialflow.members.events import MemberInvited\n"
        "event_routing.EVENT_ROUTES = {**event_routing.EVENT_ROUTES, MemberInvited: ()}"
    )
    refused = _start_worker(unrouted)
    assert refused.returncode != 0
    assert "the worker refuses to start" in refused.stderr
    assert "actor send_invitation_email is declared but no event is routed to it" in (
        refused.stderr
    )
