"""What a model costs and can do, from litellm's model cost map (bundled: no fetch at run time).

A call's *upper bound* is what the budget reserves before it is made: every prompt token it
could be billed for (text bytes bound BPE tokens; an image at most IMAGE_TOKENS_BOUND) and the
whole completion it may write (`max_tokens`). What the provider reports settles it after.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache

MICRO_DOLLAR = Decimal("0.000001")
# The most tokens one image of at most 640 px a side is billed as by the vision models we know
# (OpenAI high detail: 765; Anthropic: ~550; Gemini: 258), with room to spare.
IMAGE_TOKENS_BOUND = 1_600


@dataclass(frozen=True)
class ModelFacts:
    name: str  # as litellm names it: provider/model
    known: bool  # in the cost map; an unknown model costs nothing that we could know
    input_cost: Decimal  # USD per prompt token
    output_cost: Decimal  # USD per completion token
    mode: str | None  # chat, embedding …
    supports_vision: bool | None
    vector_size: int | None  # an embedding model's native dimension

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """What these tokens cost (a call's upper bound, given the most it may use)."""
        return _dollars(prompt_tokens * self.input_cost + completion_tokens * self.output_cost)


def _dollars(value: Decimal) -> Decimal:
    # Rounded up: a fraction of a micro-dollar is never lost from the budget.
    return value.quantize(MICRO_DOLLAR, rounding=ROUND_CEILING)


@lru_cache(maxsize=1024)
def model_facts(name: str) -> ModelFacts:
    """Facts of `name` (litellm's provider/model); `known` False when the map lacks it."""
    import litellm

    try:
        info = litellm.get_model_info(name)
    except Exception:  # litellm raises its own errors (and plain ones) for an unmapped model
        return ModelFacts(name, False, Decimal(0), Decimal(0), None, None, None)
    input_cost = Decimal(str(info.get("input_cost_per_token") or 0))
    output_cost = Decimal(str(info.get("output_cost_per_token") or 0))
    # litellm answers some unmapped names by pattern (any "openai/gpt-…") with an empty entry:
    # a model neither priced nor given a mode is not one the map knows.
    known = info.get("mode") is not None or bool(input_cost or output_cost)
    return ModelFacts(
        name,
        known,
        input_cost,
        output_cost,
        info.get("mode"),
        info.get("supports_vision"),
        info.get("output_vector_size"),
    )


def unusable_model(model: str, mode: str, *, vision: bool = False) -> str | None:
    """Why `model` (as a tenant names it) cannot serve `mode` (chat, embedding), with images
    when `vision`; None when it can. An unknown model is refused unless the tenant's own
    OpenAI-compatible server serves it (whose price nobody knows: it costs 0 here)."""
    from socialflow.ai.providers import Provider, litellm_model, provider_of

    provider = provider_of(model)
    facts = model_facts(litellm_model(provider, model))
    if not facts.known:
        if provider is Provider.OPENAI_COMPATIBLE:
            return None
        return f"The model {model!r} is not supported: pick a known model."
    if facts.mode is not None and facts.mode != mode:
        return f"The model {model!r} is not a{'n' if mode[0] in 'aeiou' else ''} {mode} model."
    if vision and facts.supports_vision is not True:  # the map marks the models that can
        return f"The model {model!r} cannot see images: pick a vision model."
    return None


def text_tokens_bound(text: str) -> int:
    """At most as many tokens as UTF-8 bytes (a BPE token covers at least one byte)."""
    return len(text.encode())
