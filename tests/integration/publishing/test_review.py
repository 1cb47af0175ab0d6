"""Posts: writing, review and approval bound to the content's hash, and the states' rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.integration.publishing.conftest import Studio
from tests.integration.social.fake_receiver import FakeReceiver
from tests.integration.tenancy_fixtures import Account


async def test_a_post_is_reviewed_approved_published_and_received_signed(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    media = await studio.media()
    post = await studio.draft(
        text="Spring launch #sale",
        media_ids=[media],
        destinations=[{"account_id": hook["id"]}],
        labels=["launch"],
    )
    assert post["status"] == "draft"
    submitted = await studio.call("POST", f"/{post['id']}/submit")
    assert submitted.json()["status"] == "pending_review"
    approved = await studio.call("POST", f"/{post['id']}/approve", studio.admin)
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "approved"
    assert body["approved_sha256"] == body["content_sha256"]

    published = await studio.call("POST", f"/{post['id']}/publish")
    assert published.status_code == 200, published.text
    assert published.json()["status"] == "scheduled"
    await studio.run_engine()

    after = await studio.post(post["id"])
    assert after["status"] == "published"
    (delivery,) = after["destinations"]
    assert delivery["state"] == "published"
    assert delivery["platform_post_id"]
    (received,) = receiver.deliveries
    assert received.verified
    assert received.event["data"]["text"] == "Spring launch #sale"
    assert receiver.bad_signatures == 0
    types = [e["type"] for e in studio.events("post.published", "post.destination_published")]
    assert types == ["post.destination_published", "post.published"]


async def test_an_edit_after_approval_clears_it_and_returns_the_post_to_review(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.approved(text="v1", destinations=[{"account_id": hook["id"]}])
    edited = await studio.call("PATCH", f"/{post['id']}", text="v2")
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert body["status"] == "pending_review"
    assert body["approved_sha256"] is None
    assert body["content_sha256"] != post["approved_sha256"]
    refused = await studio.call("POST", f"/{post['id']}/publish")
    assert refused.status_code == 409
    assert refused.json()["status_now"] == "pending_review"
    comments = (await studio.call("GET", f"/{post['id']}/comments")).json()["items"]
    assert [c["kind"] for c in comments] == ["approved", "approval_cleared"]


async def test_the_engine_refuses_content_whose_hash_differs_from_the_approved_one(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.approved(text="approved words", destinations=[{"account_id": hook["id"]}])
    assert (await studio.call("POST", f"/{post['id']}/publish")).status_code == 200
    # Changed behind the API's back (a bug, an operator's UPDATE): the hash no longer matches.
    studio.pg.execute(
        f'UPDATE "{studio.tenant_schema}".posts SET text = %s WHERE id = %s',
        ("words nobody approved", post["id"]),
    )
    await studio.run_engine()
    after = await studio.post(post["id"])
    assert after["status"] == "failed"
    assert after["destinations"][0]["error_kind"] == "approval_mismatch"
    assert receiver.connections == []


async def test_without_review_a_submitted_post_is_approved_at_once(
    studio: Studio, receiver: FakeReceiver
) -> None:
    await studio.settings(review_required=False)
    hook = await studio.webhook(receiver)
    post = await studio.draft(text="quick one", destinations=[{"account_id": hook["id"]}])
    submitted = await studio.call("POST", f"/{post['id']}/submit")
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["status"] == "approved"
    assert submitted.json()["approved_sha256"] == submitted.json()["content_sha256"]


async def test_authors_may_not_approve_their_own_posts_unless_the_tenant_allows_it(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.draft(text="mine", destinations=[{"account_id": hook["id"]}])
    await studio.call("POST", f"/{post['id']}/submit", studio.admin)
    refused = await studio.call("POST", f"/{post['id']}/approve", studio.admin)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("self-approval-forbidden")
    assert (await studio.post(post["id"]))["status"] == "pending_review"
    await studio.settings(self_approval_allowed=True)
    allowed = await studio.call("POST", f"/{post['id']}/approve", studio.admin)
    assert allowed.status_code == 200, allowed.text


async def test_editors_may_not_approve(studio: Studio, receiver: FakeReceiver) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.draft(text="x", destinations=[{"account_id": hook["id"]}])
    await studio.call("POST", f"/{post['id']}/submit")
    assert (await studio.call("POST", f"/{post['id']}/approve")).status_code == 403


async def test_changes_requested_go_back_to_the_author_with_the_comment(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.draft(text="draft", destinations=[{"account_id": hook["id"]}])
    await studio.call("POST", f"/{post['id']}/submit")
    asked = await studio.call(
        "POST", f"/{post['id']}/request-changes", studio.admin, body="Shorter, please."
    )
    assert asked.json()["status"] == "changes_requested"
    thread = (await studio.call("GET", f"/{post['id']}/comments")).json()["items"]
    assert thread[-1]["body"] == "Shorter, please."
    assert thread[-1]["kind"] == "changes_requested"
    again = await studio.call("POST", f"/{post['id']}/submit")
    assert again.json()["status"] == "pending_review"


async def test_an_illegal_transition_is_a_409_naming_the_current_state(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.draft(text="x", destinations=[{"account_id": hook["id"]}])
    refused = await studio.call("POST", f"/{post['id']}/approve", studio.admin)
    assert refused.status_code == 409
    assert refused.json()["status_now"] == "draft"
    assert "draft" in refused.json()["detail"]


async def test_scheduling_in_the_past_is_refused_and_changes_nothing(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    answer = await studio.call(
        "POST", "", text="late", destinations=[{"account_id": hook["id"]}], scheduled_at=past
    )
    assert answer.status_code == 422
    assert answer.json()["type"].endswith("schedule-in-past")
    listed = (await studio.call("GET", "")).json()["items"]
    assert listed == []


async def test_a_time_without_offset_is_the_tenants_local_time(
    studio: Studio, receiver: FakeReceiver
) -> None:
    await studio.settings(timezone="America/New_York")
    hook = await studio.webhook(receiver)
    local = datetime.now(UTC).astimezone().replace(tzinfo=None) + timedelta(days=30)
    post = await studio.draft(
        text="x", destinations=[{"account_id": hook["id"]}], scheduled_at=local.isoformat()
    )
    scheduled = datetime.fromisoformat(post["scheduled_at"])
    expected = local.replace(tzinfo=__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert scheduled == expected
    assert post["scheduled_local"].startswith(local.isoformat()[:16])


async def test_an_account_of_another_tenant_is_not_a_destination(
    studio: Studio, receiver: FakeReceiver
) -> None:
    import uuid

    answer = await studio.call(
        "POST", "", text="x", destinations=[{"account_id": str(uuid.uuid4())}]
    )
    assert answer.status_code == 422
    assert answer.json()["type"].endswith("destination-unavailable")


async def test_media_that_is_not_ready_is_refused(studio: Studio, receiver: FakeReceiver) -> None:
    started = await studio.uploader.start(b"x" * 100)
    pending = started.json()["media_id"]
    answer = await studio.call("POST", "", text="x", media_ids=[pending])
    assert answer.status_code == 422
    assert answer.json()["type"].endswith("media-not-ready")


async def test_an_editor_made_a_reviewer_may_approve_and_no_longer_once_revoked(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    reviewer_account = await studio.platform.member(studio.tenant, "editor")
    me = await studio.client.get("/api/v1/me", headers=reviewer_account.headers)
    members = f"{studio.base}/members/{me.json()['id']}/reviewer"
    first = await studio.draft(text="one", destinations=[{"account_id": hook["id"]}])
    await studio.call("POST", f"/{first['id']}/submit")
    assert (
        await studio.call("POST", f"/{first['id']}/approve", reviewer_account)
    ).status_code == 403
    granted = await studio.client.put(members, headers=studio.admin.headers)
    assert granted.status_code == 200, granted.text
    approved = await studio.call("POST", f"/{first['id']}/approve", reviewer_account)
    assert approved.status_code == 200, approved.text
    listed = await studio.client.get(f"{studio.base}/members", headers=studio.admin.headers)
    shown = {m["user_id"]: m["reviewer"] for m in listed.json()["items"]}
    assert shown[me.json()["id"]] is True
    assert (await studio.client.delete(members, headers=studio.admin.headers)).status_code == 200
    second = await studio.draft(text="two", destinations=[{"account_id": hook["id"]}])
    await studio.call("POST", f"/{second['id']}/submit")
    assert (
        await studio.call("POST", f"/{second['id']}/approve", reviewer_account)
    ).status_code == 403
    assert [e["reviewer"] for e in studio.events("member.reviewer_changed")] == [True, False]


async def test_only_admins_may_make_reviewers(studio: Studio) -> None:
    me = await studio.client.get("/api/v1/me", headers=studio.editor.headers)
    answer = await studio.client.put(
        f"{studio.base}/members/{me.json()['id']}/reviewer", headers=studio.editor.headers
    )
    assert answer.status_code == 403


async def test_a_post_emptied_of_destinations_under_review_cannot_be_approved(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.draft(text="x", destinations=[{"account_id": hook["id"]}])
    await studio.call("POST", f"/{post['id']}/submit")
    emptied = await studio.call("PATCH", f"/{post['id']}", destinations=[])
    assert emptied.status_code == 200
    refused = await studio.call("POST", f"/{post['id']}/approve", studio.admin)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("post-incomplete")
    assert (await studio.post(post["id"]))["status"] == "pending_review"


async def test_an_alt_text_changed_after_approval_is_not_what_was_approved(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    media = await studio.media()
    post = await studio.approved(
        text="pic", media_ids=[media], destinations=[{"account_id": hook["id"]}]
    )
    changed = await studio.client.patch(
        f"{studio.base}/media/{media}",
        json={"alt_text": "Something else"},
        headers=studio.editor.headers,
    )
    assert changed.status_code == 200
    shown = await studio.post(post["id"])
    assert shown["content_sha256"] != shown["approved_sha256"]
    refused = await studio.call("POST", f"/{post['id']}/publish")
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("approval-stale")


async def test_an_admin_who_edited_a_post_may_not_approve_it(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    post = await studio.draft(text="editor's words", destinations=[{"account_id": hook["id"]}])
    await studio.call("POST", f"/{post['id']}/submit")
    await studio.call("PATCH", f"/{post['id']}", studio.admin, text="admin's words")
    refused = await studio.call("POST", f"/{post['id']}/approve", studio.admin)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("self-approval-forbidden")


async def _key_of(studio: Studio, who: Account, role: str) -> Account:
    """An API key `who` makes, as the Account that calls with it."""
    made = await studio.client.post(
        f"{studio.base}/api-keys", json={"name": f"{role} key", "role": role}, headers=who.headers
    )
    assert made.status_code == 201, made.text
    return Account(email="", token=made.json()["key"])


async def test_an_author_may_not_approve_their_own_post_through_an_api_key_they_made(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    key = await _key_of(studio, studio.admin, "admin")
    # Written and submitted by the admin's session, approved with the admin's key.
    mine = await studio.call(
        "POST", "", studio.admin, text="mine", destinations=[{"account_id": hook["id"]}]
    )
    assert mine.status_code == 201, mine.text
    await studio.call("POST", f"/{mine.json()['id']}/submit", studio.admin)
    refused = await studio.call("POST", f"/{mine.json()['id']}/approve", key)
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("self-approval-forbidden")
    # Written and submitted with the key, approved by the admin's session.
    keyed = await studio.call(
        "POST", "", key, text="keyed", destinations=[{"account_id": hook["id"]}]
    )
    assert keyed.status_code == 201, keyed.text
    await studio.call("POST", f"/{keyed.json()['id']}/submit", key)
    refused = await studio.call("POST", f"/{keyed.json()['id']}/approve", studio.admin)
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("self-approval-forbidden")
    assert (await studio.post(keyed.json()["id"]))["status"] == "pending_review"
    # Someone else's key is another reviewer.
    editors_post = await studio.draft(
        text="the editor's", destinations=[{"account_id": hook["id"]}]
    )
    await studio.call("POST", f"/{editors_post['id']}/submit")
    approved = await studio.call("POST", f"/{editors_post['id']}/approve", key)
    assert approved.status_code == 200, approved.text


async def test_a_key_made_with_an_authors_key_is_the_author_too(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    first = await _key_of(studio, studio.admin, "admin")
    second = await _key_of(studio, first, "admin")  # made with the admin's key
    post = await studio.call(
        "POST", "", studio.admin, text="mine", destinations=[{"account_id": hook["id"]}]
    )
    assert post.status_code == 201, post.text
    submitted = await studio.call("POST", f"/{post.json()['id']}/submit", studio.admin)
    assert submitted.status_code == 200, submitted.text
    refused = await studio.call("POST", f"/{post.json()['id']}/approve", second)
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("self-approval-forbidden")
    # A key made with a key before keys recorded the person (its maker is the key): the
    # chain is followed to the person.
    studio.pg.execute(
        "UPDATE shared.api_keys SET created_by = (SELECT id FROM shared.api_keys "
        "WHERE tenant_id = %s AND name = 'admin key' ORDER BY created_at LIMIT 1) "
        "WHERE id = (SELECT id FROM shared.api_keys WHERE tenant_id = %s "
        "AND name = 'admin key' ORDER BY created_at DESC LIMIT 1)",
        (studio.tenant_id, studio.tenant_id),
    )
    refused = await studio.call("POST", f"/{post.json()['id']}/approve", second)
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("self-approval-forbidden")


async def test_a_schedule_beyond_any_calendar_or_two_years_is_refused(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    for when in (
        "9999-12-31T23:00:00-05:00",
        (datetime.now(UTC) + timedelta(days=800)).isoformat(),
    ):
        answer = await studio.call(
            "POST", "", text="x", destinations=[{"account_id": hook["id"]}], scheduled_at=when
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["type"].endswith("schedule-too-far")


async def test_an_unknown_variant_profile_is_refused(
    studio: Studio, receiver: FakeReceiver
) -> None:
    hook = await studio.webhook(receiver)
    answer = await studio.call(
        "POST", "", text="x", destinations=[{"account_id": hook["id"], "variant_profile": "tiktok"}]
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "destinations[0].variant_profile"
