"""The signed-webhook destination against a loopback receiver that verifies as receivers do."""

from __future__ import annotations

import base64
import ipaddress
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from socialflow.lib import webhook_signing
from socialflow.lib.outbound import IPAddress
from socialflow.lib.outbound_http import guarded_client
from socialflow.settings import Settings
from socialflow.social.platforms.base import (
    Account,
    Credentials,
    FailureKind,
    OutcomeUnknown,
    OutgoingMedia,
    OutgoingPost,
    PlatformAdapter,
    PublishError,
    Receipt,
)
from socialflow.social.platforms.webhook import EXCERPT_CHARS, WebhookAdapter
from tests.integration.social.fake_receiver import FakeReceiver, fake_receiver

CLIENT_TIMEOUT_S = 1.0
MEDIA_BYTES = b"\x89PNG not to be sent " * 8


@pytest.fixture
def secret() -> str:
    return webhook_signing.new_secret()


@pytest.fixture
def receiver(secret: str) -> Iterator[FakeReceiver]:
    with fake_receiver(secret) as started:
        yield started


@pytest.fixture
def loopback_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"outbound_allowed_networks": ("127.0.0.1/32",), "outbound_allow_http": True}
    )


@pytest.fixture
async def http(loopback_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded_client(
        loopback_settings, max_redirects=0, timeout=CLIENT_TIMEOUT_S
    ) as client:
        yield client


@pytest.fixture
def adapter(http: httpx.AsyncClient) -> WebhookAdapter:
    return WebhookAdapter(http)


def _account(url: str, secret: str | None) -> Account:
    return Account(
        platform="webhook",
        server_url=url,
        account_ref="wh_1",
        handle="Our receiver",
        credentials=Credentials(signing_secret=secret),
    )


@pytest.fixture
def account(receiver: FakeReceiver, secret: str) -> Account:
    return _account(receiver.url, secret)


def _post(key: str = "idem-post1-dest1-abc123", *, text: str = "Hello, world") -> OutgoingPost:
    return OutgoingPost(
        post_id="post-1",
        destination_id="dest-1",
        idempotency_key=key,
        text=text,
        created_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        media=(
            OutgoingMedia(
                data=MEDIA_BYTES,
                content_type="image/png",
                filename="cat.png",
                alt_text="A cat",
                sha256="ab" * 32,
                url="https://media.example/signed/cat.png?sig=1",
            ),
        ),
        first_comment="#cats",
        labels=("pets",),
    )


async def _failure(adapter: WebhookAdapter, account: Account) -> PublishError:
    with pytest.raises(PublishError) as failed:
        await adapter.publish(account, _post())
    return failed.value


# --- delivering


async def test_publish_delivers_a_signed_json_event_the_receiver_verifies(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    await adapter.publish(account, _post())

    (delivery,) = receiver.deliveries
    assert delivery.verified
    assert receiver.bad_signatures == 0
    assert delivery.headers["content-type"] == "application/json"
    assert "SocialFlow" in delivery.headers["user-agent"]
    assert delivery.event == {
        "type": "post.published",
        "timestamp": "2026-11-25T09:30:00Z",
        "data": {
            "post_id": "post-1",
            "destination_id": "dest-1",
            "text": "Hello, world",
            "first_comment": "#cats",
            "labels": ["pets"],
            "media": [
                {
                    "url": "https://media.example/signed/cat.png?sig=1",
                    "content_type": "image/png",
                    "alt_text": "A cat",
                    "sha256": "ab" * 32,
                    "filename": "cat.png",
                }
            ],
        },
    }


async def test_publish_sends_media_urls_and_never_their_bytes(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    await adapter.publish(account, _post())

    body = receiver.deliveries[0].body
    assert b"PNG not to be sent" not in body
    assert base64.b64encode(MEDIA_BYTES)[:16] not in body


async def test_publish_uses_the_idempotency_key_as_webhook_id(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    await adapter.publish(account, _post("idem-42"))

    assert receiver.deliveries[0].webhook_id == "idem-42"


async def test_the_same_post_delivered_twice_carries_the_same_webhook_id(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    first = await adapter.publish(account, _post())
    second = await adapter.publish(account, _post())

    assert [d.webhook_id for d in receiver.deliveries] == [_post().idempotency_key] * 2
    assert (receiver.distinct, receiver.duplicates, receiver.bad_signatures) == (1, 1, 0)
    assert first.platform_post_id == second.platform_post_id


async def test_the_receipt_carries_the_receivers_id_and_url(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receipt = await adapter.publish(account, _post())

    assert receipt.platform_post_id == "rcv-1"
    assert receipt.url == "https://receiver.example/posts/rcv-1"
    assert receipt.extra["webhook_id"] == _post().idempotency_key


async def test_an_answer_without_a_usable_id_or_url_falls_back_to_the_webhook_id(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.ok_answer = b'{"id": "has a space\\n", "url": "javascript:alert(1)"}'

    receipt = await adapter.publish(account, _post("idem-7"))

    assert receipt.platform_post_id == "idem-7"
    assert receipt.url is None


async def test_a_plain_text_answer_is_accepted_with_the_webhook_id(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.ok_answer = b"OK"

    receipt = await adapter.publish(account, _post("idem-8"))

    assert receipt == Receipt(
        "idem-8",
        None,
        {"webhook_id": "idem-8", "post_id": "post-1", "destination_id": "dest-1"},
    )


# --- answers that refuse


async def test_gone_is_destination_refused(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("gone")

    failure = await _failure(adapter, account)

    assert failure.kind is FailureKind.DESTINATION_REFUSED
    assert "gone" in failure.detail


async def test_a_rejection_is_content_rejected_with_a_bounded_printable_excerpt(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("reject")
    receiver.reject_body = b"too long\x1b[31m\r\nInjected: \xe2\x80\xae" + b"x" * 5000

    failure = await _failure(adapter, account)

    assert failure.kind is FailureKind.CONTENT_REJECTED
    assert failure.status == 400
    assert failure.detail.startswith("HTTP 400: too long")
    assert len(failure.detail) <= EXCERPT_CHARS
    assert failure.detail.isprintable()
    assert "\u202e" not in failure.detail


async def test_rate_limited_is_retryable_after_the_seconds_it_asks(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("rate_limited")
    receiver.retry_after = "7"

    failure = await _failure(adapter, account)

    assert failure.kind is FailureKind.RETRYABLE
    assert (failure.status, failure.retry_after_s) == (429, 7.0)


async def test_rate_limited_honours_a_retry_after_http_date(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("rate_limited")
    receiver.retry_after = format_datetime(
        datetime.fromtimestamp(time.time() + 120, UTC), usegmt=True
    )

    failure = await _failure(adapter, account)

    assert failure.kind is FailureKind.RETRYABLE
    assert failure.retry_after_s is not None
    assert 115 <= failure.retry_after_s <= 121


async def test_a_server_error_is_retryable(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("server_error")

    failure = await _failure(adapter, account)

    assert (failure.kind, failure.status) == (FailureKind.RETRYABLE, 500)


async def test_a_redirect_is_destination_refused_and_its_target_receives_nothing(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver, secret: str
) -> None:
    with fake_receiver(secret) as target:
        receiver.set_mode("redirect")
        receiver.redirect_to = target.url

        failure = await _failure(adapter, account)

        assert (failure.kind, failure.status) == (FailureKind.DESTINATION_REFUSED, 302)
        assert target.connections == []
        assert target.deliveries == []


async def test_a_missing_signing_secret_is_auth_revoked_and_nothing_is_sent(
    adapter: WebhookAdapter, receiver: FakeReceiver
) -> None:
    failure = await _failure(adapter, _account(receiver.url, None))

    assert failure.kind is FailureKind.AUTH_REVOKED
    assert receiver.connections == []


async def test_a_malformed_signing_secret_is_auth_revoked_without_echoing_it(
    adapter: WebhookAdapter, receiver: FakeReceiver
) -> None:
    failure = await _failure(adapter, _account(receiver.url, "whsec_tooshort"))

    assert failure.kind is FailureKind.AUTH_REVOKED
    assert "tooshort" not in failure.detail


# --- no answer


async def test_a_receiver_that_hangs_gives_outcome_unknown_within_the_client_timeout(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("hang")
    started = time.monotonic()

    with pytest.raises(OutcomeUnknown):
        await adapter.publish(account, _post())

    assert time.monotonic() - started < CLIENT_TIMEOUT_S + 2.0
    assert len(receiver.deliveries) == 1


async def test_a_connection_dropped_after_the_request_gives_outcome_unknown(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("drop_after_read")

    with pytest.raises(OutcomeUnknown):
        await adapter.publish(account, _post())

    assert receiver.distinct == 1  # it did arrive: only a resend with the same id is safe


async def test_a_closed_port_is_retryable(adapter: WebhookAdapter, secret: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens there now: the connection is refused before anything is sent.

    failure = await _failure(adapter, _account(f"http://127.0.0.1:{port}/hook", secret))

    assert failure.kind is FailureKind.RETRYABLE


# --- the outbound guard


async def test_a_name_resolving_to_loopback_is_refused_under_the_default_policy(
    settings: Settings, receiver: FakeReceiver, secret: str
) -> None:
    async def to_loopback(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    http_only = settings.model_copy(update={"outbound_allow_http": True})
    async with guarded_client(http_only, resolver=to_loopback, max_redirects=0) as client:
        account = _account(f"http://receiver.test:{receiver.port}/hook", secret)

        with pytest.raises(PublishError) as failed:
            await WebhookAdapter(client).publish(account, _post())

    assert failed.value.kind is FailureKind.DESTINATION_REFUSED
    assert receiver.connections == []
    assert receiver.deliveries == []


async def test_the_cloud_metadata_address_is_refused(adapter: WebhookAdapter, secret: str) -> None:
    account = _account("http://169.254.169.254/latest/meta-data/", secret)

    failure = await _failure(adapter, account)

    assert failure.kind is FailureKind.DESTINATION_REFUSED


async def test_a_url_with_credentials_is_refused_before_sending(
    adapter: WebhookAdapter, receiver: FakeReceiver, secret: str
) -> None:
    account = _account(receiver.url.replace("http://", "http://user:pw@"), secret)

    failure = await _failure(adapter, account)

    assert failure.kind is FailureKind.DESTINATION_REFUSED
    assert receiver.connections == []


# --- large answers


async def test_a_huge_answer_is_read_only_in_part(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("huge")
    receiver.huge_bytes = 8 * 1024 * 1024

    tracemalloc.start()
    try:
        receipt = await adapter.publish(account, _post("idem-huge"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert receipt.platform_post_id == "idem-huge"  # its cut-off JSON gives no id
    assert peak < 2 * 1024 * 1024


async def test_an_answer_past_the_size_limit_is_judged_by_its_status(
    loopback_settings: Settings, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("huge")
    receiver.huge_status = 503
    async with guarded_client(
        loopback_settings, max_redirects=0, max_response_bytes=4096, timeout=CLIENT_TIMEOUT_S
    ) as client:
        failure = await _failure(WebhookAdapter(client), account)

    assert (failure.kind, failure.status) == (FailureKind.RETRYABLE, 503)


async def test_an_announced_oversize_answer_is_retryable(
    loopback_settings: Settings, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("huge")
    receiver.huge_announced = True
    async with guarded_client(
        loopback_settings, max_redirects=0, max_response_bytes=4096, timeout=CLIENT_TIMEOUT_S
    ) as client:
        failure = await _failure(WebhookAdapter(client), account)

    assert (failure.kind, failure.status) == (FailureKind.RETRYABLE, None)


# --- the rest of the interface


def test_the_adapter_is_a_platform_adapter_that_may_resend(http: httpx.AsyncClient) -> None:
    adapter: PlatformAdapter = WebhookAdapter(http)

    assert (adapter.platform, adapter.idempotent_resend) == ("webhook", True)


async def test_lookup_cannot_tell_and_raises_outcome_unknown(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    with pytest.raises(OutcomeUnknown):
        await adapter.lookup(account, _post())

    assert receiver.connections == []


async def test_delete_sends_a_signed_post_deleted_event_with_its_own_webhook_id(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receipt = await adapter.publish(account, _post())

    await adapter.delete(account, receipt)

    deleted = receiver.deliveries[-1]
    assert deleted.verified
    assert deleted.webhook_id == "rcv-1:deleted"
    assert deleted.event["type"] == "post.deleted"
    assert deleted.event["data"] == {
        "post_id": "post-1",
        "destination_id": "dest-1",
        "platform_post_id": "rcv-1",
    }


async def test_delete_of_a_gone_destination_is_destination_refused(
    adapter: WebhookAdapter, account: Account, receiver: FakeReceiver
) -> None:
    receiver.set_mode("gone")

    with pytest.raises(PublishError) as failed:
        await adapter.delete(account, Receipt("rcv-9"))

    assert failed.value.kind is FailureKind.DESTINATION_REFUSED


async def test_refresh_returns_the_credentials_unchanged(
    adapter: WebhookAdapter, account: Account
) -> None:
    assert await adapter.refresh(account) is account.credentials


async def test_validate_accepts_a_https_url_with_text(adapter: WebhookAdapter, secret: str) -> None:
    account = _account("https://hooks.example.com/socialflow", secret)

    assert await adapter.validate(account, _post()) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/socialflow",
        "ftp://hooks.example.com/socialflow",
        "https://user:secret@hooks.example.com/",
        "https:///no-host",
        "https://169.254.169.254/",
        "https://hooks.example.com/with space",
        "https://hooks.example.com:99999/",
    ],
)
async def test_validate_refuses_a_url_the_default_policy_refuses(
    settings: Settings, secret: str, url: str
) -> None:
    async with guarded_client(settings) as https_only:
        reasons = await WebhookAdapter(https_only).validate(_account(url, secret), _post())

    assert len(reasons) == 1
    assert "URL" in reasons[0]


async def test_validate_refuses_a_post_without_text_or_media(
    adapter: WebhookAdapter, account: Account
) -> None:
    empty = OutgoingPost("p", "d", "k", "  ", datetime(2026, 1, 1, tzinfo=UTC))

    assert await adapter.validate(account, empty) == ["A webhook post needs text or media."]


async def test_validate_refuses_media_without_a_download_url(
    adapter: WebhookAdapter, account: Account
) -> None:
    post = OutgoingPost(
        "p",
        "d",
        "k",
        "",
        datetime(2026, 1, 1, tzinfo=UTC),
        media=(OutgoingMedia(b"x", "image/png", "a.png"),),
    )

    assert await adapter.validate(account, post) == ["Media 1 has no download URL to send."]
