"""Fixtures: the caption pipeline's studio (a tenant whose items are captioned and embedded by
the fake OpenAI-compatible provider), with search settings a test can change."""

from __future__ import annotations

import pytest

from socialflow.settings import Settings
from tests.integration.ai.fake_openai import FakeProvider
from tests.integration.captions.conftest import (  # noqa: F401 - fixtures used by name
    app,
    keyless_studio,
    provider,
    settings_for_ai,
    studio,
    worker_settings,
)


@pytest.fixture
def search_settings() -> dict[str, object]:
    """What a test changes of the search settings (before the app starts)."""
    return {}


@pytest.fixture
def ai_settings(
    settings: Settings,
    provider: FakeProvider,  # noqa: F811 - the fixture, by name
    tmp_path_factory: pytest.TempPathFactory,
    search_settings: dict[str, object],
) -> Settings:
    return settings_for_ai(settings, provider, tmp_path_factory).model_copy(update=search_settings)
