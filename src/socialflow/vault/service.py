"""The vault: tenants' secrets sealed with AES-256-GCM under per-tenant data keys. Never commits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import struct
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.settings import Settings
from socialflow.vault.keyring import (
    KEY_BYTES,
    NONCE_BYTES,
    MasterKeyProvider,
    VaultError,
    WrappedKey,
    master_keys_from_settings,
)

__all__ = [
    "DataKeyRow",
    "SealedSecret",
    "Vault",
    "VaultError",
    "data_key_context",
    "fingerprint",
    "last4",
    "lock_tenant_keys",
    "shred_tenant_keys",
]

log = structlog.get_logger(__name__)

# Advisory lock class of a tenant's data keys: sealing holds it shared for its transaction,
# tenant key rotation and shredding hold it exclusive, so no secret is sealed under a data key
# version that a concurrent rotation is about to drop (it waits, then sees the new version).
LOCK_NAMESPACE = 7_310_200
TAG_BYTES = 16
_SEALED_FORMAT = b"\x01"
_SEALED_HEADER = struct.Struct(">cI")  # format byte, data key version
_AAD_DOMAIN = "socialflow.vault.secret/1"
_FINGERPRINT_DOMAIN = b"socialflow.vault.fingerprint/1\x00"
LAST4_MIN_LENGTH = 12

RecordId = str | uuid.UUID | int


@dataclass(frozen=True)
class SealedSecret:
    """A sealed secret: the tenant data key version that seals it, and nonce + ciphertext + tag."""

    key_version: int
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        """One bytea column's worth: format byte, version, nonce, ciphertext and tag."""
        return _SEALED_HEADER.pack(_SEALED_FORMAT, self.key_version) + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedSecret:
        if len(data) < _SEALED_HEADER.size + NONCE_BYTES + TAG_BYTES:
            raise VaultError("malformed sealed secret: too short")
        fmt, version = _SEALED_HEADER.unpack_from(data)
        if fmt != _SEALED_FORMAT or version < 1:
            raise VaultError("malformed sealed secret: unknown format")
        return cls(version, bytes(data[_SEALED_HEADER.size :]))

    def __repr__(self) -> str:
        size = len(self.ciphertext)
        return f"SealedSecret(key_version={self.key_version}, ciphertext=<{size} bytes>)"


@dataclass(frozen=True)
class DataKeyRow:
    tenant_id: uuid.UUID
    version: int
    wrapped: WrappedKey


def data_key_context(tenant_id: uuid.UUID, version: int) -> dict[str, str]:
    """What a wrapped data key is bound to (KMS EncryptionContext, key ring associated data)."""
    return {"tenant_id": str(tenant_id), "key_version": str(version)}


def _secret_aad(tenant_id: uuid.UUID, purpose: str, record_id: str, version: int) -> bytes:
    # JSON of a list: unambiguous whatever the strings hold, so no two bindings collide.
    return json.dumps(
        [_AAD_DOMAIN, str(tenant_id), purpose, record_id, version], separators=(",", ":")
    ).encode("utf-8")


def fingerprint(plaintext: str) -> str:
    """A short stable identifier of a secret (12 hex of a domain-separated SHA-256), to tell
    secrets apart in a UI or a log without showing them. Meant for high-entropy secrets (tokens,
    API keys): a short password could be guessed back from it."""
    return hashlib.sha256(_FINGERPRINT_DOMAIN + plaintext.encode("utf-8")).hexdigest()[:12]


def last4(plaintext: str) -> str:
    """The last four characters, for display ("…a1b2"); empty for secrets shorter than 12
    characters, whose last four would give too much of them away."""
    return plaintext[-4:] if len(plaintext) >= LAST4_MIN_LENGTH else ""


