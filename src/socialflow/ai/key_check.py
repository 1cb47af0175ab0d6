"""A minimal real call through litellm, to tell a tenant whether its key works."""

from __future__ import annotations

import time

from socialflow.ai.calls import acompletion, log_failure, summarise
from socialflow.ai.credentials import ProviderCredentials
from socialflow.ai.providers import litellm_model
from socialflow.lib.outbound import Resolver
from socialflow.settings import Settings


async def try_credentials(
    credentials: ProviderCredentials,
    model: str,
    settings: Settings,
    *,
    resolver: Resolver | None = None,
) -> dict[str, object]:
    """One token of completion through the outbound guard; the outcome, never the key, and a
    failure summarised (type, status, a fixed sentence), never the provider's own text."""
    name = litellm_model(credentials.provider, model)
    started = time.perf_counter()
    try:
        await acompletion(
            credentials,
            settings,
            model=model,
            resolver=resolver,
            messages=[{"role": "user", "content": "ping"}],
            max_tokens=1,
            timeout_s=settings.ai_test_timeout_s,
        )
    except Exception as exc:
        failure = summarise(exc)
        log_failure(credentials, failure, exc)
        return {
            "ok": False,
            "model": name,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "error_type": failure.error_type,
            "status_code": failure.status_code,
            "message": failure.message,
        }
    return {
        "ok": True,
        "model": name,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }
