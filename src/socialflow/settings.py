"""One typed settings object, read from the environment (and an optional `.env`)."""

from __future__ import annotations

import os
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# litellm downloads its model cost map on import unless told otherwise; this process never
# reaches the internet, so the bundled map is the only one to use. Set before any import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


GIB = 1024**3
# The catalogue `make run` starts with (PLAN_CATALOGUE replaces it); null = unlimited.
DEFAULT_PLAN_CATALOGUE: dict[str, dict[str, Any]] = {
    "free": {
        "display_name": "Free",
        "seats": 3,
        "storage_bytes": 1 * GIB,
        "media_items": 500,
        "posts_per_month": 30,
        "ai_spend_usd_per_month": 1.0,
        "social_accounts": 2,
        "webhook_endpoints": 1,
        "api_requests_per_minute": 300,
        "event_retention_days": 7,
        "platform_ai_keys": False,
    },
    "starter": {
        "display_name": "Starter",
        "seats": 10,
        "storage_bytes": 25 * GIB,
        "media_items": 5_000,
        "posts_per_month": 300,
        "ai_spend_usd_per_month": 20.0,
        "social_accounts": 5,
        "webhook_endpoints": 5,
        "api_requests_per_minute": 1_200,
        "event_retention_days": 30,
        "platform_ai_keys": False,
    },
    "pro": {
        "display_name": "Pro",
        "seats": 50,
        "storage_bytes": 250 * GIB,
        "media_items": 50_000,
        "posts_per_month": 3_000,
        "ai_spend_usd_per_month": 200.0,
        "social_accounts": 25,
        "webhook_endpoints": 20,
        "api_requests_per_minute": 6_000,
        "event_retention_days": 90,
        "platform_ai_keys": True,
    },
    "enterprise": {
        "display_name": "Enterprise",
        "seats": None,
        "storage_bytes": None,
        "media_items": None,
        "posts_per_month": None,
        "ai_spend_usd_per_month": None,
        "social_accounts": None,
        "webhook_endpoints": None,
        "api_requests_per_minute": 30_000,
        "event_retention_days": 365,
        "platform_ai_keys": True,
    },
}


# Settings of plans before the catalogue existed.
REPLACED_BY_PLAN_CATALOGUE = ("PLANS", "RATE_LIMIT_TENANT_PER_MINUTE", "AI_PLATFORM_KEY_PLANS")


class Environment(StrEnum):
    DEV = "dev"
    TEST = "test"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


