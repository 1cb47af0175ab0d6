"""The publish engine against loopback platforms: deliveries, retries, partial outcomes, unknown
outcomes reconciled by lookup, crashes between the platform's answer and the receipt, stale due
events, and the accounts' tokens."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from socialflow.db.session import unit_of_work
from socialflow.db.tenancy import enter_tenant_schema
from socialflow.publishing import deliveries
from socialflow.publishing.watchdog import sweep_stalled
from socialflow.settings import Settings
from socialflow.social.platforms.bluesky import BlueskyAdapter
from socialflow.social.services import reseal_social_secrets
from socialflow.vault.rotation import rotate_tenant_key
from socialflow.vault.service import Vault
from socialflow.workers.actors import apply_named_event
from socialflow.workers.testing import pending_envelopes
from tests.integration.held_transactions import open_api_transactions
from tests.integration.publishing.conftest import Studio
from tests.integration.social.fake_bluesky import FakePds
from tests.integration.social.fake_mastodon import FakeMastodon
from tests.integration.social.fake_receiver import FakeReceiver


class WorkerKilled(Exception):
    """The process died here: nothing after this point of the delivery ran."""


class ProcessDied(BaseException):
    """The process died inside the adapter's call: nothing catches it, nothing after it ran."""


STALLED_S = 600  # PUBLISH_STALLED_AFTER_S's default: when the watchdog's check comes due


def _soon(days: int = 2) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def _published_now(studio: Studio, **body: Any) -> dict[str, Any]:
    post = await studio.approved(**body)
    answer = await studio.call("POST", f"/{post['id']}/publish")
    assert answer.status_code == 200, answer.text
    return post


def _statuses(instance: FakeMastodon) -> list[Any]:
    return list(instance.statuses.values())


async def test_two_destinations_one_refusing_make_a_partially_published_post(
    studio: Studio, receiver: FakeReceiver, second_receiver: FakeReceiver
) -> None:
    good, gone = await studio.webhook(receiver, "good"), await studio.webhook(second_receiver, "x")
    second_receiver.set_mode("gone")
    post = await _published_now(
        studio, text="both", destinations=[{"account_id": good["id"]}, {"account_id": gone["id"]}]
    )
    await studio.run_engine()
    after = await studio.post(post["id"])
    assert after["status"] == "partially_published"
    states = {d["account_id"]: d for d in after["destinations"]}
    assert states[good["id"]]["state"] == "published"
    assert states[gone["id"]]["state"] == "failed"
    assert states[gone["id"]]["error_kind"] == "destination_refused"
    assert [e["type"] for e in studio.events("post.partially_published")] == [
        "post.partially_published"
    ]


