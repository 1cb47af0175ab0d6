"""AI: BYOK provider keys, model settings, credentials, and calls through the outbound guard."""

from socialflow.ai.calls import acompletion, summarise
from socialflow.ai.credentials import ProviderCredentials, credentials_for

__all__ = ["ProviderCredentials", "acompletion", "credentials_for", "summarise"]
