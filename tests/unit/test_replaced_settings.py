"""Settings the plan catalogue replaced are refused, not silently ignored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from socialflow.settings import Settings


@pytest.mark.parametrize("name", ["RATE_LIMIT_TENANT_PER_MINUTE", "AI_PLATFORM_KEY_PLANS", "PLANS"])
def test_a_setting_the_catalogue_replaced_stops_the_process_with_what_to_do(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, '{"pro": 4}')
    with pytest.raises(ValidationError, match=f"{name}: replaced by the plan catalogue"):
        Settings(_env_file=None)  # type: ignore[call-arg]