async def lock_tenant_keys(session: AsyncSession, tenant_id: uuid.UUID, *, exclusive: bool) -> None:
    """Take the tenant's data key lock for the rest of the transaction (see LOCK_NAMESPACE)."""
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await session.execute(
        text(f"SELECT {function}(:ns, hashtext(:tenant))"),
        {"ns": LOCK_NAMESPACE, "tenant": str(tenant_id)},
    )


async def shred_tenant_keys(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """Delete every data key of the tenant (crypto-shredding): whatever was sealed under them,
    backups and copies included, can never be opened again. Returns how many were deleted.

    Usable without a Vault (e.g. from `purge_expired`); `Vault.shred_tenant` also empties its
    cache. Other processes' caches forget the keys within VAULT_DATA_KEY_CACHE_S.
    """
    await lock_tenant_keys(session, tenant_id, exclusive=True)
    deleted = await session.execute(
        text("DELETE FROM shared.tenant_data_keys WHERE tenant_id = :tenant RETURNING version"),
        {"tenant": tenant_id},
    )
    count = len(deleted.all())
    log.info("vault.tenant_shredded", tenant_id=str(tenant_id), data_keys=count)
    return count


_ACTIVE_KEY = text("""
SELECT version, master_key_id, wrapped_key FROM shared.tenant_data_keys
WHERE tenant_id = :tenant ORDER BY version DESC LIMIT 1
""")
_KEY_VERSION = text("""
SELECT version, master_key_id, wrapped_key FROM shared.tenant_data_keys
WHERE tenant_id = :tenant AND version = :version
""")
# Only for a tenant that exists and is not purged, so a straggler cannot give a shredded
# tenant a fresh key; concurrent first uses race on the primary key and one wins.
_INSERT_KEY = text("""
INSERT INTO shared.tenant_data_keys (tenant_id, version, master_key_id, wrapped_key)
SELECT t.id, :version, :master_key_id, :wrapped_key FROM shared.tenants t
WHERE t.id = :tenant AND t.status <> 'purged'
ON CONFLICT DO NOTHING
RETURNING version
""")


@dataclass(frozen=True)
class _CachedKey:
    blob: bytes  # the wrapping it was opened from: a different one means a different key
    cipher: AESGCM
    expires_at: float


class _DataKeyCache:
    """Unwrapped data keys for a while, so sealing and opening need no master key call."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[uuid.UUID, int], _CachedKey] = OrderedDict()
        # Dramatiq worker threads and the event loop thread may share one vault.
        self._lock = threading.Lock()

    def get(self, tenant_id: uuid.UUID, version: int) -> _CachedKey | None:
        with self._lock:
            entry = self._entries.get((tenant_id, version))
            if entry is None:
                return None
            if entry.expires_at <= self._clock():
                del self._entries[(tenant_id, version)]
                return None
            self._entries.move_to_end((tenant_id, version))
            return entry

    def put(self, tenant_id: uuid.UUID, version: int, blob: bytes, cipher: AESGCM) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._entries[(tenant_id, version)] = _CachedKey(
                blob, cipher, self._clock() + self._ttl_s
            )
            self._entries.move_to_end((tenant_id, version))
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def drop(self, tenant_id: uuid.UUID | None = None) -> None:
        with self._lock:
            if tenant_id is None:
                self._entries.clear()
                return
            for key in [key for key in self._entries if key[0] == tenant_id]:
                del self._entries[key]


class Vault:
    """Seals and opens tenants' secrets (envelope encryption).

    Each tenant has data keys (one per version, the highest sealing new secrets) stored in
    `shared.tenant_data_keys` wrapped by a master key (key ring or KMS). A secret is sealed with
    AES-256-GCM under the tenant's data key, bound to (tenant, purpose, record id), so copying
    it to another row, purpose or tenant makes it fail to open. The secret tables belong to the
    features; the vault only holds keys. Every method runs in the caller's transaction.
    """

    def __init__(
        self,
        master_keys: MasterKeyProvider,
        *,
        cache_ttl_s: float = 300.0,
        cache_max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.master_keys = master_keys
        self._cache = _DataKeyCache(cache_ttl_s, cache_max_entries, clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        return cls(master_keys_from_settings(settings), cache_ttl_s=settings.vault_data_key_cache_s)

    # -- sealing and opening -------------------------------------------------------------------

    async def encrypt(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        purpose: str,
        record_id: RecordId,
        plaintext: str,
    ) -> SealedSecret:
        """Seal `plaintext` for (tenant, purpose, record) under the tenant's active data key,
        creating the tenant's first data key if it has none."""
        _check_purpose(purpose)
        await lock_tenant_keys(session, tenant_id, exclusive=False)
        # Read every time (not cached): another process may have rotated the tenant's key.
        row = await self._active_key(session, tenant_id)
        if row is None:
            await self.create_data_key(session, tenant_id, 1)
            row = await self._active_key(session, tenant_id)
            if row is None:
                raise VaultError(f"tenant {tenant_id} does not exist or is purged: no data key")
        cipher = await self._cipher_for(row)
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = _secret_aad(tenant_id, purpose, str(record_id), row.version)
        sealed = cipher.encrypt(nonce, plaintext.encode("utf-8"), aad)
        return SealedSecret(row.version, nonce + sealed)

    async def decrypt(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        purpose: str,
        record_id: RecordId,
        sealed: SealedSecret | bytes,
    ) -> str:
        """Open a secret sealed by `encrypt` for the same (tenant, purpose, record); VaultError
        if it was altered, belongs elsewhere, or its data key version no longer exists."""
        _check_purpose(purpose)
        if not isinstance(sealed, SealedSecret):
            sealed = SealedSecret.from_bytes(sealed)
        what = f"{purpose!r} secret of record {str(record_id)!r} (tenant {tenant_id})"
        aad = _secret_aad(tenant_id, purpose, str(record_id), sealed.key_version)
        nonce, body = sealed.ciphertext[:NONCE_BYTES], sealed.ciphertext[NONCE_BYTES:]

        cached = self._cache.get(tenant_id, sealed.key_version)
        if cached is not None:
            opened = _open(cached.cipher, nonce, body, aad)
            if opened is not None:
                return _text(opened, what)
        row = await self._key_version(session, tenant_id, sealed.key_version)
        if row is None:
            self._cache.drop(tenant_id)
            log.warning(
                "vault.secret_refused",
                reason="data_key_missing",
                purpose=purpose,
                record_id=str(record_id),
                tenant_id=str(tenant_id),
                version=sealed.key_version,
            )
            raise VaultError(
                f"cannot open the {what}: data key version {sealed.key_version} does not exist "
                "(rotated away or shredded)"
            )
        if cached is None or cached.blob != row.wrapped.blob:
            # Not cached, or cached from another wrapping: a key this process saw in a
            # transaction that rolled back, or before another process shredded the tenant.
            opened = _open(await self._cipher_for(row), nonce, body, aad)
            if opened is not None:
                return _text(opened, what)
        log.warning(
            "vault.secret_refused",
            reason="does_not_open",
            purpose=purpose,
            record_id=str(record_id),
            tenant_id=str(tenant_id),
            version=sealed.key_version,
        )
        raise VaultError(
            f"cannot open the {what}: altered, or sealed for another tenant, purpose or record"
        )

    async def reseal(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        purpose: str,
        record_id: RecordId,
        sealed: SealedSecret | bytes,
    ) -> SealedSecret:
        """Open a secret and seal it again under the tenant's active data key (what a
        `rotate_tenant_key` callback does for each secret of an old version)."""
        plaintext = await self.decrypt(session, tenant_id, purpose, record_id, sealed)
        return await self.encrypt(session, tenant_id, purpose, record_id, plaintext)

    # -- data keys -----------------------------------------------------------------------------

    async def create_data_key(
        self, session: AsyncSession, tenant_id: uuid.UUID, version: int
    ) -> bool:
        """Generate, wrap and insert data key `version` of the tenant; False if that version
        exists already or the tenant does not exist or is purged."""
        data_key = secrets.token_bytes(KEY_BYTES)
        wrapped = await asyncio.to_thread(
            self.master_keys.wrap, data_key, data_key_context(tenant_id, version)
        )
        inserted = await session.execute(
            _INSERT_KEY,
            {
                "tenant": tenant_id,
                "version": version,
                "master_key_id": wrapped.master_key_id,
                "wrapped_key": wrapped.blob,
            },
        )
        if inserted.first() is None:
            return False
        self._cache.put(tenant_id, version, wrapped.blob, AESGCM(data_key))
        log.debug(
            "vault.data_key_created",
            tenant_id=str(tenant_id),
            version=version,
            master_key_id=wrapped.master_key_id,
        )
        return True

    async def rewrap(self, row: DataKeyRow) -> WrappedKey:
        """The same data key wrapped by the active master key (master key rotation)."""
        context = data_key_context(row.tenant_id, row.version)

        def rewrap() -> WrappedKey:
            return self.master_keys.wrap(self.master_keys.unwrap(row.wrapped, context), context)

        return await asyncio.to_thread(rewrap)

    async def shred_tenant(self, session: AsyncSession, tenant_id: uuid.UUID) -> int:
        """Crypto-shred the tenant: delete its data keys (see `shred_tenant_keys`)."""
        count = await shred_tenant_keys(session, tenant_id)
        self._cache.drop(tenant_id)
        return count

    def invalidate(self, tenant_id: uuid.UUID | None = None) -> None:
        """Forget cached data keys of one tenant, or of all."""
        self._cache.drop(tenant_id)

    # -- display -------------------------------------------------------------------------------

    @staticmethod
    def fingerprint(plaintext: str) -> str:
        return fingerprint(plaintext)

    @staticmethod
    def last4(plaintext: str) -> str:
        return last4(plaintext)

    # -- internals -----------------------------------------------------------------------------

    async def _active_key(self, session: AsyncSession, tenant_id: uuid.UUID) -> DataKeyRow | None:
        return _row(tenant_id, (await session.execute(_ACTIVE_KEY, {"tenant": tenant_id})).first())

    async def _key_version(
        self, session: AsyncSession, tenant_id: uuid.UUID, version: int
    ) -> DataKeyRow | None:
        found = await session.execute(_KEY_VERSION, {"tenant": tenant_id, "version": version})
        return _row(tenant_id, found.first())

    async def _cipher_for(self, row: DataKeyRow) -> AESGCM:
        cached = self._cache.get(row.tenant_id, row.version)
        if cached is not None and cached.blob == row.wrapped.blob:
            return cached.cipher
        data_key = await asyncio.to_thread(
            self.master_keys.unwrap, row.wrapped, data_key_context(row.tenant_id, row.version)
        )
        cipher = AESGCM(data_key)
        self._cache.put(row.tenant_id, row.version, row.wrapped.blob, cipher)
        log.debug(
            "vault.data_key_unwrapped",
            tenant_id=str(row.tenant_id),
            version=row.version,
            master_key_id=row.wrapped.master_key_id,
        )
        return cipher


def _row(tenant_id: uuid.UUID, found: Any) -> DataKeyRow | None:
    if found is None:
        return None
    return DataKeyRow(tenant_id, found.version, WrappedKey(found.master_key_id, found.wrapped_key))


def _open(cipher: AESGCM, nonce: bytes, body: bytes, aad: bytes) -> bytes | None:
    try:
        return cipher.decrypt(nonce, body, aad)
    except InvalidTag:
        return None


def _text(opened: bytes, what: str) -> str:
    try:
        return opened.decode("utf-8")
    except UnicodeDecodeError:
        raise VaultError(f"the {what} is not UTF-8 text") from None


def _check_purpose(purpose: str) -> None:
    if not purpose:
        raise VaultError("a secret needs a purpose (e.g. 'social_account.oauth_token')")