async def test_a_rate_limited_delivery_waits_for_the_platforms_reset_then_publishes_once(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    receiver.retry_after = "120"
    receiver.set_mode("rate_limited")
    post = await _published_now(studio, text="later", destinations=[{"account_id": hook["id"]}])
    await studio.run_engine()
    waiting = (await studio.post(post["id"]))["destinations"][0]
    assert waiting["state"] == "retrying"
    assert datetime.fromisoformat(waiting["next_attempt_at"]) >= datetime.now(UTC) + timedelta(
        seconds=110
    )
    await studio.run_engine_later(60)  # not yet: nothing is sent before the reset
    assert len(receiver.deliveries) == 1
    receiver.set_mode("ok")
    await studio.run_engine_later(130)
    after = await studio.post(post["id"])
    assert after["status"] == "published"
    assert after["destinations"][0]["attempts"] == 2
    assert receiver.distinct == 1


async def test_retries_are_bounded_then_the_delivery_fails(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    receiver.set_mode("server_error")
    post = await _published_now(studio, text="doomed", destinations=[{"account_id": hook["id"]}])
    for _ in range(8):
        await studio.run_engine_later(4 * 3600)
    after = await studio.post(post["id"])
    assert after["status"] == "failed"
    assert after["destinations"][0]["attempts"] == 6  # PUBLISH_MAX_ATTEMPTS
    assert len(receiver.deliveries) == 6


async def test_an_answer_lost_after_mastodon_accepted_is_found_by_lookup_not_posted_again(
    studio: Studio, instance: FakeMastodon
) -> None:
    account = await studio.mastodon(instance)
    instance.set_mode("drop_after_accept", times=1)
    post = await _published_now(
        studio, text="only once", destinations=[{"account_id": account["id"]}]
    )
    await studio.run_engine()
    unconfirmed = await studio.post(post["id"])
    assert unconfirmed["destinations"][0]["state"] == "unconfirmed"
    assert unconfirmed["status"] == "unconfirmed"
    await studio.run_engine_later(60)  # the lookup comes due
    after = await studio.post(post["id"])
    assert after["status"] == "published"
    (status,) = _statuses(instance)
    assert after["destinations"][0]["platform_post_id"] == status.id
    assert instance.statuses_created == 1


async def test_a_worker_killed_after_the_platform_accepted_is_reconciled_and_never_posts_twice(
    studio: Studio, instance: FakeMastodon, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await studio.mastodon(instance)

    async def killed(*args: Any, **kwargs: Any) -> None:
        raise WorkerKilled("before the receipt committed")

    post = await _published_now(studio, text="crash", destinations=[{"account_id": account["id"]}])
    with monkeypatch.context() as patched:
        patched.setattr(deliveries, "settle", killed)
        with pytest.raises(WorkerKilled):
            await studio.run_engine()
    assert instance.statuses_created == 1
    stuck = await studio.post(post["id"])
    assert stuck["status"] == "publishing"
    assert stuck["destinations"][0]["state"] == "sending"
    await studio.run_engine()  # a redelivery of the due event: already processed, a no-op
    assert instance.statuses_created == 1
    studio.age_deliveries(STALLED_S + 5)
    await studio.run_engine_later(STALLED_S + 5)  # the watchdog's check
    after = await studio.post(post["id"])
    assert after["status"] == "published"
    assert after["destinations"][0]["platform_post_id"] == _statuses(instance)[0].id
    assert instance.statuses_created == 1
    posts_sent = instance.requests_to("POST", "/api/v1/statuses")
    assert len(posts_sent) == 1


async def test_a_worker_killed_before_the_platform_received_sends_after_a_definite_no(
    studio: Studio, instance: FakeMastodon, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await studio.mastodon(instance)
    from socialflow.publishing import engine

    async def killed(*args: Any, **kwargs: Any) -> None:
        raise WorkerKilled("before calling")

    post = await _published_now(
        studio, text="never sent", destinations=[{"account_id": account["id"]}]
    )
    with monkeypatch.context() as patched:
        patched.setattr(engine, "_publish", killed)
        with pytest.raises(WorkerKilled):
            await studio.run_engine()
    assert instance.statuses_created == 0
    studio.age_deliveries(STALLED_S + 5)
    await studio.run_engine_later(STALLED_S + 5)
    after = await studio.post(post["id"])
    assert after["status"] == "published"
    assert after["destinations"][0]["attempts"] == 2
    assert instance.statuses_created == 1


def _posts_counted(studio: Studio) -> list[tuple[datetime, int]]:
    """The tenant's monthly posts counts, by billing period, oldest first."""
    rows = studio.pg.execute(
        "SELECT period_start, used FROM shared.tenant_usage "
        "WHERE tenant_id = %s AND resource = 'posts_per_month' ORDER BY period_start",
        (studio.tenant_id,),
    ).fetchall()
    return [(start, int(used)) for start, used in rows]  # type: ignore[call-overload]


async def test_cancelling_a_post_scheduled_last_month_gives_its_unit_back_to_that_month(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    last_month = await studio.approved(
        text="from last month", destinations=[{"account_id": hook["id"]}], scheduled_at=_soon()
    )
    assert (await studio.call("POST", f"/{last_month['id']}/schedule")).status_code == 200
    [(current, used)] = _posts_counted(studio)
    assert used == 1
    # As if it had been scheduled in the previous billing period: its unit counted there (a
    # period as it was then: the anchor day or time zone may have changed since).
    previous = current - timedelta(days=30, hours=5)
    studio.pg.execute(
        f"UPDATE {studio.tenant_schema}.posts SET quota_period_start = %s WHERE id = %s",
        (previous, last_month["id"]),
    )
    studio.pg.execute(
        "UPDATE shared.tenant_usage SET period_start = %s "
        "WHERE tenant_id = %s AND resource = 'posts_per_month'",
        (previous, studio.tenant_id),
    )
    this_month = await studio.approved(
        text="this month", destinations=[{"account_id": hook["id"]}], scheduled_at=_soon()
    )
    assert (await studio.call("POST", f"/{this_month['id']}/schedule")).status_code == 200
    assert _posts_counted(studio) == [(previous, 1), (current, 1)]

    cancelled = await studio.call("POST", f"/{last_month['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    # Last month used one post fewer; this month still counts the post it scheduled.
    assert _posts_counted(studio) == [(previous, 0), (current, 1)]


async def test_a_cancel_makes_the_due_event_already_queued_a_no_op(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.approved(
        text="cancel me", destinations=[{"account_id": hook["id"]}], scheduled_at=_soon()
    )
    assert (await studio.call("POST", f"/{post['id']}/schedule")).status_code == 200
    assert (await studio.call("POST", f"/{post['id']}/cancel")).json()["status"] == "cancelled"
    await studio.run_engine_later(3 * 86400)
    assert (await studio.post(post["id"]))["status"] == "cancelled"
    assert receiver.connections == []


async def test_a_reschedule_leaves_the_old_due_event_stale_and_publishes_once(
    studio: Studio, receiver: FakeReceiver
) -> None:
    await studio.settings(review_required=False)
    hook = await studio.webhook(receiver)
    post = await studio.draft(
        text="moving", destinations=[{"account_id": hook["id"]}], scheduled_at=_soon(2)
    )
    await studio.call("POST", f"/{post['id']}/submit")
    assert (await studio.call("POST", f"/{post['id']}/schedule")).status_code == 200
    moved = await studio.call("PATCH", f"/{post['id']}", scheduled_at=_soon(3))
    assert moved.json()["status"] == "approved"  # approved again at once: no review here
    assert (await studio.call("POST", f"/{post['id']}/schedule")).status_code == 200
    await studio.run_engine_later(2 * 86400 + 3600)  # the first time: stale
    assert receiver.connections == []
    await studio.run_engine_later(3 * 86400 + 3600)
    assert (await studio.post(post["id"]))["status"] == "published"
    assert len(receiver.deliveries) == 1


async def test_a_cancel_racing_the_due_event_either_cancels_or_publishes_never_both(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    for _ in range(3):
        post = await _published_now(studio, text="race", destinations=[{"account_id": hook["id"]}])
        before = len(receiver.deliveries)
        cancel, _ = await asyncio.gather(
            studio.call("POST", f"/{post['id']}/cancel"), studio.run_engine()
        )
        after = await studio.post(post["id"])
        if cancel.status_code == 200:
            assert after["status"] == "cancelled"
            assert len(receiver.deliveries) == before
        else:
            assert cancel.status_code == 409
            assert after["status"] == "published"
            assert len(receiver.deliveries) == before + 1


async def test_an_edit_while_publishing_is_refused(studio: Studio, receiver: FakeReceiver) -> None:
    hook = await studio.webhook(receiver)
    receiver.hang_s = 1.5
    receiver.set_mode("hang")
    post = await _published_now(studio, text="busy", destinations=[{"account_id": hook["id"]}])
    engine = asyncio.create_task(studio.run_engine())
    for _ in range(200):
        if receiver.deliveries:
            break
        await asyncio.sleep(0.01)
    edit = await studio.call("PATCH", f"/{post['id']}", text="changed")
    assert edit.status_code == 409
    assert edit.json()["status_now"] == "publishing"
    await engine


async def test_a_revoked_mastodon_token_fails_the_delivery_and_asks_for_a_reconnect(
    studio: Studio, instance: FakeMastodon
) -> None:
    account = await studio.mastodon(instance)
    instance.set_mode("unauthorized")
    post = await _published_now(studio, text="x", destinations=[{"account_id": account["id"]}])
    await studio.run_engine()
    after = await studio.post(post["id"])
    assert after["destinations"][0]["error_kind"] == "auth_revoked"
    shown = await studio.client.get(
        f"{studio.base}/social-accounts/{account['id']}", headers=studio.editor.headers
    )
    assert shown.json()["status"] == "needs_reconnect"
    assert [e["type"] for e in studio.events("social_account.needs_reconnect")] == [
        "social_account.needs_reconnect"
    ]
    refused = await studio.call(
        "POST", "", text="again", destinations=[{"account_id": account["id"]}]
    )
    assert refused.status_code == 422


async def test_concurrent_publishes_refresh_an_expiring_token_once(
    studio: Studio, pds: FakePds
) -> None:
    pds.access_ttl_s = 60  # inside the refresh margin: every publish wants a fresh one
    account = await studio.bluesky(pds)
    pds.access_ttl_s = 7200  # what a refresh then gives
    posts = [
        await _published_now(studio, text=f"post {n}", destinations=[{"account_id": account["id"]}])
        for n in range(3)
    ]
    due = await pending_envelopes(studio.factory, studio.tenant_id, "post.publish_due")
    assert len(due) == 3
    # Three deliveries at once, as three worker threads would run them.
    await asyncio.gather(*(apply_named_event("publish_post", e, studio.factory) for e in due))
    for post in posts:
        assert (await studio.post(post["id"]))["status"] == "published"
    assert len(pds.calls_to("com.atproto.server.refreshSession")) == 1


async def test_no_transaction_is_held_while_the_platform_refreshes_a_token(
    studio: Studio, pds: FakePds, database_url: str
) -> None:
    pds.access_ttl_s = 60  # inside the refresh margin
    account = await studio.bluesky(pds)
    pds.access_ttl_s = 7200
    held: list[int] = []

    def look(nsid: str) -> None:  # on the PDS's thread, mid-call
        if nsid == "com.atproto.server.refreshSession":
            held.append(open_api_transactions(database_url))

    pds.on_call = look
    post = await _published_now(studio, text="x", destinations=[{"account_id": account["id"]}])
    await studio.run_engine()
    assert (await studio.post(post["id"]))["status"] == "published"
    # One refresh, and the worker held no transaction (no pooled connection, no row lock)
    # while the platform answered it.
    assert held == [0]


async def test_a_refresh_left_by_a_dead_worker_is_taken_over_when_its_lease_ends(
    studio: Studio, pds: FakePds
) -> None:
    pds.access_ttl_s = 60
    account = await studio.bluesky(pds)
    pds.access_ttl_s = 7200
    # A worker took the refresh and died in the call: its lease runs a little longer.
    studio.pg.execute(
        f"UPDATE {studio.tenant_schema}.social_accounts "
        "SET refresh_lease_until = now() + interval '2 seconds' WHERE id = %s",
        (account["id"],),
    )
    post = await _published_now(studio, text="x", destinations=[{"account_id": account["id"]}])
    await studio.run_engine()
    assert (await studio.post(post["id"]))["status"] == "published"
    assert len(pds.calls_to("com.atproto.server.refreshSession")) == 1
    lease = studio.pg.execute(
        f"SELECT refresh_lease_until, credentials_version FROM {studio.tenant_schema}"
        ".social_accounts WHERE id = %s",
        (account["id"],),
    ).fetchone()
    assert lease == (None, 2)  # refreshed once, and the lease let go


async def test_a_refresh_that_breaks_lets_go_of_its_lease_at_once(
    studio: Studio, pds: FakePds, monkeypatch: pytest.MonkeyPatch
) -> None:
    pds.access_ttl_s = 60
    account = await studio.bluesky(pds)

    async def broken(self: BlueskyAdapter, account: Any) -> Any:
        raise RuntimeError("an adapter's bug")

    monkeypatch.setattr(BlueskyAdapter, "refresh", broken)
    await _published_now(studio, text="x", destinations=[{"account_id": account["id"]}])
    with pytest.raises(RuntimeError):  # the actor fails (Dramatiq retries it)
        await studio.run_engine()
    lease = studio.pg.execute(
        f"SELECT refresh_lease_until FROM {studio.tenant_schema}.social_accounts WHERE id = %s",
        (account["id"],),
    ).fetchone()
    assert lease == (None,)  # the next delivery need not wait for it to run out


async def test_a_revoked_bluesky_session_marks_the_account_for_reconnecting(
    studio: Studio, pds: FakePds
) -> None:
    pds.access_ttl_s = 60
    account = await studio.bluesky(pds)
    did = next(iter(pds.accounts))
    pds.revoke_sessions(did)
    post = await _published_now(studio, text="x", destinations=[{"account_id": account["id"]}])
    await studio.run_engine()
    assert (await studio.post(post["id"]))["destinations"][0]["state"] == "failed"
    listed = await studio.client.get(
        f"{studio.base}/social-accounts", headers=studio.editor.headers
    )
    (shown,) = listed.json()["items"]
    assert shown["status"] == "needs_reconnect"


async def _killed_between_post_and_comment(
    studio: Studio, pds: FakePds, monkeypatch: pytest.MonkeyPatch, first_comment: str
) -> tuple[str, str]:
    """A Bluesky post written, its worker dead before the first comment; its id and the DID."""
    account = await studio.bluesky(pds)

    async def killed(*args: Any, **kwargs: Any) -> None:
        # Not an Exception: the engine takes any adapter's Exception for an unknown outcome,
        # while a process's death ends everything at once.
        raise ProcessDied("after the post, before its first comment")

    post = await _published_now(
        studio,
        text="The post",
        first_comment=first_comment,
        destinations=[{"account_id": account["id"]}],
    )
    with monkeypatch.context() as patched:
        patched.setattr(BlueskyAdapter, "_first_comment", killed)
        with pytest.raises(ProcessDied):
            await studio.run_engine()
    did = next(iter(pds.accounts))
    assert [r["text"] for r in _bluesky_posts(pds, did)] == ["The post"]
    return post["id"], did


async def test_a_worker_killed_between_a_bluesky_post_and_its_first_comment_adds_the_comment(
    studio: Studio, pds: FakePds, monkeypatch: pytest.MonkeyPatch
) -> None:
    comment_text = "More at https://example.org"
    post_id, did = await _killed_between_post_and_comment(studio, pds, monkeypatch, comment_text)
    studio.age_deliveries(STALLED_S + 5)
    await studio.run_engine_later(STALLED_S + 5)  # the watchdog's check finds the post
    after = await studio.post(post_id)
    assert after["status"] == "published", after
    texts = sorted(r["text"] for r in _bluesky_posts(pds, did))
    assert texts == [comment_text, "The post"]
    (comment,) = [r for r in _bluesky_posts(pds, did) if "reply" in r]
    assert comment["reply"]["parent"]["uri"] == after["destinations"][0]["platform_post_id"]
    assert sum(pds.created.values()) == 2  # the post once, its comment once


async def test_a_found_bluesky_post_whose_comment_fails_again_stays_published(
    studio: Studio, pds: FakePds, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_id, did = await _killed_between_post_and_comment(studio, pds, monkeypatch, "A comment")
    pds.set_mode("server_error", nsid="com.atproto.repo.createRecord")  # every write fails now
    studio.age_deliveries(STALLED_S + 5)
    await studio.run_engine_later(STALLED_S + 5)
    after = await studio.post(post_id)
    assert after["status"] == "published", after  # the post is live: never failed for this
    assert after["destinations"][0]["attempts"] == 1
    assert [r["text"] for r in _bluesky_posts(pds, did)] == ["The post"]


def _bluesky_posts(pds: FakePds, did: str) -> list[dict[str, Any]]:
    return [
        pds.record(did, rkey) or {}
        for (owner, collection, rkey) in pds.records
        if owner == did and collection == "app.bsky.feed.post"
    ]


async def test_a_bluesky_post_goes_out_with_its_image_alt_text_and_facets(
    studio: Studio, pds: FakePds
) -> None:
    account = await studio.bluesky(pds)
    media = await studio.media()
    await studio.client.patch(
        f"{studio.base}/media/{media}",
        json={"alt_text": "A red wall"},
        headers=studio.editor.headers,
    )
    post = await _published_now(
        studio,
        text="New drop 🎉 #launch https://example.com/shop",
        media_ids=[media],
        destinations=[{"account_id": account["id"]}],
    )
    await studio.run_engine()
    after = await studio.post(post["id"])
    assert after["status"] == "published", after
    did = next(iter(pds.accounts))
    rkey = after["destinations"][0]["platform_post_id"].rsplit("/", 1)[-1]
    record = pds.record(did, rkey)
    assert record is not None
    assert record["embed"]["images"][0]["alt"] == "A red wall"
    features = {f["features"][0]["$type"].rsplit("#", 1)[-1] for f in record["facets"]}
    assert features == {"tag", "link"}


async def test_credentials_are_never_shown_and_a_webhook_secret_only_once(
    studio: Studio, receiver: FakeReceiver, instance: FakeMastodon
) -> None:
    hook = await studio.webhook(receiver)
    assert hook["signing_secret"].startswith("whsec_")
    await studio.mastodon(instance)
    listed = await studio.client.get(f"{studio.base}/social-accounts", headers=studio.admin.headers)
    text = listed.text
    assert hook["signing_secret"] not in text
    for token in instance.tokens.values():
        assert token.access_token not in text
    assert all(item["signing_secret"] is None for item in listed.json()["items"])
    rows = studio.pg.execute(
        f'SELECT credentials FROM "{studio.tenant_schema}".social_accounts'
    ).fetchall()
    for (sealed,) in rows:
        assert hook["signing_secret"].encode() not in bytes(sealed)  # type: ignore[call-overload]


async def test_the_watchdog_sweep_reconciles_a_delivery_whose_own_check_was_lost(
    studio: Studio,
    instance: FakeMastodon,
    monkeypatch: pytest.MonkeyPatch,
    worker_settings: Settings,
) -> None:
    account = await studio.mastodon(instance)

    async def killed(*args: Any, **kwargs: Any) -> None:
        raise WorkerKilled("before the receipt committed")

    post = await _published_now(studio, text="lost", destinations=[{"account_id": account["id"]}])
    with monkeypatch.context() as patched:
        patched.setattr(deliveries, "settle", killed)
        with pytest.raises(WorkerKilled):
            await studio.run_engine()
    # The delivery's deferred check is gone (dead-lettered, say), and the bound has passed.
    studio.pg.execute(
        "DELETE FROM shared.outbox WHERE tenant = %s AND event_type = 'post.delivery_check_due'",
        (studio.tenant,),
    )
    studio.pg.execute(
        f'UPDATE "{studio.tenant_schema}".post_destinations '
        "SET sending_since = now() - interval '1 hour'"
    )
    async with unit_of_work(studio.factory) as session:
        await enter_tenant_schema(session, studio.tenant_schema)
        assert await sweep_stalled(session, worker_settings, studio.tenant) == 1
    async with unit_of_work(studio.factory) as session:  # swept: not again within the bound
        await enter_tenant_schema(session, studio.tenant_schema)
        assert await sweep_stalled(session, worker_settings, studio.tenant) == 0
    await studio.run_engine()
    after = await studio.post(post["id"])
    assert after["status"] == "published"
    assert instance.statuses_created == 1


async def test_a_post_over_the_instances_limit_fails_without_being_sent(
    studio: Studio, instance: FakeMastodon
) -> None:
    instance.max_characters = 20
    account = await studio.mastodon(instance)
    post = await _published_now(
        studio, text="this text is longer than twenty", destinations=[{"account_id": account["id"]}]
    )
    await studio.run_engine()
    after = await studio.post(post["id"])
    assert after["status"] == "failed"
    assert after["destinations"][0]["error_kind"] == "content_rejected"
    assert "20" in after["destinations"][0]["error_detail"]
    assert instance.requests_to("POST", "/api/v1/statuses") == []


async def test_a_mastodon_post_uploads_its_image_and_keeps_its_idempotency_key_across_retries(
    studio: Studio, instance: FakeMastodon
) -> None:
    account = await studio.mastodon(instance)
    media = await studio.media()
    await studio.client.patch(
        f"{studio.base}/media/{media}",
        json={"alt_text": "A red wall"},
        headers=studio.editor.headers,
    )
    instance.set_mode("server_error", times=1)
    post = await _published_now(
        studio,
        text="with a picture",
        media_ids=[media],
        destinations=[{"account_id": account["id"]}],
    )
    await studio.run_engine()
    assert (await studio.post(post["id"]))["destinations"][0]["state"] == "retrying"
    await studio.run_engine_later(3600)
    after = await studio.post(post["id"])
    assert after["status"] == "published", after
    (status,) = _statuses(instance)
    uploads = [m for m in instance.media.values() if m.status_id == status.id]
    assert [m.description for m in uploads] == ["A red wall"]
    keys = {
        r.headers.get("idempotency-key") for r in instance.requests_to("POST", "/api/v1/statuses")
    }
    assert len(keys) == 1
    assert None not in keys


async def test_a_check_that_comes_while_the_call_may_still_run_leaves_the_delivery_alone(
    studio: Studio, instance: FakeMastodon, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await studio.mastodon(instance)

    async def killed(*args: Any, **kwargs: Any) -> None:
        raise WorkerKilled("before the receipt committed")

    post = await _published_now(studio, text="slow", destinations=[{"account_id": account["id"]}])
    with monkeypatch.context() as patched:
        patched.setattr(deliveries, "settle", killed)
        with pytest.raises(WorkerKilled):
            await studio.run_engine()
    lookups_before = len(instance.requests_to("GET", "/api/v1/accounts/"))
    # Due (its clock ahead, say), though the call started a moment ago by the database's.
    await studio.run_engine_later(STALLED_S + 0.5)
    assert (await studio.post(post["id"]))["destinations"][0]["state"] == "sending"
    assert len(instance.requests_to("GET", "/api/v1/accounts/")) == lookups_before
    studio.age_deliveries(STALLED_S + 5)  # its bound passes: the check it wrote reconciles it
    await studio.run_engine_later(2 * STALLED_S + 10)
    assert (await studio.post(post["id"]))["status"] == "published"
    assert instance.statuses_created == 1


async def test_a_webhook_secret_is_not_kept_for_an_idempotent_replay(
    studio: Studio, receiver: FakeReceiver
) -> None:
    url = f"{studio.base}/social-accounts/connect/webhook"
    headers = {**studio.admin.headers, "Idempotency-Key": "connect-hook-1"}
    first = await studio.client.post(url, json={"url": receiver.url}, headers=headers)
    again = await studio.client.post(url, json={"url": receiver.url}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["signing_secret"].startswith("whsec_")
    assert again.json()["signing_secret"] is None
    assert again.json()["id"] == first.json()["id"]


async def test_accounts_still_publish_after_the_tenants_data_key_is_rotated(
    studio: Studio, receiver: FakeReceiver, instance: FakeMastodon, worker_settings: Settings
) -> None:
    hook = await studio.webhook(receiver)
    account = await studio.mastodon(instance)
    vault = Vault.from_settings(worker_settings)

    async def reencrypt(session: Any, old: int, new: int) -> int:
        return await reseal_social_secrets(session, vault, studio.tenant_id, old)

    async with unit_of_work(studio.factory) as session:
        await enter_tenant_schema(session, studio.tenant_schema)
        rotation = await rotate_tenant_key(session, vault, studio.tenant_id, reencrypt)
    assert rotation.reencrypted >= 3  # two accounts' credentials and the instance's app
    versions = studio.pg.execute(
        "SELECT version FROM shared.tenant_data_keys WHERE tenant_id = %s", (studio.tenant_id,)
    ).fetchall()
    assert versions == [(rotation.new_version,)]
    post = await _published_now(
        studio,
        text="after rotation",
        destinations=[{"account_id": hook["id"]}, {"account_id": account["id"]}],
    )
    await studio.run_engine()
    assert (await studio.post(post["id"]))["status"] == "published"
