"""The AI providers a tenant may configure, and how litellm names their models."""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    AZURE = "azure"
    GEMINI = "gemini"
    OPENAI_COMPATIBLE = "openai_compatible"

    @property
    def needs_base_url(self) -> bool:
        return self in {Provider.AZURE, Provider.OPENAI_COMPATIBLE}

    @property
    def litellm_prefix(self) -> str:
        # vLLM, Ollama and other OpenAI-compatible servers speak OpenAI's API at their base URL.
        return "openai" if self is Provider.OPENAI_COMPATIBLE else self.value


# A cheap model per provider for the key test, when the tenant names none.
TEST_MODELS = {
    Provider.OPENAI: "gpt-4o-mini",
    Provider.ANTHROPIC: "claude-3-5-haiku-latest",
    Provider.GEMINI: "gemini-1.5-flash",
}


def litellm_model(provider: Provider, model: str) -> str:
    """`model` as litellm expects it: prefixed by the provider (an existing prefix is kept)."""
    name = model.split("/", 1)[1] if "/" in model and model.split("/", 1)[0] in _PREFIXES else model
    return f"{provider.litellm_prefix}/{name}"


_PREFIXES = {p.value for p in Provider} | {"openai"}


def provider_of(model: str) -> Provider:
    """The provider a configured model name belongs to: its prefix (`anthropic/claude-…`),
    OpenAI's when it has none."""
    prefix = model.split("/", 1)[0] if "/" in model else "openai"
    try:
        return Provider(prefix)
    except ValueError:
        return Provider.OPENAI
