"""Master keys that wrap tenants' data keys: a local key ring (AES-256-GCM) or AWS KMS."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from socialflow.settings import Environment, Settings

if TYPE_CHECKING:
    from botocore.exceptions import ClientError
    from mypy_boto3_kms import KMSClient

log = structlog.get_logger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
DEV_KEYRING_FILE = "vault-dev-keyring.json"
KMS_PREFIX = "kms:"
# First byte of a key-ring blob, so the format can change without guessing at old blobs.
_RING_BLOB_FORMAT = b"\x01"


class VaultError(Exception):
    """A secret or data key that cannot be sealed or opened. Messages never hold key material
    or plaintext: they name ids, versions and purposes only."""


class VaultConfigError(VaultError):
    """Master keys are missing or malformed in the settings."""


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under a master key, with the id of the master key that can open it."""

    master_key_id: str
    blob: bytes

    def __repr__(self) -> str:
        return f"WrappedKey(master_key_id={self.master_key_id!r}, blob=<{len(self.blob)} bytes>)"


class MasterKeyProvider(Protocol):
    """What the vault needs of a master key: wrap with the active one, unwrap with any it has."""

    @property
    def active_key_id(self) -> str: ...

    def handles(self, master_key_id: str) -> bool:
        """Whether `unwrap` can open keys wrapped by `master_key_id`."""
        ...

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes: ...


