"""Standard Webhooks signatures, checked by the `standardwebhooks` package as a receiver would."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from socialflow.lib import webhook_signing
from socialflow.lib.webhook_signing import InvalidSigningSecret

BODY = b'{"type":"post.published","data":{"text":"h\\u00e9llo"}}'
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def _now() -> int:
    return int(time.time())


def test_a_new_secret_is_whsec_and_base64_of_32_random_bytes() -> None:
    first, second = webhook_signing.new_secret(), webhook_signing.new_secret()

    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert first != second


def test_headers_verify_with_the_standardwebhooks_receiver() -> None:
    secret = webhook_signing.new_secret()

    headers = webhook_signing.headers([secret], MSG_ID, _now(), BODY)

    assert Webhook(secret).verify(BODY, headers) == {
        "type": "post.published",
        "data": {"text": "héllo"},
    }
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == MSG_ID


def test_sign_equals_the_reference_implementation() -> None:
    secret, timestamp = webhook_signing.new_secret(), 1_700_000_000

    ours = webhook_signing.sign(secret, MSG_ID, timestamp, BODY)

    assert ours == Webhook(secret).sign(MSG_ID, datetime.fromtimestamp(timestamp, UTC), BODY)
    assert ours.startswith("v1,")


def test_during_rotation_a_receiver_holding_either_secret_verifies() -> None:
    old, new = webhook_signing.new_secret(), webhook_signing.new_secret()

    headers = webhook_signing.headers([new, old], MSG_ID, _now(), BODY)

    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def test_a_receiver_holding_neither_rotation_secret_refuses() -> None:
    headers = webhook_signing.headers(
        [webhook_signing.new_secret(), webhook_signing.new_secret()], MSG_ID, _now(), BODY
    )

    with pytest.raises(WebhookVerificationError):
        Webhook(webhook_signing.new_secret()).verify(BODY, headers)


def test_a_tampered_body_fails_verification() -> None:
    secret = webhook_signing.new_secret()
    headers = webhook_signing.headers([secret], MSG_ID, _now(), BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"h\\u00e9llo", b"bye"), headers)


def test_a_changed_webhook_id_fails_verification() -> None:
    secret = webhook_signing.new_secret()
    headers = webhook_signing.headers([secret], MSG_ID, _now(), BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": MSG_ID + "x"})


def test_the_same_secret_twice_signs_once() -> None:
    secret = webhook_signing.new_secret()

    header = webhook_signing.signature_header([secret, secret], MSG_ID, _now(), BODY)

    assert " " not in header


def test_a_secret_without_its_prefix_or_padding_signs_the_same() -> None:
    secret = webhook_signing.new_secret()
    bare = secret.removeprefix("whsec_").rstrip("=")

    assert webhook_signing.sign(bare, MSG_ID, 1, BODY) == webhook_signing.sign(
        secret, MSG_ID, 1, BODY
    )


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_not base64 at all!",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_a_malformed_secret_is_refused_without_being_echoed(secret: str) -> None:
    with pytest.raises(InvalidSigningSecret) as refused:
        webhook_signing.sign(secret, MSG_ID, 1, BODY)

    assert secret.removeprefix("whsec_") not in str(refused.value)


def test_one_string_instead_of_a_list_of_secrets_is_refused() -> None:
    with pytest.raises(TypeError):
        webhook_signing.signature_header(webhook_signing.new_secret(), MSG_ID, 1, BODY)


def test_no_secret_at_all_is_refused() -> None:
    with pytest.raises(InvalidSigningSecret):
        webhook_signing.headers([], MSG_ID, 1, BODY)


@pytest.mark.parametrize("msg_id", ["", "has space", "line\nbreak", "héllo"])
def test_a_webhook_id_that_is_not_visible_ascii_is_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        webhook_signing.sign(webhook_signing.new_secret(), msg_id, 1, BODY)
