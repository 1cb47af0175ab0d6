"""Secrets vault: envelope encryption of tenants' secrets under per-tenant data keys."""

from socialflow.vault.keyring import (
    KeyRing,
    KmsMasterKey,
    MasterKeyChain,
    MasterKeyProvider,
    VaultConfigError,
    VaultError,
    WrappedKey,
    master_keys_from_settings,
    new_master_key,
)
from socialflow.vault.rotation import (
    TenantKeyRotation,
    rotate_master,
    rotate_tenant_key,
    vault_status,
)
from socialflow.vault.service import SealedSecret, Vault, fingerprint, last4, shred_tenant_keys

__all__ = [
    "KeyRing",
    "KmsMasterKey",
    "MasterKeyChain",
    "MasterKeyProvider",
    "SealedSecret",
    "TenantKeyRotation",
    "Vault",
    "VaultConfigError",
    "VaultError",
    "WrappedKey",
    "fingerprint",
    "last4",
    "master_keys_from_settings",
    "new_master_key",
    "rotate_master",
    "rotate_tenant_key",
    "shred_tenant_keys",
    "vault_status",
]
