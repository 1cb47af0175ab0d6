"""Master keys: the key ring wraps data keys bound to their context; dev keys are generated once."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from socialflow.settings import Environment, Settings
from socialflow.vault.keyring import (
    DEV_KEYRING_FILE,
    KeyRing,
    KmsMasterKey,
    MasterKeyChain,
    VaultConfigError,
    VaultError,
    WrappedKey,
    master_keys_from_settings,
    new_master_key,
)
from tests.log_capture import ProcessOutput, process_output_fixture  # noqa: F401

CONTEXT = {"tenant_id": "8b0c6c1e-0000-4000-8000-000000000001", "key_version": "1"}


def settings_for(tmp_path: Path, **values: Any) -> Settings:
    return Settings(env=Environment.TEST, data_dir=tmp_path, _env_file=None, **values)


def test_a_wrapped_data_key_opens_only_for_its_own_context() -> None:
    keyring = KeyRing({"k1": secrets.token_bytes(32)})
    data_key = secrets.token_bytes(32)
    wrapped = keyring.wrap(data_key, CONTEXT)
    assert wrapped.master_key_id == "k1"
    assert data_key not in wrapped.blob
    assert keyring.unwrap(wrapped, dict(CONTEXT)) == data_key
    for other in (
        {**CONTEXT, "key_version": "2"},
        {**CONTEXT, "tenant_id": "8b0c6c1e-0000-4000-8000-000000000002"},
        {"tenant_id": CONTEXT["tenant_id"]},
    ):
        with pytest.raises(VaultError):
            keyring.unwrap(wrapped, other)


def test_a_tampered_wrapped_key_is_refused() -> None:
    keyring = KeyRing({"k1": secrets.token_bytes(32)})
    wrapped = keyring.wrap(secrets.token_bytes(32), CONTEXT)
    for position in (1, 13, len(wrapped.blob) - 1):
        blob = bytearray(wrapped.blob)
        blob[position] ^= 0x01
        with pytest.raises(VaultError):
            keyring.unwrap(WrappedKey("k1", bytes(blob)), CONTEXT)
    with pytest.raises(VaultError):
        keyring.unwrap(WrappedKey("k1", wrapped.blob[:20]), CONTEXT)


def test_the_ring_wraps_with_the_active_key_and_unwraps_with_any_it_holds() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = KeyRing({"old": old}).wrap(b"a" * 32, CONTEXT)
    both = KeyRing({"old": old, "new": new}, active_key_id="new")
    assert both.active_key_id == "new"
    assert both.unwrap(before, CONTEXT) == b"a" * 32
    after = both.wrap(b"b" * 32, CONTEXT)
    assert after.master_key_id == "new"
    assert KeyRing({"new": new}).unwrap(after, CONTEXT) == b"b" * 32
    with pytest.raises(VaultError, match="'old' is not in the key ring"):
        KeyRing({"new": new}).unwrap(before, CONTEXT)
    # The key id is bound too: a blob relabelled as another key of the ring does not open.
    same_key_other_id = KeyRing({"old": old, "alias": old}, active_key_id="old")
    with pytest.raises(VaultError):
        same_key_other_id.unwrap(WrappedKey("alias", before.blob), CONTEXT)


def test_configured_keys_and_the_active_one(tmp_path: Path) -> None:
    one = settings_for(tmp_path, vault_master_keys={"only": SecretStr(new_master_key())})
    assert KeyRing.from_settings(one).active_key_id == "only"
    keys = {"a": SecretStr(new_master_key()), "b": SecretStr(new_master_key())}
    assert (
        KeyRing.from_settings(
            settings_for(tmp_path, vault_master_keys=keys, vault_active_key_id="b")
        ).active_key_id
        == "b"
    )
    with pytest.raises(VaultConfigError, match="VAULT_ACTIVE_KEY_ID"):
        KeyRing.from_settings(settings_for(tmp_path, vault_master_keys=keys))
    with pytest.raises(VaultConfigError, match="'c' is not in the key ring"):
        KeyRing.from_settings(
            settings_for(tmp_path, vault_master_keys=keys, vault_active_key_id="c")
        )
    assert not (tmp_path / DEV_KEYRING_FILE).exists()


@pytest.mark.parametrize(
    "value",
    [
        "this-is-not-base64-at-all!",
        base64.b64encode(b"sixteen byte key").decode(),
        base64.b64encode(secrets.token_bytes(64)).decode(),
    ],
    ids=["not-base64", "16-bytes", "64-bytes"],
)
def test_malformed_master_keys_are_refused_without_quoting_them(tmp_path: Path, value: str) -> None:
    with pytest.raises(VaultConfigError) as raised:
        KeyRing.from_settings(settings_for(tmp_path, vault_master_keys={"bad": SecretStr(value)}))
    assert "'bad'" in str(raised.value)
    assert value not in str(raised.value)
    assert raised.value.__cause__ is None


def test_a_dev_key_is_generated_once_kept_private_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, process_output: ProcessOutput
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(tmp_path / "data")
    first = KeyRing.from_settings(settings)
    path = tmp_path / "data" / DEV_KEYRING_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = KeyRing.from_settings(settings)
    assert second.active_key_id == first.active_key_id
    data_key = secrets.token_bytes(32)
    assert second.unwrap(first.wrap(data_key, CONTEXT), CONTEXT) == data_key
    assert [p.name for p in path.parent.iterdir()] == [DEV_KEYRING_FILE]

    warnings = [r for r in caplog.records if "vault.generated_dev_master_key" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    (encoded,) = json.loads(path.read_text())["keys"].values()
    assert len(base64.b64decode(encoded)) == 32
    assert encoded not in caplog.text
    assert all(encoded not in r.getMessage() for r in caplog.records)
    # The warning reached the process's stderr too, without the key.
    process_output.assert_logged("vault.generated_dev_master_key")
    assert encoded not in process_output.everything()


def test_processes_starting_together_share_one_dev_key(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    start = threading.Barrier(8)
    ids: list[str] = []

    def load() -> None:
        start.wait(timeout=30)
        ids.append(KeyRing.from_settings(settings).active_key_id)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8
    assert len(set(ids)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [DEV_KEYRING_FILE]


def test_production_never_generates_a_master_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="VAULT_MASTER_KEYS or VAULT_KMS_KEY_ID"):
        Settings(
            env=Environment.PRODUCTION,
            database_url="postgresql://u@db/app",
            redis_url="redis://r",
            jwt_signing_key=SecretStr("k" * 40),
            _env_file=None,
        )
    # Even a settings object that skipped validation gets no generated key.
    production = settings_for(tmp_path).model_copy(update={"env": Environment.PRODUCTION})
    with pytest.raises(VaultConfigError):
        KeyRing.from_settings(production)
    with pytest.raises(VaultConfigError):
        master_keys_from_settings(production)
    assert list(tmp_path.iterdir()) == []


def test_the_factory_picks_kms_and_keeps_the_ring_for_older_data_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    kms_only = settings_for(tmp_path, vault_kms_key_id="alias/socialflow")
    provider = master_keys_from_settings(kms_only)
    assert isinstance(provider, KmsMasterKey)
    assert provider.active_key_id == "kms:alias/socialflow"

    both = settings_for(
        tmp_path,
        vault_kms_key_id="alias/socialflow",
        vault_master_keys={"a": SecretStr(new_master_key()), "b": SecretStr(new_master_key())},
    )
    chain = master_keys_from_settings(both)
    assert isinstance(chain, MasterKeyChain)
    assert chain.active_key_id == "kms:alias/socialflow"
    assert all(chain.handles(key_id) for key_id in ("a", "b", "kms:other"))
    assert not chain.handles("c")

    assert isinstance(master_keys_from_settings(settings_for(tmp_path)), KeyRing)
    assert os.listdir(tmp_path) == [DEV_KEYRING_FILE]
