"""The Bluesky adapter through the guarded client against a fake PDS on loopback: sign-in,
posts with images and facets, record keys that make resends harmless, unknown outcomes and
lookups, session refresh, the failure classes and the first comment."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest
from PIL import Image

from socialflow.lib.outbound_http import guarded_client
from socialflow.settings import Settings
from socialflow.social.platforms.base import (
    Account,
    ConnectRefused,
    Credentials,
    FailureKind,
    OutcomeUnknown,
    OutgoingMedia,
    OutgoingPost,
    PublishError,
    ReconnectNeeded,
)
from socialflow.social.platforms.bluesky import (
    BlueskyAdapter,
    comment_key,
    record_key,
    sign_in,
    token_expiry,
)
from tests.integration.social.fake_bluesky import FakePds, fake_pds

APP_PASSWORD = "abcd-efgh-ijkl-mnop"
CREATE = "com.atproto.repo.createRecord"


@pytest.fixture
def pds() -> Iterator[FakePds]:
    with fake_pds() as server:
        server.add_account("alice.test", APP_PASSWORD)
        server.add_account("bob.test", "bob-app-password")
        yield server


def _loopback(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"outbound_allowed_networks": ("127.0.0.1/32",), "outbound_allow_http": True}
    )


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded_client(_loopback(settings), max_redirects=0, timeout=2.0) as client:
        yield client


@pytest.fixture
def adapter(http: httpx.AsyncClient) -> BlueskyAdapter:
    return BlueskyAdapter(http)


@pytest.fixture
async def account(pds: FakePds, http: httpx.AsyncClient) -> Account:
    identity = await sign_in(http, pds.url, identifier="alice.test", app_password=APP_PASSWORD)
    return Account("bluesky", pds.url, identity.account_ref, identity.handle, identity.credentials)


def _post(text: str = "Hello from SocialFlow", **fields: object) -> OutgoingPost:
    at = datetime(2026, 12, 6, 9, 30, 15, 123456, tzinfo=UTC)
    post = OutgoingPost("post-1", "dest-1", "post-1:dest-1:approved-hash", text, at)
    return replace(post, **fields)  # type: ignore[arg-type]


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(out, format="PNG")
    return out.getvalue()


def _rkey(post: OutgoingPost) -> str:
    return record_key(post.created_at, post.idempotency_key)


# --- connecting


async def test_signing_in_with_an_app_password_keeps_the_did_handle_and_session_tokens(
    pds: FakePds, http: httpx.AsyncClient
) -> None:
    alice = pds.accounts[next(iter(pds.accounts))]
    identity = await sign_in(http, pds.url, identifier="@alice.test", app_password=APP_PASSWORD)
    assert (identity.account_ref, identity.handle) == (alice.did, "alice.test")
    credentials = identity.credentials
    assert credentials.access_token
    assert credentials.refresh_token
    assert APP_PASSWORD not in (credentials.access_token, credentials.refresh_token)
    assert credentials.expires_at == token_expiry(credentials.access_token)
    assert credentials.expires_at is not None
    assert abs(credentials.expires_at.timestamp() - (time.time() + 7200)) < 60
    assert identity.scopes == ("com.atproto.appPass",)


async def test_signing_in_with_a_wrong_app_password_is_refused(
    pds: FakePds, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ConnectRefused) as refused:
        await sign_in(http, pds.url, identifier="alice.test", app_password="wrong-password")
    assert refused.value.detail == "wrong handle or app password"


# --- validate


async def test_a_text_of_301_graphemes_is_refused_by_validate(
    adapter: BlueskyAdapter, account: Account
) -> None:
    [reason] = await adapter.validate(account, _post("a" * 301))
    assert "301" in reason
    assert "300" in reason


async def test_300_emoji_graphemes_are_accepted_although_they_take_more_than_300_bytes(
    adapter: BlueskyAdapter, account: Account
) -> None:
    text = "👍🏽" * 300
    assert len(text.encode()) == 2400
    assert await adapter.validate(account, _post(text)) == []


async def test_more_than_four_images_or_one_over_a_million_bytes_is_refused(
    adapter: BlueskyAdapter, account: Account
) -> None:
    small = OutgoingMedia(_png(4, 4), "image/png", "small.png", alt_text="A small square")
    big = OutgoingMedia(b"\0" * 1_000_001, "image/jpeg", "big.jpg")
    assert await adapter.validate(account, _post(media=[small] * 4)) == []
    reasons = await adapter.validate(account, _post(media=[small] * 4 + [big]))
    assert len(reasons) == 2
    assert "at most 4 images" in reasons[0]
    assert "big.jpg" in reasons[1]


async def test_publishing_an_over_long_text_is_refused_before_calling_the_pds(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    pds.calls.clear()
    with pytest.raises(PublishError) as failure:
        await adapter.publish(account, _post("a" * 301))
    assert failure.value.kind is FailureKind.CONTENT_REJECTED
    assert pds.calls == []


# --- publish


async def test_images_are_uploaded_as_blobs_and_embedded_with_their_alt_texts(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    media = [
        OutgoingMedia(_png(40, 30), "image/png", "one.png", alt_text="A teal rectangle"),
        OutgoingMedia(_png(10, 20), "image/png", "two.png"),
    ]
    post = _post(media=media)
    receipt = await adapter.publish(account, post)
    rkey = _rkey(post)
    assert receipt.platform_post_id == f"at://{account.account_ref}/app.bsky.feed.post/{rkey}"
    assert receipt.url == f"https://bsky.app/profile/alice.test/post/{rkey}"
    record = pds.record(account.account_ref, rkey)
    assert record is not None
    assert record["createdAt"] == "2026-12-06T09:30:15.123Z"
    images = record["embed"]["images"]
    assert record["embed"]["$type"] == "app.bsky.embed.images"
    assert [image["alt"] for image in images] == ["A teal rectangle", ""]
    assert [image["aspectRatio"] for image in images] == [
        {"width": 40, "height": 30},
        {"width": 10, "height": 20},
    ]
    assert [pds.blobs[image["image"]["ref"]["$link"]] for image in images] == [
        m.data for m in media
    ]
    uploads = pds.calls_to("com.atproto.repo.uploadBlob")
    assert [call["content_type"] for call in uploads] == ["image/png", "image/png"]


async def test_facets_after_emoji_land_on_their_utf8_byte_ranges_with_the_mention_resolved(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    link = "https://example.com/launch?ref=bsky"
    text = (
        f"Grüße 👋🏽 from the café! Read {link}. Thanks @bob.test and @nobody.test #Launch2026 🎉"
    )
    post = _post(text)
    await adapter.publish(account, post)
    record = pds.record(account.account_ref, _rkey(post))
    assert record is not None
    encoded = text.encode()
    bob = next(a.did for a in pds.accounts.values() if a.handle == "bob.test")

    def at(fragment: str) -> dict[str, int]:
        start = encoded.index(fragment.encode())
        return {"byteStart": start, "byteEnd": start + len(fragment.encode())}

    # @nobody.test does not resolve: it stays plain text.
    assert record["facets"] == [
        {"index": at(link), "features": [{"$type": "app.bsky.richtext.facet#link", "uri": link}]},
        {
            "index": at("@bob.test"),
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": bob}],
        },
        {
            "index": at("#Launch2026"),
            "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "Launch2026"}],
        },
    ]
    assert at(link)["byteStart"] > text.index(link)  # bytes, not characters


async def test_publishing_the_same_post_twice_writes_one_record(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    post = _post()
    first = await adapter.publish(account, post)
    second = await adapter.publish(account, post)
    assert second.platform_post_id == first.platform_post_id
    assert second.extra["cid"] == first.extra["cid"]
    assert second.extra["already_published"] is True
    assert len(pds.calls_to(CREATE)) == 2
    assert pds.created == {_rkey(post): 1}


async def test_a_pds_answering_record_already_exists_also_gets_one_record(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    pds.duplicate_answer = "already_exists"
    post = _post()
    first = await adapter.publish(account, post)
    second = await adapter.publish(account, post)
    assert second.platform_post_id == first.platform_post_id
    assert pds.created == {_rkey(post): 1}


async def test_a_connection_dropped_after_the_write_is_an_unknown_outcome_lookup_resolves(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    post = _post()
    pds.set_mode("drop_after_accept", times=1, nsid=CREATE)
    with pytest.raises(OutcomeUnknown):
        await adapter.publish(account, post)
    assert pds.created == {_rkey(post): 1}
    found = await adapter.lookup(account, post)
    assert found is not None
    assert found.platform_post_id == f"at://{account.account_ref}/app.bsky.feed.post/{_rkey(post)}"
    resent = await adapter.publish(account, post)  # what the engine may do instead
    assert resent.platform_post_id == found.platform_post_id
    assert pds.created == {_rkey(post): 1}


async def test_an_answer_slower_than_the_timeout_after_sending_is_an_unknown_outcome(
    settings: Settings, account: Account, pds: FakePds
) -> None:
    pds.slow_s = 1.0
    pds.set_mode("slow", times=1, nsid=CREATE)
    async with guarded_client(_loopback(settings), max_redirects=0, timeout=0.3) as client:
        with pytest.raises(OutcomeUnknown):
            await BlueskyAdapter(client).publish(account, _post())
    assert pds.created == {_rkey(_post()): 1}


async def test_lookup_of_a_post_never_sent_answers_none(
    adapter: BlueskyAdapter, account: Account
) -> None:
    assert await adapter.lookup(account, _post()) is None


async def test_lookup_that_cannot_reach_an_answer_is_an_unknown_outcome(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    pds.set_mode("server_error", nsid="com.atproto.repo.getRecord")
    with pytest.raises(OutcomeUnknown):
        await adapter.lookup(account, _post())


# --- failures


async def test_a_rate_limited_post_is_retryable_after_bluesky_ratelimit_reset(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    pds.ratelimit_reset_in_s = 30
    pds.set_mode("rate_limited", times=1, nsid=CREATE)
    with pytest.raises(PublishError) as failure:
        await adapter.publish(account, _post())
    assert failure.value.kind is FailureKind.RETRYABLE
    assert failure.value.status == 429
    assert failure.value.retry_after_s is not None
    assert 25 < failure.value.retry_after_s <= 30
    assert pds.created == {}


async def test_a_server_error_is_retryable_and_writes_nothing(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    pds.set_mode("server_error", times=1, nsid=CREATE)
    with pytest.raises(PublishError) as failure:
        await adapter.publish(account, _post())
    assert failure.value.kind is FailureKind.RETRYABLE
    assert pds.created == {}


async def test_a_pds_that_cannot_be_connected_to_is_retryable(
    adapter: BlueskyAdapter, account: Account
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nowhere = replace(account, server_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(PublishError) as failure:
        await adapter.publish(nowhere, _post())
    assert failure.value.kind is FailureKind.RETRYABLE


async def test_an_image_the_pds_refuses_is_media_refused(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    pds.max_blob_bytes = 10
    media = [OutgoingMedia(_png(8, 8), "image/png", "one.png")]
    with pytest.raises(PublishError) as failure:
        await adapter.publish(account, _post(media=media))
    assert failure.value.kind is FailureKind.MEDIA_REFUSED
    assert pds.created == {}


async def test_an_expired_access_token_fails_as_auth_revoked_until_the_session_is_refreshed(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    expired = pds.session(account.account_ref, access_ttl_s=-60)
    credentials = Credentials(expired["accessJwt"], expired["refreshJwt"])
    stale = replace(account, credentials=credentials)
    with pytest.raises(PublishError) as failure:
        await adapter.publish(stale, _post())
    assert failure.value.kind is FailureKind.AUTH_REVOKED
    assert "refresh" in failure.value.detail
    assert expired["accessJwt"] not in failure.value.detail
    refreshed = replace(stale, credentials=await adapter.refresh(stale))
    assert await adapter.publish(refreshed, _post())


# --- sessions


async def test_refresh_gives_new_tokens_and_the_new_access_tokens_expiry(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    pds.access_ttl_s = 600
    renewed = await adapter.refresh(account)
    assert renewed.access_token != account.credentials.access_token
    assert renewed.refresh_token != account.credentials.refresh_token
    assert renewed.expires_at is not None
    assert abs(renewed.expires_at.timestamp() - (time.time() + 600)) < 60


async def test_refresh_with_a_revoked_refresh_token_needs_reconnecting(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    pds.revoke_sessions(account.account_ref)
    with pytest.raises(ReconnectNeeded):
        await adapter.refresh(account)


# --- first comment and delete


async def test_the_first_comment_is_a_reply_to_the_post(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    post = _post(first_comment="More at https://example.org #launch")
    receipt = await adapter.publish(account, post)
    comment = pds.record(account.account_ref, comment_key(post))
    assert comment is not None
    post_ref = {"uri": receipt.platform_post_id, "cid": receipt.extra["cid"]}
    assert comment["reply"] == {"root": post_ref, "parent": post_ref}
    assert [f["features"][0]["$type"] for f in comment["facets"]] == [
        "app.bsky.richtext.facet#link",
        "app.bsky.richtext.facet#tag",
    ]
    assert receipt.extra["first_comment_uri"].endswith(f"/app.bsky.feed.post/{comment_key(post)}")


async def test_a_first_comment_that_fails_is_reported_in_the_receipt_of_the_published_post(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    post = _post(first_comment="A comment")
    pds.set_mode("server_error", times=1, nsid=CREATE, skip=1)
    receipt = await adapter.publish(account, post)
    assert pds.record(account.account_ref, _rkey(post)) is not None
    assert pds.record(account.account_ref, comment_key(post)) is None
    assert receipt.extra["first_comment_error"].startswith("retryable")


async def test_a_post_found_without_its_first_comment_is_completed_with_the_comment_alone(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    post = _post(first_comment="A comment")
    pds.set_mode("server_error", times=1, nsid=CREATE, skip=1)  # the comment's write fails
    await adapter.publish(account, post)
    found = await adapter.lookup(account, post)
    assert found is not None
    assert found.incomplete
    writes = len(pds.calls_to(CREATE))
    completed = await adapter.complete(account, post, found)
    assert len(pds.calls_to(CREATE)) == writes + 1  # the comment, and not the post again
    assert not completed.incomplete
    assert completed.platform_post_id == found.platform_post_id
    assert "first_comment_error" not in completed.extra
    comment = pds.record(account.account_ref, comment_key(post))
    assert comment is not None
    assert comment["reply"]["parent"]["uri"] == found.platform_post_id
    again = await adapter.lookup(account, post)
    assert again is not None
    assert not again.incomplete
    assert again.extra["first_comment_uri"] == completed.extra["first_comment_uri"]


async def test_a_first_comment_failing_again_leaves_the_found_post_published_and_says_why(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    post = _post(first_comment="A comment")
    pds.set_mode("server_error", times=1, nsid=CREATE, skip=1)
    await adapter.publish(account, post)
    found = await adapter.lookup(account, post)
    assert found is not None
    pds.set_mode("server_error", times=1, nsid=CREATE)  # and the comment fails again
    completed = await adapter.complete(account, post, found)
    assert completed.incomplete
    assert completed.platform_post_id == found.platform_post_id
    assert completed.extra["first_comment_error"]


async def test_delete_removes_the_post_and_its_first_comment(
    adapter: BlueskyAdapter, account: Account, pds: FakePds
) -> None:
    post = _post(first_comment="A comment")
    receipt = await adapter.publish(account, post)
    await adapter.delete(account, receipt)
    assert pds.record(account.account_ref, _rkey(post)) is None
    assert pds.record(account.account_ref, comment_key(post)) is None
    assert await adapter.lookup(account, post) is None
