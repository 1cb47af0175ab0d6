"""Settings come from the environment (and .env), typed, with no production secret defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from socialflow.db.engine import libpq_url, sqlalchemy_url
from socialflow.settings import Environment, LogFormat, Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in (
        "ENV",
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_SIGNING_KEY",
        "PORT",
        "HOST",
        "LOG_FORMAT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


def test_environment_variables_fill_typed_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PORT", "9001")
    clean_env.setenv("DATABASE_URL", "postgresql://u:p@db:5432/app")
    clean_env.setenv("RELAY_BATCH_SIZE", "250")
    settings = Settings()
    assert settings.port == 9001
    assert settings.database_url == "postgresql://u:p@db:5432/app"
    assert settings.relay_batch_size == 250
    assert settings.env is Environment.DEV


def test_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HOST=0.0.0.0\nLOG_LEVEL=DEBUG\n")
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.log_level == "DEBUG"


def test_an_invalid_port_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_production_refuses_to_start_without_services_and_signing_key(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("ENV", "production")
    clean_env.setenv("REDIS_URL", "redis://r:6379/0")
    with pytest.raises(ValidationError) as excinfo:
        Settings()
    message = str(excinfo.value)
    assert "DATABASE_URL" in message
    assert "JWT_SIGNING_KEY" in message
    assert "VAULT_MASTER_KEYS" in message
    assert "CACHE_REDIS_URL" in message
    assert "REDIS_URL" not in message.split("requires", 1)[1].replace("CACHE_REDIS_URL", "")


def test_production_logs_json_and_dev_logs_for_people(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings().effective_log_format is LogFormat.CONSOLE
    production = Settings(
        env=Environment.PRODUCTION,
        database_url="postgresql://db/app",
        redis_url="redis://r/0",
        cache_redis_url="redis://cache/0",
        jwt_signing_key="k" * 40,  # type: ignore[arg-type]
        vault_kms_key_id="alias/socialflow",
    )
    assert production.effective_log_format is LogFormat.JSON


def test_dev_generates_a_signing_key_once_per_process(clean_env: pytest.MonkeyPatch) -> None:
    first, second = Settings().signing_key(), Settings().signing_key()
    assert first == second
    assert len(first) >= 32


def test_database_urls_are_normalised_to_psycopg3() -> None:
    assert sqlalchemy_url("postgres://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"
    socket_url = make_url(sqlalchemy_url("postgresql://u@/d?host=/tmp/s"))
    assert socket_url.drivername == "postgresql+psycopg"
    assert socket_url.query["host"] == "/tmp/s"
    assert libpq_url("postgresql+psycopg://u:p@h/d") == "postgresql://u:p@h/d"


def test_caches_use_cache_redis_url_and_fall_back_to_the_broker_redis(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.delenv("CACHE_REDIS_URL", raising=False)
    clean_env.setenv("REDIS_URL", "redis://broker:6379/0")
    assert Settings().effective_cache_redis_url == "redis://broker:6379/0"  # dev: one Redis
    clean_env.setenv("CACHE_REDIS_URL", "redis://cache:6379/0")
    assert Settings().effective_cache_redis_url == "redis://cache:6379/0"