class Settings(BaseSettings):
    """Every setting the product reads. Names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    env: Environment = Environment.DEV
    database_url: str | None = Field(
        default=None, description="PostgreSQL URL; unset = embedded PostgreSQL (dev, test)"
    )
    redis_url: str | None = Field(default=None, description="Redis URL; unset = embedded Redis")
    data_dir: Path = Field(default=Path(".data"), description="embedded servers' data")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(
        default=1, ge=1, le=64, description="API processes `socialflow api` runs (one per core)"
    )
    log_level: str = "INFO"
    log_format: LogFormat | None = Field(default=None, description="default: json in production")
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    ready_timeout_s: float = Field(default=2.0, gt=0)
    jwt_signing_key: SecretStr | None = Field(
        default=None, description="HS256 key for access tokens; generated per run in dev/test"
    )
    access_token_ttl_s: int = Field(default=900, ge=30)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    jwt_issuer: str = "socialflow"
    password_time_cost: int = Field(default=3, ge=1)
    password_memory_kib: int = Field(default=65_536, ge=1024)
    invitation_ttl_hours: int = Field(default=72, ge=1)
    tenant_retention_days: int = Field(default=30, ge=0)
    tenant_cache_ttl_s: float = Field(default=5.0, ge=0)
    plan_catalogue: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: DEFAULT_PLAN_CATALOGUE,
        description="JSON {plan: {limits}}: the plans added to the catalogue on first start "
        "(existing plans are left to the operators' API)",
    )
    vault_master_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='JSON {"key id": "base64 of 32 bytes"}; dev/test: generated into DATA_DIR',
    )
    vault_active_key_id: str | None = None
    vault_kms_key_id: str | None = Field(
        default=None, description="AWS KMS key id/ARN: master key in KMS instead of the key ring"
    )
    vault_kms_endpoint_url: str | None = None
    vault_kms_region: str = "us-east-1"
    vault_data_key_cache_s: float = Field(default=300.0, ge=0)
    ai_test_timeout_s: float = Field(default=10.0, gt=0)
    ai_platform_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description='JSON {"openai": "sk-…"}: the platform\'s own keys'
    )
    ai_platform_base_urls: dict[str, str] = Field(
        default_factory=dict,
        description='JSON {"openai": "https://gateway.internal/v1"}: where the platform\'s keys '
        "call (a gateway of the operator's); default: each provider's own endpoint",
    )
    ai_caption_max_tokens: int = Field(default=800, ge=50, le=8000)
    ai_call_timeout_s: float = Field(default=60.0, gt=0)
    ai_rate_limits_per_minute: dict[str, int] = Field(
        default_factory=lambda: {"caption": 120, "embed": 600, "embed_query": 300},
        description='JSON {"caption": 120, …}: provider calls a tenant may make a minute, by '
        "operation, shared by every worker",
    )
    ai_max_attempts: int = Field(
        default=6, ge=1, description="failed calls (429, 5xx, timeouts) of one item before it fails"
    )
    ai_reservation_ttl_s: int = Field(
        default=900, ge=60, description="a reservation older than this was a lost call: released"
    )
    search_exact_scan_below: int = Field(
        default=5000,
        ge=0,
        description="below this many vectors (that a query's filters leave) search ranks them "
        "all exactly instead of through the HNSW index",
    )
    search_exact_fallback_max: int = Field(
        default=20_000,
        ge=0,
        description="a filtered query whose HNSW list came back short ranks every match "
        "exactly when at most this many (beyond, the index's list stands)",
    )
    search_hnsw_ef_search: int = Field(
        default=200, ge=10, le=1000, description="HNSW candidates a semantic query explores"
    )
    search_rrf_k: int = Field(default=60, ge=1, description="reciprocal rank fusion's k")
    search_rrf_candidates: int = Field(
        default=100, ge=10, le=1000, description="items of each list hybrid search fuses"
    )
    search_text_weight: float = Field(default=1.0, ge=0, le=10)
    search_semantic_weight: float = Field(default=1.0, ge=0, le=10)
    search_embed_timeout_s: float = Field(
        default=5.0, gt=0, description="a query's embedding call; past it, search answers by text"
    )
    search_query_cache_ttl_s: int = Field(
        default=3600, ge=60, description="how long a query's vector is kept in Redis"
    )
    outbound_allowed_networks: tuple[str, ...] = Field(
        default=(), description="CIDRs tenants' URLs may reach although private (e.g. 10.0.0.0/8)"
    )
    outbound_allow_http: bool = False
    email_backend: str = Field(default="file", pattern="^(smtp|file)$")
    email_from: str = "SocialFlow <no-reply@socialflow.localhost>"
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: str = Field(default="starttls", pattern="^(none|starttls|ssl)$")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    public_base_url: str = "http://127.0.0.1:8000"
    cors_allowed_origins: tuple[str, ...] = Field(
        default=(), description="JSON list of browser origins allowed to call the API"
    )
    max_request_body_bytes: int = Field(default=1_048_576, ge=1024)
    rate_limit_user_per_minute: int = Field(default=600, ge=1)
    rate_limit_api_key_per_minute: int = Field(default=1200, ge=1)
    oidc_issuer: str | None = Field(default=None, description="accept JWTs from this issuer")
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_jwks_cache_s: int = Field(default=300, ge=0)
    oidc_jwks_refresh_cooldown_s: float = Field(default=30.0, ge=0)
    worker_processes: int = Field(default=1, ge=1)
    worker_threads: int = Field(default=4, ge=1)
    worker_ai_threads: int = Field(
        default=64, ge=1, description="threads of `socialflow worker --queues ai`: calls in flight"
    )
    worker_webhook_threads: int = Field(
        default=32,
        ge=1,
        description="threads of `socialflow worker --queues webhooks`: events delivered at once",
    )
    worker_step_concurrency: int = Field(
        default=4,
        ge=1,
        description="step transactions of stepwise actors (AI) a worker process runs at once",
    )
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_poll_interval_s: float = Field(default=1.0, gt=0)
    relay_concurrency: int = Field(default=2, ge=1, le=16)
    relay_redis_min_replicas: int = Field(default=0, ge=0)
    relay_metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description="the relay's /metrics, /livez and /readyz (0: not served)",
    )
    api_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="the API's /metrics on a port of its own (PROBE_HOST), and then not on PORT "
        "(0: on PORT)",
    )
    worker_metrics_port: int = Field(
        default=9191,
        ge=0,
        le=65535,
        description="a worker command's metrics (all its processes), /livez and /readyz "
        "(0: not served)",
    )
    worker_liveness_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="a worker's /livez fails when a process's fetch loops or event loop have "
        "not turned for this long",
    )
    relay_liveness_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="/livez fails when a claim loop has not turned for this long",
    )
    probe_host: str = Field(
        default="127.0.0.1",
        description="address the relay's and workers' metrics and probes listen on "
        "(0.0.0.0 in a pod)",
    )
    processed_event_retention_hours: int = Field(default=168, ge=1)
    worker_max_retries: int = Field(default=10, ge=0)
    worker_min_backoff_ms: int = Field(default=1_000, ge=0)
    worker_max_backoff_ms: int = Field(default=300_000, ge=0)

    # -- social accounts and publishing -----------------------------------------------------------
    social_oauth_redirect_uri: str | None = Field(
        default=None,
        description="where platforms send the person back after authorizing (the app's page "
        "that forwards code and state to GET /api/v1/oauth/callback); unset = that API route "
        "under PUBLIC_BASE_URL",
    )
    social_oauth_state_ttl_s: int = Field(default=600, ge=60, le=3600)
    social_refresh_margin_s: int = Field(
        default=300, ge=0, description="refresh an account's token this long before it expires"
    )
    social_call_timeout_s: float = Field(
        default=30.0, gt=0, description="one call to a platform (upload, post, lookup)"
    )
    publish_max_attempts: int = Field(
        default=6, ge=1, le=50, description="attempts of a delivery on retryable failures"
    )
    publish_retry_base_s: float = Field(default=30.0, gt=0)
    publish_retry_max_s: float = Field(default=3600.0, gt=0)
    publish_stalled_after_s: int = Field(
        default=600,
        ge=5,
        description="a delivery still `sending` this long after it started is reconciled",
    )
    publish_unconfirmed_checks: int = Field(
        default=5, ge=1, description="lookups of an unknown outcome before it stays unconfirmed"
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="one request to a customer's webhook endpoint"
    )
    webhook_retry_window_h: float = Field(
        default=72.0, gt=0, description="a delivery is retried with backoff for this long"
    )
    webhook_disable_after_failures: int = Field(
        default=10,
        ge=1,
        description="consecutive failures (over WEBHOOK_DISABLE_AFTER_H) that disable an endpoint",
    )
    webhook_disable_after_h: float = Field(
        default=24.0,
        ge=0,
        description="how long an endpoint must have failed before it is disabled",
    )
    webhook_secret_overlap_h: float = Field(
        default=24.0, ge=0, le=168, description="default overlap of a rotated signing secret"
    )
    webhook_concurrency: int = Field(
        default=16, ge=1, le=256, description="requests in flight per endpoint while draining"
    )
    webhook_drain_batch: int = Field(default=200, ge=1, le=5000)
    webhook_replay_interval_s: int = Field(
        default=60, ge=0, description="one replay per endpoint this often"
    )
    webhook_replay_max_events: int = Field(default=10_000, ge=1)
    webhook_tests_per_minute: int = Field(
        default=10, ge=1, description="test deliveries (POST …/webhooks/{id}/test) per tenant"
    )

    # -- caches and connection pooling --------------------------------------------------------
    cache_redis_url: str | None = Field(
        default=None,
        description="Redis for caches (idempotency, rate limits, tenant cache); default REDIS_URL",
    )
    db_pooler: str = Field(
        default="none",
        pattern="^(none|transaction)$",
        description="'transaction' behind PgBouncer-style transaction pooling",
    )
    database_direct_url: str | None = Field(
        default=None,
        description="direct PostgreSQL URL (relay LISTEN, migrations) when DATABASE_URL is pooled",
    )

    # -- sign-in and request protection (security hardening) ----------------------------------
    signin_attempts_per_address_per_minute: int = Field(
        default=20,
        ge=1,
        description="attempts a minute per client address on each of /auth/token, "
        "/auth/refresh and /invitations/accept (successes count too)",
    )
    signin_failures_per_account: int = Field(
        default=10,
        ge=1,
        description="failed attempts per account (email, refresh token, invitation token) "
        "per SIGNIN_FAILURE_WINDOW_S before that account is throttled",
    )
    signin_failure_window_s: int = Field(default=900, ge=10)
    password_hash_concurrency: int = Field(
        default=4,
        ge=1,
        description="argon2 hashes/verifications at once per process (each takes "
        "PASSWORD_MEMORY_KIB of memory)",
    )
    password_hash_wait_s: float = Field(
        default=2.0, ge=0, description="wait for a free argon2 slot before answering 503"
    )
    auth_user_cache_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="how long a process trusts a user's active/operator standing it read",
    )
    oidc_link_email_domains: tuple[str, ...] = Field(
        default=(),
        description="email domains whose verified OIDC emails may link to an existing "
        "ordinary account automatically; empty = only explicit links",
    )

    # -- outbound HTTP to tenant-chosen URLs ----------------------------------------------------
    outbound_max_response_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="largest answer read from a tenant's URL"
    )
    outbound_max_redirects: int = Field(
        default=3, ge=0, le=10, description="redirect hops followed, each checked again"
    )
    outbound_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="DNS resolution and TCP/TLS connect to a tenant's URL"
    )
    outbound_timeout_s: float = Field(
        default=30.0, gt=0, description="each read or write on a tenant's URL, unless the call says"
    )

    # -- media storage and processing -----------------------------------------------------------
    storage_backend: str = Field(
        default="local",
        pattern="^(local|s3)$",
        description="`local`: files under DATA_DIR/media, uploaded and downloaded through "
        "signed URLs the API serves; `s3`: any S3-compatible store",
    )
    s3_bucket: str = "socialflow-media"
    s3_endpoint_url: str | None = Field(
        default=None, description="MinIO, moto or another S3-compatible endpoint; unset = AWS"
    )
    s3_public_endpoint_url: str | None = Field(
        default=None,
        description="the endpoint as clients reach it, for presigned URLs; default S3_ENDPOINT_URL",
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    media_upload_url_ttl_s: int = Field(default=900, ge=30, le=7 * 24 * 3600)
    media_download_url_ttl_s: int = Field(default=300, ge=10, le=7 * 24 * 3600)
    media_max_image_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    media_max_video_bytes: int = Field(default=500 * 1024 * 1024, ge=1)
    media_max_image_pixels: int = Field(
        default=100_000_000, ge=1, description="larger decoded images are refused (bombs)"
    )
    media_pending_expiry_hours: int = Field(default=24, ge=1)
    media_similar_max_distance: int = Field(
        default=8,
        ge=0,
        le=64,
        description="bits two perceptual hashes differ by, at most, "
        "for items to be listed as similar",
    )
    media_url_signing_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of the local backend's signed URLs; default: derived from "
        "JWT_SIGNING_KEY",
    )

    # -- delivery (relay and workers) -----------------------------------------------------------
    relay_max_enqueue_attempts: int = Field(
        default=5, ge=1, description="Redis command errors per event before it is dead-lettered"
    )

    @model_validator(mode="after")
    def _no_settings_the_plan_catalogue_replaced(self) -> Self:
        # Read no more: silently ignoring them would change a deployment's limits.
        replaced = [name for name in REPLACED_BY_PLAN_CATALOGUE if name in os.environ]
        if replaced:
            raise ValueError(
                f"{', '.join(replaced)}: replaced by the plan catalogue (PATCH /api/v1/plans, "
                "and per tenant …/entitlements); unset them after moving their values there"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_real_services_and_secrets(self) -> Self:
        if self.env is Environment.PRODUCTION:
            missing = [
                name
                for name, value in (
                    ("DATABASE_URL", self.database_url),
                    ("REDIS_URL", self.redis_url),
                    # Caches must not share the broker's never-evicting, fsync-always Redis.
                    ("CACHE_REDIS_URL", self.cache_redis_url),
                    ("JWT_SIGNING_KEY", self.jwt_signing_key),
                    (
                        "VAULT_MASTER_KEYS or VAULT_KMS_KEY_ID",
                        self.vault_master_keys or self.vault_kms_key_id,
                    ),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"production requires {', '.join(missing)} to be set")
        return self

    @property
    def effective_cache_redis_url(self) -> str | None:
        """Where caches live: CACHE_REDIS_URL, else the broker's Redis (fine for dev)."""
        return self.cache_redis_url or self.redis_url

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return LogFormat.JSON if self.env is Environment.PRODUCTION else LogFormat.CONSOLE

    def signing_key(self) -> str:
        """The JWT key; outside production a missing one is generated (and announced once)."""
        if self.jwt_signing_key is not None:
            return self.jwt_signing_key.get_secret_value()
        return _generated_dev_key()


@lru_cache(maxsize=1)
def _generated_dev_key() -> str:
    return secrets.token_urlsafe(48)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