def new_master_key() -> str:
    """A fresh master key as VAULT_MASTER_KEYS expects it: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _associated_data(master_key_id: str, context: Mapping[str, str]) -> bytes:
    # Canonical JSON: the same context always gives the same bytes, and no two contexts (or
    # master key ids) share an encoding, so a blob only opens for the row it was made for.
    return json.dumps(
        [master_key_id, dict(sorted(context.items()))], separators=(",", ":"), ensure_ascii=True
    ).encode("utf-8")


class KeyRing:
    """Master keys held by the process (from VAULT_MASTER_KEYS); wraps with AES-256-GCM."""

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str | None = None) -> None:
        if not keys:
            raise VaultConfigError("the key ring has no master keys")
        for key_id, key in keys.items():
            if not key_id or key_id.startswith(KMS_PREFIX):
                raise VaultConfigError(f"invalid master key id {key_id!r}")
            if len(key) != KEY_BYTES:
                raise VaultConfigError(f"master key {key_id!r} is not {KEY_BYTES} bytes")
        if active_key_id is None:
            if len(keys) != 1:
                raise VaultConfigError(
                    "VAULT_ACTIVE_KEY_ID must name the active one of several master keys"
                )
            active_key_id = next(iter(keys))
        if active_key_id not in keys:
            raise VaultConfigError(f"active master key {active_key_id!r} is not in the key ring")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active = active_key_id

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The configured keys; outside production without any, a generated dev key kept in
        DATA_DIR so secrets written in one run still open in the next."""
        if settings.vault_master_keys:
            return cls(_configured_keys(settings), settings.vault_active_key_id)
        if settings.env is Environment.PRODUCTION:
            raise VaultConfigError("production requires VAULT_MASTER_KEYS or VAULT_KMS_KEY_ID")
        path = settings.data_dir / DEV_KEYRING_FILE
        keys, active = _load_or_create_dev_keyring(path)
        log.warning(
            "vault.generated_dev_master_key",
            path=str(path),
            master_key_id=active,
            hint="set VAULT_MASTER_KEYS (and VAULT_ACTIVE_KEY_ID) for real secrets",
        )
        return cls(keys, active)

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def handles(self, master_key_id: str) -> bool:
        return master_key_id in self._ciphers

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self._active].encrypt(
            nonce, data_key, _associated_data(self._active, context)
        )
        return WrappedKey(self._active, _RING_BLOB_FORMAT + nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        cipher = self._ciphers.get(wrapped.master_key_id)
        if cipher is None:
            raise VaultError(f"master key {wrapped.master_key_id!r} is not in the key ring")
        blob = wrapped.blob
        if blob[:1] != _RING_BLOB_FORMAT or len(blob) < 1 + NONCE_BYTES + 16:
            raise VaultError(f"malformed data key wrapped by {wrapped.master_key_id!r}")
        nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return cipher.decrypt(nonce, sealed, _associated_data(wrapped.master_key_id, context))
        except InvalidTag:
            raise VaultError(
                f"data key wrapped by {wrapped.master_key_id!r} does not open for this context"
            ) from None


def _configured_keys(settings: Settings) -> dict[str, bytes]:
    return {
        key_id: _decode_master_key(key_id, value.get_secret_value())
        for key_id, value in settings.vault_master_keys.items()
    }


def _decode_master_key(key_id: str, encoded: str) -> bytes:
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        # `from None`: the decoder's message could quote the key.
        raise VaultConfigError(f"master key {key_id!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise VaultConfigError(f"master key {key_id!r} is not {KEY_BYTES} bytes")
    return key


def _load_or_create_dev_keyring(path: Path) -> tuple[dict[str, bytes], str]:
    if not path.exists():
        _create_dev_keyring(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    keys = {key_id: _decode_master_key(key_id, value) for key_id, value in data["keys"].items()}
    return keys, str(data["active_key_id"])


def _create_dev_keyring(path: Path) -> None:
    """Write a new dev key ring unless another process got there first.

    `socialflow dev` starts the API, relay and worker together; each would otherwise generate
    its own key. The file is written whole under a private name, then hard-linked into place,
    which fails if the name exists: exactly one key ring wins and nobody reads a partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key_id = f"dev-{secrets.token_hex(4)}"
    document: dict[str, Any] = {
        "note": "generated development master key: never use it for real secrets",
        "active_key_id": key_id,
        "keys": {key_id: new_master_key()},
    }
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        # If the name exists, another process won: everyone uses its key ring.
        with contextlib.suppress(FileExistsError):
            os.link(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


class KmsMasterKey:
    """The master key lives in AWS KMS: data keys are wrapped by `Encrypt` and opened by
    `Decrypt`, both bound to the context (tenant and data key version) as EncryptionContext."""

    def __init__(
        self,
        key_id: str,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        client: KMSClient | None = None,
    ) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "kms",
                region_name=region,
                endpoint_url=endpoint_url,
                # Bounded: a KMS outage must fail a request, not hang it.
                config=Config(
                    connect_timeout=5,
                    read_timeout=10,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        self._client = client
        self._key_id = key_id

    @classmethod
    def from_settings(cls, settings: Settings) -> KmsMasterKey:
        if settings.vault_kms_key_id is None:
            raise VaultConfigError("VAULT_KMS_KEY_ID is not set")
        return cls(
            settings.vault_kms_key_id,
            region=settings.vault_kms_region,
            endpoint_url=settings.vault_kms_endpoint_url,
        )

    @property
    def active_key_id(self) -> str:
        return KMS_PREFIX + self._key_id

    def handles(self, master_key_id: str) -> bool:
        # Any KMS key: its ciphertext names the key, so data keys wrapped under a previous
        # VAULT_KMS_KEY_ID still open (given the IAM grant) while they are re-wrapped.
        return master_key_id.startswith(KMS_PREFIX)

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.encrypt(
                KeyId=self._key_id, Plaintext=data_key, EncryptionContext=dict(context)
            )
        except ClientError as exc:
            raise VaultError(f"KMS refused to wrap a data key: {_error_code(exc)}") from None
        except BotoCoreError as exc:
            raise VaultError(f"KMS is unreachable: {type(exc).__name__}") from None
        return WrappedKey(self.active_key_id, response["CiphertextBlob"])

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.handles(wrapped.master_key_id):
            raise VaultError(f"master key {wrapped.master_key_id!r} is not a KMS key")
        try:
            response = self._client.decrypt(
                CiphertextBlob=wrapped.blob,
                KeyId=wrapped.master_key_id.removeprefix(KMS_PREFIX),
                EncryptionContext=dict(context),
            )
        except ClientError as exc:
            raise VaultError(
                f"KMS refused to unwrap a data key of {wrapped.master_key_id!r}: {_error_code(exc)}"
            ) from None
        except BotoCoreError as exc:
            raise VaultError(f"KMS is unreachable: {type(exc).__name__}") from None
        return response["Plaintext"]


def _error_code(exc: ClientError) -> str:
    # The code only (e.g. InvalidCiphertextException): AWS messages may echo request fields.
    return str(exc.response.get("Error", {}).get("Code", "error"))


class MasterKeyChain:
    """Wraps with one provider and unwraps with whichever holds the key: the bridge while data
    keys move from one provider to another (e.g. key ring → KMS) through `rotate_master`."""

    def __init__(self, active: MasterKeyProvider, *others: MasterKeyProvider) -> None:
        self._active = active
        self._providers = (active, *others)

    @property
    def active_key_id(self) -> str:
        return self._active.active_key_id

    def handles(self, master_key_id: str) -> bool:
        return any(provider.handles(master_key_id) for provider in self._providers)

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
        return self._active.wrap(data_key, context)

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        for provider in self._providers:
            if provider.handles(wrapped.master_key_id):
                return provider.unwrap(wrapped, context)
        raise VaultError(f"no configured master key is {wrapped.master_key_id!r}")


def master_keys_from_settings(settings: Settings) -> MasterKeyProvider:
    """KMS when VAULT_KMS_KEY_ID is set (with VAULT_MASTER_KEYS still opening older data keys
    until they are re-wrapped), else the key ring."""
    if settings.vault_kms_key_id is not None:
        kms = KmsMasterKey.from_settings(settings)
        if settings.vault_master_keys:
            # The ring only unwraps here, so it needs no active key of its own.
            keys = _configured_keys(settings)
            return MasterKeyChain(kms, KeyRing(keys, settings.vault_active_key_id or min(keys)))
        return kms
    return KeyRing.from_settings(settings)
