"""The shipped production files can start: their environment satisfies the production settings,
the deploy's migrations run in order, and the broker and cache Redis are configured apart."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from socialflow.settings import Environment, Settings
from socialflow.vault.keyring import new_master_key

INFRA = Path(__file__).resolve().parents[2] / "infra"
K8S = INFRA / "k8s"
APP_PROCESSES = ("migrate", "api", "relay", "worker", "ai-worker", "webhooks-worker")
DEPLOY_MIGRATIONS = ["migrate", "tenants migrate", "tenants migrate --check"]

# What compose.yaml takes from the operator's shell, as infra/README.md tells them to set it.
COMPOSE_SHELL = {
    "JWT_SIGNING_KEY": "example-signing-key-" + "x" * 40,
    "VAULT_MASTER_KEYS": json.dumps({"key-1": new_master_key()}),
}


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text())
    return document


def _k8s_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(K8S.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def _secret_example() -> dict[str, str]:
    (secret,) = [d for d in _k8s_documents() if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "socialflow"
    data: dict[str, str] = secret["stringData"]
    return data


def _app_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, container) of every container running the SocialFlow image."""
    for document in _k8s_documents():
        if document["kind"] not in {"Deployment", "Job", "StatefulSet"}:
            continue
        for container in document["spec"]["template"]["spec"]["containers"]:
            if "socialflow" in container["image"]:
                yield document["metadata"]["name"], container


def _interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:?message}` and `${VAR:-default}`."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3)
        if name in shell:
            return shell[name]
        if operator == ":-":
            return default
        raise AssertionError(f"compose.yaml needs ${{{name}}} and the test has no example for it")

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", substitute, value)


def _compose_environment(service: str) -> dict[str, str]:
    environment = _compose()["services"][service]["environment"]
    return {name: _interpolate(str(value), COMPOSE_SHELL) for name, value in environment.items()}


def _k8s_environment(container: dict[str, Any]) -> dict[str, str]:
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["secretRef"]["name"] == "socialflow"
        environment.update(_secret_example())
    for variable in container.get("env", []):
        environment[variable["name"]] = variable["value"]
    return environment


@pytest.fixture
def settings_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Settings read from exactly `environment`, in the image (which sets ENV=production)."""

    def load(environment: dict[str, str]) -> Settings:
        for name in Settings.model_fields:
            monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.chdir(tmp_path)  # no stray .env
        for name, value in {"ENV": "production", **environment}.items():
            monkeypatch.setenv(name, value)
        return Settings()

    return load


def _assert_can_start_in_production(settings: Settings) -> None:
    assert settings.env is Environment.PRODUCTION
    assert settings.database_url
    assert settings.redis_url
    assert settings.vault_master_keys or settings.vault_kms_key_id
    # The caches live apart from the broker, whose Redis must not evict.
    assert settings.effective_cache_redis_url
    assert settings.effective_cache_redis_url != settings.redis_url


@pytest.mark.parametrize("service", APP_PROCESSES)
def test_the_compose_environment_of_each_process_satisfies_production_settings(
    service: str, settings_from: Callable[..., Settings]
) -> None:
    environment = _compose_environment(service)
    assert environment["ENV"] == "production"
    _assert_can_start_in_production(settings_from(environment))


def test_every_manifest_process_gets_an_environment_satisfying_production_settings(
    settings_from: Callable[..., Settings],
) -> None:
    containers = list(_app_containers())
    assert {name for name, _ in containers} == {f"socialflow-{p}" for p in APP_PROCESSES}
    for _, container in containers:
        environment = _k8s_environment(container)
        assert environment["ENV"] == "production"
        _assert_can_start_in_production(settings_from(environment))


def _migrate_commands() -> dict[str, list[str]]:
    (job,) = [c for name, c in _app_containers() if name == "socialflow-migrate"]
    return {
        "compose": _compose()["services"]["migrate"]["command"],
        "k8s": job.get("command", []) + job["args"],
    }


def _run_with_recording_socialflow(
    command: list[str], tmp_path: Path, fail_on: str = ""
) -> tuple[int, list[str]]:
    """Run the job's command with a `socialflow` that records its arguments (and can fail)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "socialflow"
    fake.write_text('#!/bin/sh\necho "$*" >> "$CALLS"\n[ "$*" = "$FAIL_ON" ] && exit 3\nexit 0\n')
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    calls.touch()
    done = subprocess.run(
        command,
        env={
            "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
            "CALLS": str(calls),
            "FAIL_ON": fail_on,
        },
        check=False,
        timeout=30,
    )
    return done.returncode, calls.read_text().splitlines()


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_the_migrate_job_runs_the_shared_then_the_tenant_migrations_then_the_gate(
    where: str, tmp_path: Path
) -> None:
    code, calls = _run_with_recording_socialflow(_migrate_commands()[where], tmp_path)
    assert code == 0
    assert calls == DEPLOY_MIGRATIONS


@pytest.mark.parametrize("failing", DEPLOY_MIGRATIONS)
@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_the_migrate_job_stops_and_fails_at_the_first_failing_step(
    where: str, failing: str, tmp_path: Path
) -> None:
    code, calls = _run_with_recording_socialflow(_migrate_commands()[where], tmp_path, failing)
    assert code != 0
    assert calls == DEPLOY_MIGRATIONS[: DEPLOY_MIGRATIONS.index(failing) + 1]


def _options(args: list[str]) -> dict[str, str]:
    """`redis-server --name value …` as {name: value}."""
    assert args[0] == "redis-server"
    return {
        name.removeprefix("--"): value for name, value in zip(args[1::2], args[2::2], strict=True)
    }


BROKER = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}
CACHE = {"maxmemory-policy": "allkeys-lru", "appendonly": "no", "save": ""}


def test_compose_runs_a_durable_broker_redis_and_a_separate_evicting_cache_redis() -> None:
    services = _compose()["services"]
    assert BROKER.items() <= _options(services["redis"]["command"]).items()
    assert CACHE.items() <= _options(services["redis-cache"]["command"]).items()
    environment = _compose_environment("api")
    assert urlsplit(environment["REDIS_URL"]).hostname == "redis"
    assert urlsplit(environment["CACHE_REDIS_URL"]).hostname == "redis-cache"


def test_the_manifests_run_a_durable_broker_redis_and_a_separate_evicting_cache_redis() -> None:
    redis = {
        d["metadata"]["name"]: _options(d["spec"]["template"]["spec"]["containers"][0]["args"])
        for d in _k8s_documents()
        if d["kind"] in {"StatefulSet", "Deployment"} and "redis" in d["metadata"]["name"]
    }
    assert BROKER.items() <= redis["socialflow-redis-broker"].items()
    assert CACHE.items() <= redis["socialflow-redis-cache"].items()
    services = {d["metadata"]["name"] for d in _k8s_documents() if d["kind"] == "Service"}
    secret = _secret_example()
    assert urlsplit(secret["REDIS_URL"]).hostname == "socialflow-redis-broker" in services
    assert urlsplit(secret["CACHE_REDIS_URL"]).hostname == "socialflow-redis-cache" in services
