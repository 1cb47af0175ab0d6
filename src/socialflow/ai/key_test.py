"""A minimal real call through litellm, to tell a tenant whether its key works."""

from __future__ import annotations

import time

from socialflow.ai.credentials import ProviderCredentials
from socialflow.ai.providers import litellm_model
from socialflow.lib.redaction import redact


async def try_credentials(
    credentials: ProviderCredentials, model: str, timeout_s: float
) -> dict[str, object]:
    """One token of completion; the outcome, never the key (errors are scrubbed)."""
    import litellm  # heavy: imported on first use

    litellm.suppress_debug_info = True
    name = litellm_model(credentials.provider, model)
    started = time.perf_counter()
    try:
        await litellm.acompletion(
            model=name,
            messages=[{"role": "user", "content": "ping"}],
            max_tokens=1,
            api_key=credentials.api_key,
            api_base=credentials.base_url,
            api_version=credentials.api_version,
            timeout=timeout_s,
            num_retries=0,
        )
    except Exception as exc:
        return {
            "ok": False,
            "model": name,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "error_type": _error_type(exc),
            "status_code": getattr(exc, "status_code", None),
            "message": redact(str(exc).replace(credentials.api_key, "[redacted]"))[:500],
        }
    return {
        "ok": True,
        "model": name,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _error_type(exc: Exception) -> str:
    name = type(exc).__name__
    if "Timeout" in name:
        return "timeout"
    if "Authentication" in name or getattr(exc, "status_code", None) == 401:
        return "authentication_error"
    if "Connection" in name:
        return "connection_error"
    if "RateLimit" in name:
        return "rate_limited"
    return "provider_error"
