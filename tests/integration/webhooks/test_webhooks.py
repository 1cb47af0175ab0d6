"""Customer webhooks: endpoints and their secrets, signed deliveries a Standard Webhooks receiver
verifies, retries and the endpoint's health, replay, and what the relay routes to them."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
import redis
from outbox_relay.relay import product_routes
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from socialflow.access.directory import TenantDirectory
from socialflow.access.principal import Principal
from socialflow.access.tenant_access import TenantAccess
from socialflow.db.session import unit_of_work
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.lib.rate_limits import WINDOW_S
from socialflow.outbox.events import Event
from socialflow.vault.service import Vault
from socialflow.webhooks import dispatch, services
from socialflow.webhooks.bodies import WebhookCreate
from socialflow.workers.actors import apply_named_event
from socialflow.workers.broker import NAMESPACE
from socialflow.workers.testing import envelope_of, pending_rows
from tests.integration.conftest import RelayFactory
from tests.integration.held_transactions import open_api_transactions
from tests.integration.social.fake_receiver import FakeReceiver, fake_receiver
from tests.integration.tenancy_fixtures import Platform, World
from tests.integration.webhooks.conftest import Hooks


async def test_an_endpoints_secret_is_shown_once_and_never_again(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    created = await hooks.create(receiver, "settings.*", description="CRM")
    assert created["signing_secret"].startswith("whsec_")
    one = await hooks.call("GET", f"/{created['id']}")
    assert one.status_code == 200
    assert one.json()["signing_secret"] is None
    listed = (await hooks.call("GET")).json()["items"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert all(e["signing_secret"] is None for e in listed)
    # The event that recorded it carries no secret.
    assert all("whsec_" not in str(p) for p in hooks.outbox("webhook_endpoint.created"))


async def test_private_addresses_and_bad_patterns_are_refused_and_nothing_is_made(
    hooks: Hooks,
) -> None:
    for url in ("http://169.254.169.254/latest", "http://10.0.0.1/hook", "ftp://127.0.0.1/x"):
        answer = await hooks.call("POST", url=url, event_types=["*"])
        assert answer.status_code == 422, (url, answer.text)
    bad = await hooks.call("POST", url="http://127.0.0.1:9/x", event_types=["post.**"])
    assert bad.status_code == 400  # the body's shape: the API's validation problem
    assert (await hooks.call("GET")).json()["items"] == []


async def test_below_admin_webhooks_are_refused(platform: Platform, world: World) -> None:
    editor = await platform.member(world.tenant_a, "editor")
    answer = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/webhooks", headers=editor.headers
    )
    assert answer.status_code == 403


async def test_a_delivery_is_signed_as_standard_webhooks_and_carries_the_event(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    await hooks.create(receiver, "settings.*")
    await hooks.change_settings("Signed")
    await hooks.run()

    assert receiver.bad_signatures == 0
    [delivery] = [d for d in receiver.deliveries if d.verified]
    event = delivery.event
    assert event["type"] == "settings.updated"
    assert event["data"]["after"]["display_name"] == "Signed"
    # webhook-id is the event's id: the same in the tenant's outbox.
    [row] = hooks.deliveries()
    assert delivery.webhook_id == str(row["event_id"])
    assert row["state"] == "delivered"
    assert row["attempts"] == 1
    # Verified independently, as a receiver would.
    Webhook(receiver.secret).verify(delivery.body, delivery.headers)


async def test_an_endpoint_gets_only_the_types_it_asked_for(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    await hooks.create(receiver, "media.*", "post.published")
    await hooks.change_settings("Unheard")
    await hooks.run()
    assert receiver.deliveries == []
    assert hooks.deliveries() == []


async def test_during_a_rotation_both_secrets_sign_and_after_it_only_the_new(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    created = await hooks.create(receiver, "settings.*")
    old = created["signing_secret"]
    rotated = await hooks.call("POST", f"/{created['id']}/rotate-secret", overlap_hours=2)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["signing_secret"]
    assert new != old
    assert rotated.json()["previous_secret_expires_at"]
    receiver.secret = new
    await hooks.change_settings("Overlap")
    await hooks.run()
    delivery = receiver.deliveries[-1]
    Webhook(old).verify(delivery.body, delivery.headers)  # a receiver not switched yet
    Webhook(new).verify(delivery.body, delivery.headers)

    again = await hooks.call("POST", f"/{created['id']}/rotate-secret", overlap_hours=0)
    newest = again.json()["signing_secret"]
    receiver.secret = newest
    await hooks.change_settings("No overlap")
    await hooks.run()
    delivery = receiver.deliveries[-1]
    Webhook(newest).verify(delivery.body, delivery.headers)
    for retired in (old, new):
        try:
            Webhook(retired).verify(delivery.body, delivery.headers)
        except WebhookVerificationError:
            continue
        raise AssertionError("a retired secret still verifies")


async def test_a_failing_receiver_is_retried_with_backoff_and_the_log_shows_each_attempt(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    created = await hooks.create(receiver, "settings.*")
    receiver.set_mode("server_error")
    await hooks.change_settings("Retried")
    await hooks.run()
    [row] = hooks.deliveries()
    assert row["state"] == "pending"
    assert row["attempts"] == 1
    assert row["last_status"] == 500
    endpoint = (await hooks.call("GET", f"/{created['id']}")).json()
    assert endpoint["failure_streak"] == 1
    assert endpoint["failing_since"]

    assert await hooks.run() == 0  # not due yet: nothing is sent before the backoff
    assert len(receiver.deliveries) == 1
    receiver.set_mode("ok")
    await hooks.run(later_s=10)  # the first backoff is 5 s ± 20 %
    [row] = hooks.deliveries()
    assert row["state"] == "delivered"
    assert row["attempts"] == 2
    endpoint = (await hooks.call("GET", f"/{created['id']}")).json()
    assert endpoint["failure_streak"] == 0
    assert endpoint["failing_since"] is None

    log = (await hooks.call("GET", f"/{created['id']}/deliveries")).json()["items"]
    assert [(a["outcome"], a["status_code"], a["attempt"]) for a in log] == [
        ("delivered", 200, 2),
        ("retrying", 500, 1),
    ]
    assert log[1]["response_excerpt"] is not None or log[1]["error"] == "HTTP 500"


async def test_a_receiver_down_then_up_gets_every_event_once_oldest_first(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    await hooks.create(receiver, "settings.*")
    receiver.set_mode("server_error")
    for n in range(5):
        await hooks.change_settings(f"Backlog {n}")
        await hooks.run()
    # While it fails, one attempt probes it; the others wait behind the probe.
    assert len(receiver.deliveries) == 1
    receiver.set_mode("ok")
    await hooks.run(later_s=10)
    # After the switch: each event once (the probe answered 500 before, so its resend is the
    # receiver's first good copy). The oldest probes first; the rest go side by side.
    after = receiver.deliveries[1:]
    assert all(d.verified for d in after)
    assert len({d.webhook_id for d in after}) == len(after) == 5
    names = [d.event["data"]["after"]["display_name"] for d in after]
    assert names[0] == "Backlog 0"
    assert sorted(names) == [f"Backlog {n}" for n in range(5)]
    assert {r["state"] for r in hooks.deliveries()} == {"delivered"}


async def test_410_gone_disables_the_endpoint_and_its_admins_are_emailed(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    created = await hooks.create(receiver, "settings.*")
    receiver.set_mode("gone")
    await hooks.change_settings("Gone")
    await hooks.run()
    endpoint = (await hooks.call("GET", f"/{created['id']}")).json()
    assert endpoint["enabled"] is False
    assert "410" in endpoint["disabled_reason"]
    [disabled] = hooks.outbox("webhook_endpoint.disabled")
    assert disabled["endpoint_id"] == created["id"]
    await _apply(hooks, "webhook_endpoint.disabled", "notify_webhook_disabled")
    mail = list((hooks.settings.data_dir / "mail").glob("*.eml"))
    assert mail, "no email to the tenant's admins"
    text = mail[0].read_text()
    assert hooks.admin.email in text
    assert "410" in text

    # Disabled: new events make no delivery; enabling it again sends what it kept.
    await hooks.change_settings("While disabled")
    await hooks.run()
    receiver.set_mode("ok")
    enabled = await hooks.call("PATCH", f"/{created['id']}", enabled=True)
    assert enabled.status_code == 200
    assert enabled.json()["disabled_reason"] is None
    await hooks.run()
    names = [d.event["data"]["after"]["display_name"] for d in receiver.deliveries if d.verified]
    assert names[-1] == "Gone"
    assert "While disabled" not in names


async def test_failing_for_long_enough_disables_the_endpoint(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    hooks.settings.__dict__["webhook_disable_after_failures"] = 2
    hooks.settings.__dict__["webhook_disable_after_h"] = 0.0
    created = await hooks.create(receiver, "settings.*")
    receiver.set_mode("server_error")
    await hooks.change_settings("Once")
    await hooks.run()
    assert (await hooks.call("GET", f"/{created['id']}")).json()["enabled"] is True
    await hooks.run(later_s=40)  # the endpoint's second backoff is 30 s ± 20 %
    endpoint = (await hooks.call("GET", f"/{created['id']}")).json()
    assert endpoint["enabled"] is False
    assert "2 in a row" in endpoint["disabled_reason"]


async def test_a_hanging_receiver_times_out_as_a_failed_attempt(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    receiver.hang_s = 10.0
    await hooks.create(receiver, "settings.*")
    receiver.set_mode("hang")
    await hooks.change_settings("Hung")
    await hooks.run()  # bounded by WEBHOOK_TIMEOUT_S (2 s here), never by the receiver
    [row] = hooks.deliveries()
    assert row["state"] == "pending"
    assert row["attempts"] == 1
    assert row["last_status"] is None


async def test_replay_redelivers_with_the_same_webhook_id_and_is_rate_limited(
    hooks: Hooks, receiver: FakeReceiver, make_relay: RelayFactory
) -> None:
    created = await hooks.create(receiver, "settings.*")
    await hooks.change_settings("Replayed")
    await hooks.run()
    relay = make_relay(routes=product_routes())  # the history is what the relay dispatched
    while await relay.dispatch_batch():
        pass
    first = receiver.deliveries[-1]

    replay = await hooks.call("POST", f"/{created['id']}/replay", since="2026-01-01T00:00:00Z")
    assert replay.status_code == 202, replay.text
    assert replay.json()["events"] >= 1
    await hooks.run()
    again = [d for d in receiver.deliveries if d.webhook_id == first.webhook_id]
    assert len(again) == 2
    assert again[1].duplicate
    assert again[1].body == first.body

    too_soon = await hooks.call("POST", f"/{created['id']}/replay", from_event_id=first.webhook_id)
    assert too_soon.status_code == 429
    assert "Retry-After" in too_soon.headers
    neither = await hooks.platform.client.post(
        f"{hooks.base}/{created['id']}/replay", json={}, headers=hooks.admin.headers
    )
    assert neither.status_code == 422


async def test_the_test_delivery_answers_synchronously_and_is_signed(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    created = await hooks.create(receiver, "settings.*")
    answer = await hooks.call("POST", f"/{created['id']}/test")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["delivered"] is True
    assert body["status_code"] == 200
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert delivery.event["type"] == "webhook.test"
    assert delivery.webhook_id == body["webhook_id"]

    receiver.set_mode("server_error")
    failed = (await hooks.call("POST", f"/{created['id']}/test")).json()
    assert failed["delivered"] is False
    assert failed["status_code"] == 500


async def test_the_test_delivery_holds_no_transaction_while_the_endpoint_answers(
    hooks: Hooks, receiver: FakeReceiver, database_url: str
) -> None:
    created = await hooks.create(receiver, "settings.*")
    held: list[int] = []

    def look(delivery: Any) -> None:  # on the receiver's thread, mid-request
        held.append(open_api_transactions(database_url))

    receiver.on_delivery = look
    answer = await hooks.call("POST", f"/{created['id']}/test")
    assert answer.status_code == 200, answer.text
    assert answer.json()["delivered"] is True
    # One request to the endpoint, and the API's transaction had ended before it was sent: a
    # slow endpoint holds no pooled connection (nor any lock) for as long as it takes.
    assert held == [0]


async def test_test_deliveries_past_the_tenants_limit_are_refused_and_not_sent(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    created = await hooks.create(receiver, "settings.*")
    other = await hooks.create(receiver, "settings.*")
    limit = hooks.settings.webhook_tests_per_minute
    # The limit counts in whole minutes: start where a minute has time to spare.
    if time.time() % WINDOW_S > WINDOW_S - 20:
        await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.1)
    for _ in range(limit):
        sent = await hooks.call("POST", f"/{created['id']}/test")
        assert sent.status_code == 200, sent.text
    refused = await hooks.call("POST", f"/{created['id']}/test")
    assert refused.status_code == 429
    assert refused.json()["type"].endswith("/rate-limited")
    assert "webhook tests" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    # Another endpoint (or a new one at the same URL) shares the tenant's count.
    assert (await hooks.call("POST", f"/{other['id']}/test")).status_code == 429
    assert len(receiver.deliveries) == limit  # the refused ones were never sent


async def test_the_relay_routes_events_to_webhooks_only_for_tenants_with_endpoints(
    hooks: Hooks,
    receiver: FakeReceiver,
    world: World,
    platform: Platform,
    make_relay: RelayFactory,
    redis_client: redis.Redis,
    pg: psycopg.Connection[Any],
) -> None:
    await hooks.create(receiver, "settings.*")
    await hooks.change_settings("Routed")
    other = await platform.client.put(
        f"/api/v1/tenants/{world.tenant_b}/settings",
        json={"display_name": "Not routed"},
        headers=world.owner_b.headers,
    )
    assert other.status_code == 200
    ids = {
        slug: uuid.UUID(str(row[0]))
        for slug, row in (
            (
                slug,
                pg.execute(
                    "SELECT event_id FROM shared.outbox o "
                    "JOIN shared.tenants t ON t.id = o.tenant_id "
                    "WHERE t.slug = %s AND event_type = 'settings.updated'",
                    (slug,),
                ).fetchone(),
            )
            for slug in (world.tenant_a, world.tenant_b)
        )
        if row is not None
    }
    relay = make_relay(routes=product_routes())
    while await relay.dispatch_batch():
        pass
    queued = set(redis_client.hkeys(f"{NAMESPACE}:webhooks.msgs"))
    assert f"{ids[world.tenant_a]}.deliver_webhooks".encode() in queued
    assert f"{ids[world.tenant_b]}.deliver_webhooks".encode() not in queued


def _listed_for_the_relay(hooks: Hooks) -> bool:
    row = hooks.pg.execute(
        "SELECT count(*) FROM shared.webhook_tenants WHERE tenant_id = %s", (hooks.tenant_id,)
    ).fetchone()
    return row == (1,)


async def test_a_tenant_is_routed_to_webhooks_while_it_has_an_endpoint_and_no_longer(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    assert not _listed_for_the_relay(hooks)
    one = await hooks.create(receiver, "settings.*")
    two = await hooks.create(receiver, "media.*")
    assert _listed_for_the_relay(hooks)
    assert (await hooks.call("DELETE", f"/{one['id']}")).status_code == 204
    assert _listed_for_the_relay(hooks)  # one endpoint left
    assert (await hooks.call("DELETE", f"/{two['id']}")).status_code == 204
    assert not _listed_for_the_relay(hooks)  # its events no longer go to deliver_webhooks
    await hooks.create(receiver, "*")
    assert _listed_for_the_relay(hooks)


async def test_an_endpoint_created_while_the_last_one_is_deleted_stays_routed(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    last = await hooks.create(receiver, "*")
    async with unit_of_work(hooks.factory) as session:
        tenant = await TenantDirectory(ttl_s=0).find(session, hooks.tenant)
    assert tenant is not None
    access = TenantAccess(tenant, Principal(uuid.uuid4(), "", is_operator=True), None, False)
    vault = Vault.from_settings(hooks.settings)

    async def delete_the_last() -> None:
        async with unit_of_work(hooks.factory) as deleting:
            await enter_tenant_schema(deleting, tenant.schema_name)
            await services.delete_endpoint(deleting, access, uuid.UUID(last["id"]))

    async with unit_of_work(hooks.factory) as creating:
        await enter_tenant_schema(creating, tenant.schema_name)
        new = WebhookCreate(url=receiver.url, event_types=["*"])
        await services.create_endpoint(
            creating, access, settings=hooks.settings, vault=vault, data=new
        )
        # The last endpoint is deleted meanwhile: it cannot see the new one, not committed yet.
        deleting = asyncio.create_task(delete_the_last())
        await asyncio.sleep(0.5)
    await deleting
    # Both committed, one endpoint is left, and its tenant's events still go to it.
    endpoints = hooks.pg.execute(f'SELECT count(*) FROM "{hooks.schema}".webhook_endpoints')
    assert endpoints.fetchone() == (1,)
    assert _listed_for_the_relay(hooks)


async def test_event_types_are_documented_with_their_payload_schemas(platform: Platform) -> None:
    answer = await platform.client.get("/api/v1/event-types")
    assert answer.status_code == 200
    types = {t["type"]: t for t in answer.json()["items"]}
    assert "post.published" in types
    assert "media.captioned" in types
    assert "post.publish_due" not in types  # internal scheduling is not an event to receive
    assert "webhook_endpoint.due" not in types
    schema = types["settings.updated"]["schema"]
    assert "$defs" in schema or "properties" in schema
    page = await platform.client.get("/schema/openapi.json")
    assert "/api/v1/event-types" in page.text


async def _apply(hooks: Hooks, event_type: str, actor: str) -> None:
    for row in await pending_rows(hooks.factory, hooks.tenant_id, event_type):
        await apply_named_event(actor, envelope_of(row), hooks.factory)


async def test_urls_httpx_cannot_send_are_refused_not_a_server_error(hooks: Hooks) -> None:
    for url in ("http://127.0.0.1:9/\x01", "http://[::1", "http://127.0.0.1:9/" + "é" * 2000):
        answer = await hooks.call("POST", url=url, event_types=["*"])
        assert answer.status_code in (400, 422), (url[:40], answer.text)
    assert (await hooks.call("GET")).json()["items"] == []


async def test_two_events_fanned_out_at_once_to_one_endpoint_are_both_delivered(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    """Concurrent fan-outs lock the endpoints' rows compatibly (no deadlock, nothing lost)."""
    with fake_receiver(receiver.secret) as other:
        await hooks.create(receiver, "settings.*")
        await hooks.create(other, "settings.updated")
        for n in range(6):
            await hooks.change_settings(f"Concurrent {n}")
        rows = await pending_rows(hooks.factory, hooks.tenant_id, "settings.updated")
        await asyncio.gather(
            *(apply_named_event("deliver_webhooks", envelope_of(r), hooks.factory) for r in rows)
        )
        states = [(r["state"], r["attempts"], r["last_status"]) for r in hooks.deliveries()]
        assert states == [("delivered", 1, 200)] * 12
        assert receiver.bad_signatures == other.bad_signatures == 0
        assert receiver.distinct == other.distinct == 6


