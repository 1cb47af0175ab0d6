"""Standard Webhooks signatures (https://www.standardwebhooks.com) for every webhook we send.

The scheme is one HMAC-SHA256 over `{id}.{timestamp}.{body}`, so it is written out here rather
than imported: production only signs, and the tests verify with the `standardwebhooks` package
exactly as a receiver would, which checks this code against an independent implementation.

A secret is `whsec_` + base64 of its key bytes. Several secrets sign at once during a rotation
overlap: the `webhook-signature` header then carries one signature per secret, space-separated,
and a receiver holding either secret verifies. Secrets are taken as plain strings and never
appear in an error message; callers keep them out of logs and reprs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SIGNATURE_VERSION = "v1"
# The spec asks for keys of 24 to 64 bytes; new ones get 32 (the HMAC-SHA256 block's half).
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
NEW_KEY_BYTES = 32


class InvalidSigningSecret(ValueError):
    """A signing secret that is not `whsec_` + base64 of 24 to 64 bytes (the secret itself is
    never part of the message)."""


def new_secret() -> str:
    """A fresh signing secret, `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(NEW_KEY_BYTES)).decode()


def _key(secret: str) -> bytes:
    # Receivers' libraries accept the secret with or without its prefix; so do we.
    encoded = secret.removeprefix(SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)  # and with or without base64's padding
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSigningSecret("a webhook signing secret must be base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise InvalidSigningSecret(
            f"a webhook signing secret must hold {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes"
        )
    return key


def _check_msg_id(msg_id: str) -> None:
    # It travels in a header and inside the signed content: visible ASCII only, no separators
    # a receiver could split on.
    if not msg_id or not all("!" <= c <= "~" for c in msg_id):
        raise ValueError("a webhook id must be non-empty visible ASCII without spaces")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `{msg_id}.{timestamp}.{body}`; `body` exactly as sent."""
    _check_msg_id(msg_id)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret (the current one and, during a
    rotation overlap, the previous one), space-separated."""
    if isinstance(secrets, str):  # a lone string would be signed character by character
        raise TypeError("pass a sequence of secrets, not one string")
    if not secrets:
        raise InvalidSigningSecret("at least one webhook signing secret is needed")
    signatures = (sign(secret, msg_id, timestamp, body) for secret in secrets)
    return " ".join(dict.fromkeys(signatures))  # the same secret twice signs once


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt. `msg_id` stays the same on
    every attempt of a delivery (receivers dedup by it); `timestamp` is the attempt's own, in
    seconds since the epoch (receivers refuse one more than a few minutes off)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }
