"""AI: BYOK provider keys, model settings, credentials for calls (the calls come later)."""

from socialflow.ai.credentials import ProviderCredentials, credentials_for

__all__ = ["ProviderCredentials", "credentials_for"]