async def test_a_worker_dying_mid_send_leaves_the_delivery_to_the_endpoints_drain(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    """Fanned out and leased, never sent (the worker died): after the lease the drain sends
    it, once, with the event's id."""
    await hooks.create(receiver, "settings.*")
    await hooks.change_settings("Orphaned")
    [row] = await pending_rows(hooks.factory, hooks.tenant_id, "settings.updated")
    async with unit_of_work(hooks.factory) as session:  # the actor's first step, then death
        await enter_tenant_schema(session, hooks.schema)
        claimed = await dispatch.fan_out(
            session,
            Event.from_message_arg(envelope_of(row)),
            settings=hooks.settings,
            vault=Vault.from_settings(hooks.settings),
            tenant_id=hooks.tenant_id,
            tenant=hooks.tenant,
        )
        assert len(claimed) == 1
    assert receiver.deliveries == []
    await hooks.run(later_s=dispatch.lease_s(hooks.settings) + 1)
    [delivery] = receiver.deliveries
    assert delivery.verified
    assert delivery.webhook_id == str(row.event_id)
    assert [r["state"] for r in hooks.deliveries()] == ["delivered"]


async def test_a_redirect_is_a_failure_and_is_never_followed(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    await hooks.create(receiver, "settings.*")
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data/"
    receiver.set_mode("redirect")
    await hooks.change_settings("Redirected")
    await hooks.run()
    [row] = hooks.deliveries()
    assert (row["state"], row["attempts"], row["last_status"]) == ("pending", 1, 302)
    assert len(receiver.deliveries) == 1  # nothing went where it pointed


async def test_a_huge_answer_is_read_no_further_than_its_start(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    created = await hooks.create(receiver, "settings.*")
    receiver.set_mode("huge")
    await hooks.change_settings("Huge")
    await hooks.run()
    [row] = hooks.deliveries()
    assert (row["state"], row["last_status"]) == ("delivered", 200)
    [attempt] = (await hooks.call("GET", f"/{created['id']}/deliveries")).json()["items"]
    assert len(attempt["response_excerpt"] or "") <= 1000


async def test_past_the_retry_window_a_delivery_is_given_up_and_the_log_says_so(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    created = await hooks.create(receiver, "settings.*")
    receiver.set_mode("server_error")
    await hooks.change_settings("Given up")
    await hooks.run()
    await hooks.run(later_s=hooks.settings.webhook_retry_window_h * 3600 + 60)
    [row] = hooks.deliveries()
    assert (row["state"], row["attempts"]) == ("failed", 2)
    log = (await hooks.call("GET", f"/{created['id']}/deliveries")).json()["items"]
    assert [a["outcome"] for a in log] == ["failed", "retrying"]
    await hooks.run(later_s=3600)
    assert len(receiver.deliveries) == 2  # never tried again


async def test_two_drains_of_a_failing_endpoint_at_once_send_one_probe(
    hooks: Hooks, receiver: FakeReceiver
) -> None:
    await hooks.create(receiver, "settings.*")
    receiver.set_mode("server_error")
    for n in range(3):
        await hooks.change_settings(f"Probe {n}")
        await hooks.run()
    assert len(receiver.deliveries) == 1  # the first failed; the others wait behind it
    hooks.age(40)  # past the endpoint's backoff
    due = (await pending_rows(hooks.factory, hooks.tenant_id, "webhook_endpoint.due"))[-1]
    twins = [envelope_of(due) | {"event_id": str(uuid.uuid4())} for _ in range(2)]
    await asyncio.gather(
        *(apply_named_event("deliver_webhooks", twin, hooks.factory) for twin in twins)
    )
    assert len(receiver.deliveries) == 2  # one probe, not two


async def test_a_key_calling_the_test_delivery_has_its_use_recorded(
    hooks: Hooks, receiver: FakeReceiver, world: World, platform: Platform
) -> None:
    """The request's transaction ends (committed) before the endpoint is called: what the
    guards did in it, such as stamping the API key's last use, stays done."""
    created = await hooks.create(receiver, "settings.*")
    made = await platform.client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": "ci", "role": "admin"},
        headers=world.owner_a.headers,
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    answer = await platform.client.post(
        f"{hooks.base}/{created['id']}/test", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["delivered"] is True
    used = hooks.pg.execute(
        "SELECT last_used_at IS NOT NULL FROM shared.api_keys WHERE prefix = %s", (key[:12],)
    ).fetchone()
    assert used == (True,)
