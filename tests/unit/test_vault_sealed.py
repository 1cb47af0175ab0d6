"""Sealed secrets serialise to one bytea value; fingerprints and last4 show secrets safely."""

from __future__ import annotations

import hashlib
import secrets

import pytest

from socialflow.vault.keyring import VaultError
from socialflow.vault.service import SealedSecret, Vault, fingerprint, last4


def test_a_sealed_secret_round_trips_through_bytes() -> None:
    sealed = SealedSecret(7, secrets.token_bytes(12 + 5 + 16))
    data = sealed.to_bytes()
    assert data.endswith(sealed.ciphertext)
    assert SealedSecret.from_bytes(data) == sealed
    assert SealedSecret.from_bytes(memoryview(data).tobytes()) == sealed
    assert sealed.ciphertext.hex() not in repr(sealed)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        SealedSecret(1, b"x" * 27).to_bytes(),  # shorter than nonce + tag
        b"\x02" + SealedSecret(1, b"x" * 40).to_bytes()[1:],  # unknown format
        SealedSecret(0, b"x" * 40).to_bytes(),  # no version 0
    ],
    ids=["empty", "too-short", "unknown-format", "version-0"],
)
def test_malformed_sealed_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(VaultError, match="malformed"):
        SealedSecret.from_bytes(data)


def test_fingerprint_tells_secrets_apart_without_showing_them() -> None:
    secret = "sk-live-" + secrets.token_hex(24)
    fp = fingerprint(secret)
    assert len(fp) == 12
    assert int(fp, 16) >= 0
    assert fp == Vault.fingerprint(secret) == fingerprint(secret)
    assert fp != fingerprint(secret + "x")
    assert fp not in secret
    # Domain-separated: not the plain SHA-256 someone may have published for the same value.
    assert fp != hashlib.sha256(secret.encode()).hexdigest()[:12]


def test_last4_shows_the_end_of_long_secrets_only() -> None:
    assert last4("sk-abcdefgh1234") == "1234"
    assert Vault.last4("sk-abcdefgh1234") == "1234"
    assert last4("short-pw") == ""
    assert last4("") == ""
