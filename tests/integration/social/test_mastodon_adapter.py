"""The Mastodon adapter against a fake instance on loopback, through the real guarded client."""

from __future__ import annotations

import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from socialflow.settings import Settings
from socialflow.social.platforms.base import (
    Account,
    Credentials,
    FailureKind,
    OutcomeUnknown,
    OutgoingMedia,
    OutgoingPost,
    PublishError,
    Receipt,
    ReconnectNeeded,
)
from socialflow.social.platforms.mastodon import (
    MastodonAdapter,
)
from tests.integration.social.fake_mastodon import FakeMastodon, fake_mastodon, loopback_client
from tests.integration.social.fake_mastodon_shapes import FakeAccount

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


@pytest.fixture
def fake() -> Iterator[FakeMastodon]:
    with fake_mastodon() as instance:
        yield instance


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_client(settings, httpx.Timeout(5.0, connect=2.0)) as client:
        yield client


@pytest.fixture
def adapter(http: httpx.AsyncClient) -> MastodonAdapter:
    return MastodonAdapter(http, media_poll_s=0.01, media_wait_s=5.0)


@pytest.fixture
def alice(fake: FakeMastodon) -> FakeAccount:
    return fake.add_account("alice")


@pytest.fixture
def account(fake: FakeMastodon, alice: FakeAccount) -> Account:
    token = fake.issue_token(alice)
    return Account(
        "mastodon", fake.origin, alice.id, "@alice@127.0.0.1", Credentials(token.access_token)
    )


def a_post(
    text: str = "Hello, fediverse!",
    *,
    media: tuple[OutgoingMedia, ...] = (),
    first_comment: str | None = None,
    key: str | None = None,
    created_at: datetime | None = None,
) -> OutgoingPost:
    return OutgoingPost(
        post_id=str(uuid.uuid4()),
        destination_id=str(uuid.uuid4()),
        idempotency_key=key or secrets.token_hex(16),
        text=text,
        created_at=created_at or datetime.now(UTC),
        media=media,
        first_comment=first_comment,
    )


def an_image(name: str, alt: str | None = None) -> OutgoingMedia:
    return OutgoingMedia(data=PNG, content_type="image/png", filename=name, alt_text=alt)


async def publish_refused(
    adapter: MastodonAdapter, account: Account, post: OutgoingPost
) -> PublishError:
    with pytest.raises(PublishError) as refused:
        await adapter.publish(account, post)
    return refused.value


# --- validate


async def test_validate_refuses_text_longer_than_the_instance_allows(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.max_characters = 50

    reasons = await adapter.validate(account, a_post("x" * 51))

    assert reasons == [
        "The text is 51 characters as 127.0.0.1 counts them (each link counts 23); it allows 50."
    ]


async def test_validate_counts_a_link_as_23_characters_and_a_mention_as_its_user(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.max_characters = 50
    # 4 + 23 (the link) + 5 (" @bob") + 2 (a space, one family emoji) + 16 = 50
    text = "See https://example.com/" + "a" * 200 + " @bob@far.example 👩‍👩‍👧 " + "y" * 15

    assert await adapter.validate(account, a_post(text)) == []
    assert await adapter.validate(account, a_post(text + "y")) != []


async def test_validate_refuses_more_media_than_the_instance_allows(
    adapter: MastodonAdapter, account: Account
) -> None:
    images = tuple(an_image(f"{n}.png") for n in range(5))

    reasons = await adapter.validate(account, a_post(media=images))

    assert reasons == ["The post has 5 media files; 127.0.0.1 allows 4."]


async def test_validate_reads_the_instance_limits_once(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    await adapter.validate(account, a_post())
    await adapter.validate(account, a_post())

    assert len(fake.requests_to("GET", "/api/v2/instance")) == 1


# --- publish


async def test_publish_uploads_each_image_with_its_alt_text_then_posts_them(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account, alice: FakeAccount
) -> None:
    post = a_post(media=(an_image("a.png", "A red door"), an_image("b.png", "A blue door")))

    receipt = await adapter.publish(account, post)

    uploads = fake.requests_to("POST", "/api/v2/media")
    assert [u.form.get("description") for u in uploads] == ["A red door", "A blue door"]
    assert [(f.filename, f.content_type) for u in uploads for f in u.files] == [
        ("a.png", "image/png"),
        ("b.png", "image/png"),
    ]
    assert len(fake.requests_to("GET", "/api/v1/media/")) == 2 * (fake.processing_polls + 1)
    [sent] = fake.requests_to("POST", "/api/v1/statuses")
    assert sent.headers["idempotency-key"] == post.idempotency_key
    assert sent.headers["authorization"] == f"Bearer {account.credentials.access_token}"
    [status] = fake.statuses_of(alice)
    assert len(status.media_ids) == 2
    assert receipt.platform_post_id == status.id
    assert receipt.url == f"{fake.origin}/@alice/{status.id}"


async def test_publishing_again_with_the_same_key_creates_no_second_status(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    post = a_post()

    first = await adapter.publish(account, post)
    again = await adapter.publish(account, post)

    assert again.platform_post_id == first.platform_post_id
    assert fake.statuses_created == 1


async def test_the_first_comment_is_posted_as_a_reply(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    post = a_post(first_comment="#photography #doors")

    receipt = await adapter.publish(account, post)

    comment = receipt.extra["first_comment"]
    assert comment["outcome"] == "published"
    reply = fake.statuses[comment["platform_post_id"]]
    assert reply.in_reply_to_id == receipt.platform_post_id
    assert reply.idempotency_key == f"{post.idempotency_key}:comment"


async def test_a_refused_first_comment_leaves_the_post_published(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account, alice: FakeAccount
) -> None:
    receipt = await adapter.publish(account, a_post(first_comment="z" * 501))

    assert receipt.extra["first_comment"]["outcome"] == "failed"
    assert receipt.extra["first_comment"]["kind"] == "content_rejected"
    assert [s.id for s in fake.statuses_of(alice)] == [receipt.platform_post_id]


# --- publish failures


async def test_a_rate_limited_post_is_retryable_when_the_limit_resets(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.set_mode("rate_limited", times=1)

    refused = await publish_refused(adapter, account, a_post())

    assert (refused.kind, refused.status) == (FailureKind.RETRYABLE, 429)
    assert refused.retry_after_s is not None
    assert fake.retry_after_s - 5 <= refused.retry_after_s <= fake.retry_after_s + 1


async def test_a_revoked_token_is_auth_revoked_without_the_token_in_the_detail(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.set_mode("unauthorized")

    refused = await publish_refused(adapter, account, a_post())

    assert refused.kind is FailureKind.AUTH_REVOKED
    assert refused.detail == "HTTP 401: The access token is invalid"
    assert (account.credentials.access_token or "?") not in refused.detail


async def test_a_rejected_status_is_content_rejected_with_the_instance_s_words(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.set_mode("reject")

    refused = await publish_refused(adapter, account, a_post())

    assert refused.kind is FailureKind.CONTENT_REJECTED
    assert fake.reject_error in refused.detail


async def test_a_refused_media_file_is_media_refused_and_nothing_is_posted(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.set_mode("media_reject")

    refused = await publish_refused(adapter, account, a_post(media=(an_image("a.png"),)))

    assert (refused.kind, refused.status) == (FailureKind.MEDIA_REFUSED, 422)
    assert fake.statuses_created == 0


async def test_a_server_error_before_the_status_is_posted_is_retryable(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.set_mode("server_error", times=1)  # the media upload, the first call

    refused = await publish_refused(adapter, account, a_post(media=(an_image("a.png"),)))

    assert (refused.kind, refused.status) == (FailureKind.RETRYABLE, 500)
    assert fake.statuses_created == 0


async def test_a_server_error_on_the_status_itself_is_an_unknown_outcome(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.set_mode("server_error")  # Mastodon may fail after creating the status

    with pytest.raises(OutcomeUnknown):
        await adapter.publish(account, a_post())


async def test_an_instance_nobody_listens_on_is_retryable(
    adapter: MastodonAdapter, account: Account
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    gone = Account("mastodon", closed, "1", "@a@b", account.credentials)

    refused = await publish_refused(adapter, gone, a_post())

    assert refused.kind is FailureKind.RETRYABLE


async def test_an_address_outside_the_allowed_networks_is_destination_refused(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    elsewhere = Account(
        "mastodon", f"http://127.0.0.2:{fake.port}", "1", "@a@b", account.credentials
    )

    refused = await publish_refused(adapter, elsewhere, a_post())

    assert refused.kind is FailureKind.DESTINATION_REFUSED
    assert fake.requests == []


# --- unknown outcomes and lookup


async def test_a_connection_dropped_after_the_post_is_an_unknown_outcome_lookup_resolves(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account, alice: FakeAccount
) -> None:
    fake.set_mode("drop_after_accept", times=1)
    post = a_post("Doors of Lisbon, part 3 https://example.com/doors?part=3 #doors")

    with pytest.raises(OutcomeUnknown):
        await adapter.publish(account, post)
    found = await adapter.lookup(account, post)

    [status] = fake.statuses_of(alice)
    assert found == Receipt(platform_post_id=status.id, url=f"{fake.origin}/@alice/{status.id}")


async def test_a_read_timeout_after_sending_the_post_is_an_unknown_outcome(
    fake: FakeMastodon, settings: Settings, account: Account
) -> None:
    fake.set_mode("slow", times=1)
    fake.slow_s = 1.0
    async with loopback_client(settings, httpx.Timeout(0.2, connect=2.0)) as http:
        with pytest.raises(OutcomeUnknown):
            await MastodonAdapter(http).publish(account, a_post())


async def test_a_gateway_timeout_on_the_post_is_an_unknown_outcome(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.set_mode("gateway_timeout", times=1)

    with pytest.raises(OutcomeUnknown):
        await adapter.publish(account, a_post())
    assert fake.statuses_created == 1


async def test_lookup_of_a_post_never_sent_is_a_definite_no(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account, alice: FakeAccount
) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    fake.add_status(alice, "Hello, fediverse!", created_at=an_hour_ago)  # an older, same text
    fake.add_status(alice, "Something else entirely")

    assert await adapter.lookup(account, a_post("Hello, fediverse!")) is None
    assert len(fake.requests_to("GET", f"/api/v1/accounts/{alice.id}/statuses")) == 1


async def test_lookup_on_an_account_without_statuses_is_a_definite_no(
    adapter: MastodonAdapter, account: Account
) -> None:
    assert await adapter.lookup(account, a_post()) is None


async def test_lookup_pages_back_through_a_busy_account(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account, alice: FakeAccount
) -> None:
    post = a_post("Line one\n\nLine two & <three> @bob@far.example")
    wanted = fake.add_status(alice, post.text)
    for n in range(45):
        fake.add_status(alice, f"Later status {n}")

    found = await adapter.lookup(account, post)

    assert found == Receipt(platform_post_id=wanted.id, url=f"{fake.origin}/@alice/{wanted.id}")


async def test_lookup_cannot_tell_past_its_page_budget(
    fake: FakeMastodon, http: httpx.AsyncClient, account: Account, alice: FakeAccount
) -> None:
    for n in range(41):
        fake.add_status(alice, f"Later status {n}")

    with pytest.raises(OutcomeUnknown):
        await MastodonAdapter(http, lookup_pages=1).lookup(account, a_post())


async def test_lookup_cannot_tell_when_the_instance_fails(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    fake.set_mode("server_error")

    with pytest.raises(OutcomeUnknown):
        await adapter.lookup(account, a_post())


# --- delete and refresh


async def test_delete_removes_the_status_and_its_first_comment(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account, alice: FakeAccount
) -> None:
    receipt = await adapter.publish(account, a_post(first_comment="#doors"))

    await adapter.delete(account, receipt)

    assert fake.statuses_of(alice) == []


async def test_deleting_a_status_already_gone_succeeds(
    adapter: MastodonAdapter, account: Account
) -> None:
    receipt = await adapter.publish(account, a_post())
    await adapter.delete(account, receipt)

    await adapter.delete(account, receipt)


async def test_refresh_renews_an_expiring_token(
    fake: FakeMastodon, adapter: MastodonAdapter, alice: FakeAccount
) -> None:
    old = fake.issue_token(alice, expires_in=60, refresh=True)
    app = fake.apps[old.client_id or ""]
    credentials = Credentials(
        old.access_token,
        old.refresh_token,
        datetime.now(UTC) + timedelta(seconds=60),
        app.client_id,
        app.client_secret,
    )
    account = Account("mastodon", fake.origin, alice.id, "@alice@127.0.0.1", credentials)

    renewed = await adapter.refresh(account)

    assert renewed.access_token not in (None, old.access_token)
    assert renewed.refresh_token not in (None, old.refresh_token)
    assert renewed.expires_at is not None
    assert renewed.expires_at > datetime.now(UTC) + timedelta(
        seconds=fake.refreshed_token_lifetime_s - 60
    )
    assert (renewed.client_id, renewed.client_secret) == (app.client_id, app.client_secret)
    receipt = await adapter.publish(
        Account("mastodon", fake.origin, alice.id, "@alice@127.0.0.1", renewed), a_post()
    )
    assert receipt.platform_post_id


async def test_refresh_with_a_revoked_grant_needs_reconnecting(
    fake: FakeMastodon, adapter: MastodonAdapter, alice: FakeAccount
) -> None:
    old = fake.issue_token(alice, expires_in=60, refresh=True)
    app = fake.apps[old.client_id or ""]
    fake.revoke_refresh_token(old.refresh_token or "")
    credentials = Credentials(
        old.access_token, old.refresh_token, None, app.client_id, app.client_secret
    )

    with pytest.raises(ReconnectNeeded, match="invalid_grant"):
        await adapter.refresh(Account("mastodon", fake.origin, alice.id, "@a", credentials))


async def test_refresh_without_a_refresh_token_keeps_the_credentials(
    fake: FakeMastodon, adapter: MastodonAdapter, account: Account
) -> None:
    assert await adapter.refresh(account) is account.credentials
    assert fake.requests == []
