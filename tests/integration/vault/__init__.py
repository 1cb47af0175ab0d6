"""Vault tests: helpers to insert tenants directly (data keys reference them) and master keys."""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg

from socialflow.vault.keyring import KeyRing, MasterKeyProvider, WrappedKey


def make_tenants(pg: psycopg.Connection[Any], count: int) -> list[uuid.UUID]:
    """`count` tenants of a new agency, inserted as rows only (no schema is needed here)."""
    agency_id = uuid.uuid4()
    pg.execute(
        "INSERT INTO shared.agencies (id, slug, name) VALUES (%s, %s, %s)",
        (agency_id, f"vault-{uuid.uuid4().hex[:12]}", "Vault test agency"),
    )
    tenant_ids = []
    for _ in range(count):
        tenant_id, tag = uuid.uuid4(), uuid.uuid4().hex[:12]
        pg.execute(
            "INSERT INTO shared.tenants (id, slug, name, agency_id, plan, schema_name) "
            "VALUES (%s, %s, %s, %s, 'pro', %s)",
            (tenant_id, f"vault-{tag}", "Vault test tenant", agency_id, f"t_vault_{tag}"),
        )
        tenant_ids.append(tenant_id)
    return tenant_ids


def ring(*key_ids: str, active: str | None = None) -> tuple[KeyRing, dict[str, bytes]]:
    """A key ring of fresh random keys, and the raw keys (for tests that hunt for leaks)."""
    keys = {key_id: secrets.token_bytes(32) for key_id in key_ids}
    return KeyRing(keys, active), keys


class CountingKeys:
    """A master key provider that counts its calls and can be told to fail (an interruption)
    or to hold every wrap until `hold_wraps` callers are inside it (a forced race)."""

    def __init__(self, inner: MasterKeyProvider) -> None:
        self.inner = inner
        self.wraps = 0
        self.unwraps = 0
        self.fail_after_wraps: int | None = None
        self.barrier: threading.Barrier | None = None
        self._lock = threading.Lock()

    def hold_wraps(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)

    @property
    def active_key_id(self) -> str:
        return self.inner.active_key_id

    def handles(self, master_key_id: str) -> bool:
        return self.inner.handles(master_key_id)

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> WrappedKey:
        with self._lock:
            if self.fail_after_wraps is not None and self.wraps >= self.fail_after_wraps:
                raise RuntimeError("interrupted (test)")
            self.wraps += 1
        if self.barrier is not None:
            self.barrier.wait()
        return self.inner.wrap(data_key, context)

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        with self._lock:
            self.unwraps += 1
        return self.inner.unwrap(wrapped, context)
