"""What each kind of provider failure does to an item, to the key, to the budget and to the
retries; the tenant's rate limit and budget; a new embedding model; nothing secret logged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from socialflow.ai import ledger as ai_ledger
from socialflow.db.session import unit_of_work
from socialflow.plans.quota import TenantKey
from socialflow.workers.actors import WorkerResources
from socialflow.workers.testing import pending_envelopes
from tests.integration.ai.fake_openai import FakeProvider
from tests.integration.captions.conftest import Studio
from tests.integration.captions.test_pipeline import (
    chat_calls,
    embedding_calls,
    events,
    ledger,
    schema_of,
    vector_of,
)
from tests.integration.media.support import photo
from tests.integration.tenancy_fixtures import Platform, World
from tests.log_capture import ProcessOutput, process_output_fixture  # noqa: F401

Row = tuple[Any, ...]
WRONG_KEY = "sk-wrong-0123456789abcdefghijklmnop"


@pytest.fixture
def worker_with() -> Iterator[Any]:
    """Run the actors with some settings changed (the API keeps the test's)."""

    def change(**updates: Any) -> None:
        assert WorkerResources._settings is not None
        WorkerResources.configure(WorkerResources._settings.model_copy(update=updates))
        WorkerResources._resources = None

    return change


def outcomes(pg: psycopg.Connection[Row], tenant: str, operation: str) -> list[str]:
    return [r["outcome"] for r in ledger(pg, tenant) if r["operation"] == operation]


def assert_nothing_reserved(pg: psycopg.Connection[Row], tenant: str) -> None:
    assert [r for r in ledger(pg, tenant) if r["settled_at"] is None] == []


@pytest.mark.parametrize("mode", ["unauthorized", "forbidden"])
async def test_a_refused_key_is_marked_invalid_once_and_not_retried(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row], mode: str
) -> None:
    await studio.byok()
    provider.set_mode(mode, times=1)
    retries: list[int] = []

    item = await studio.upload(photo(), title="Something to embed")
    await studio.run(retries)

    assert item["caption"]["state"] == "key_invalid"
    assert "refused the tenant's key" in item["caption"]["reason"]
    assert retries == []
    assert len(chat_calls(provider)) == 1
    assert embedding_calls(provider) == []  # the key is invalid: the embedding is not tried
    assert item["embedding_state"] == "key_invalid"
    keys = await studio.client.get(f"{studio.tenant_base}/ai/keys", headers=studio.owner.headers)
    (key,) = keys.json()["items"]
    assert key["status"] == "invalid"
    assert [e["type"] for e in events(pg, studio.tenant, "ai_key.invalid")] == ["ai_key.invalid"]
    assert outcomes(pg, studio.tenant, "caption") == ["key_refused"]
    assert_nothing_reserved(pg, studio.tenant)
    # A new key makes it usable again: the next caption is made.
    await studio.byok()
    await studio.client.post(
        f"{studio.base}/{item['id']}/captions", json={}, headers=studio.who.headers
    )
    await studio.run()
    assert (await studio.item(item["id"]))["caption"]["state"] == "generated"


async def test_a_rate_limited_call_comes_back_no_sooner_than_retry_after(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    provider.retry_after = "7"
    provider.set_mode("rate_limited", times=1)
    retries: list[int] = []

    media_id = await studio.start_and_confirm()
    await studio.run(retries)

    assert len(retries) == 1
    assert 7_000 <= retries[0] <= 7_500  # Retry-After, plus jitter
    assert (await studio.item(media_id))["caption"]["state"] == "generated"
    assert outcomes(pg, studio.tenant, "caption") == ["transient", "ok"]
    assert_nothing_reserved(pg, studio.tenant)


async def test_server_errors_back_off_and_a_timeout_is_retried(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row], worker_with: Any
) -> None:
    await studio.byok()
    worker_with(ai_call_timeout_s=0.5)
    provider.slow_s = 1.5
    provider.set_mode("server_error", times=2)
    retries: list[int] = []

    media_id = await studio.start_and_confirm()
    await studio.run(retries)
    provider.set_mode("slow", times=1)
    await studio.client.post(
        f"{studio.base}/{media_id}/captions", json={}, headers=studio.who.headers
    )
    await studio.run(retries)

    assert len(retries) == 3
    assert 1_000 <= retries[0] < 1_600  # exponential: 1 s, then 2 s, with jitter
    assert 2_000 <= retries[1] < 2_600
    assert (await studio.item(media_id))["caption"]["state"] == "generated"
    assert outcomes(pg, studio.tenant, "caption") == [
        "transient",
        "transient",
        "ok",
        "transient",
        "ok",
    ]
    errors = [r["error_type"] for r in ledger(pg, studio.tenant) if r["outcome"] == "transient"]
    assert errors == ["provider_error", "provider_error", "timeout"]


async def test_an_item_fails_after_the_attempts_allowed_and_nothing_stays_reserved(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row], worker_with: Any
) -> None:
    await studio.byok()
    worker_with(ai_max_attempts=3)
    provider.set_mode("server_error")

    media_id = await studio.start_and_confirm()
    await studio.run()

    caption = (await studio.item(media_id))["caption"]
    assert caption["state"] == "failed"
    assert "after 3 attempts" in caption["reason"]
    assert outcomes(pg, studio.tenant, "caption") == ["transient"] * 3
    assert all(r["cost_usd"] == 0 for r in ledger(pg, studio.tenant))
    assert_nothing_reserved(pg, studio.tenant)


async def test_a_malformed_answer_is_asked_again_once_then_the_item_fails(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    provider.set_mode("malformed", times=1)
    once = await studio.upload(photo(800, 600))
    assert once["caption"]["state"] == "generated"
    assert outcomes(pg, studio.tenant, "caption") == ["malformed", "ok"]

    provider.set_mode("malformed")
    twice = await studio.upload(photo(640, 480))

    assert twice["caption"]["state"] == "failed"
    assert "twice" in twice["caption"]["reason"]
    assert outcomes(pg, studio.tenant, "caption")[2:] == ["malformed", "malformed"]
    assert_nothing_reserved(pg, studio.tenant)


async def test_a_content_refusal_is_final_with_the_providers_reason(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    provider.set_mode("refusal")
    retries: list[int] = []

    media_id = await studio.start_and_confirm()
    await studio.run(retries)

    caption = (await studio.item(media_id))["caption"]
    assert caption["state"] == "refused"
    assert "content_policy_violation" in caption["reason"]
    assert retries == []
    assert len(chat_calls(provider)) == 1
    assert outcomes(pg, studio.tenant, "caption") == ["refused"]


async def test_an_answer_without_usage_is_charged_what_was_reserved(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    provider.set_mode("no_usage", times=1)

    item = await studio.upload(photo())

    assert item["caption"]["state"] == "generated"
    caption = next(r for r in ledger(pg, studio.tenant) if r["operation"] == "caption")
    assert caption["error_type"] == "usage_missing"
    assert caption["cost_usd"] == caption["reserved_usd"] > 0
    assert_nothing_reserved(pg, studio.tenant)


async def test_an_embedding_of_the_wrong_length_fails_the_item_and_stores_nothing(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    provider.wrong_dimension = 12

    item = await studio.upload(photo())

    assert item["caption"]["state"] == "generated"
    assert item["embedding_state"] == "failed"
    assert vector_of(pg, studio.tenant, item["id"]) is None
    reason = events(pg, studio.tenant, "media.embedded")[0]["reason"]
    assert "1536" in reason
    assert_nothing_reserved(pg, studio.tenant)


async def test_an_unknown_or_blind_caption_model_gives_the_item_a_clear_failure(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    schema = schema_of(pg, studio.tenant)
    pg.execute(f"UPDATE \"{schema}\".ai_settings SET caption_model = 'openai/gpt-9-unknown'")
    unknown = await studio.upload(photo(800, 600))
    pg.execute(f"UPDATE \"{schema}\".ai_settings SET caption_model = 'openai/gpt-3.5-turbo'")
    blind = await studio.upload(photo(640, 480))

    assert unknown["caption"]["state"] == "failed"
    assert "not supported" in unknown["caption"]["reason"]
    assert blind["caption"]["state"] == "failed"
    assert "cannot see images" in blind["caption"]["reason"]
    assert chat_calls(provider) == []
    assert outcomes(pg, studio.tenant, "caption") == []


async def test_an_exhausted_budget_makes_no_call_and_says_so_once_a_month(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row], world: World
) -> None:
    await studio.byok()
    limited = await studio.client.patch(
        f"{studio.tenant_base}/entitlements",
        json={"overrides": {"ai_spend_usd_per_month": 0}},
        headers=world.admin_x.headers,
    )
    assert limited.status_code == 200, limited.text

    first = await studio.upload(photo(800, 600), title="One")
    second = await studio.upload(photo(640, 480), title="Two")

    for item in (first, second):
        assert item["caption"]["state"] == "budget_exceeded"
        assert item["embedding_state"] == "budget_exceeded"
    assert provider.calls == []
    assert ledger(pg, studio.tenant) == []
    assert len(events(pg, studio.tenant, "ai.budget.exceeded")) == 1
    usage = await studio.client.get(f"{studio.tenant_base}/ai/usage", headers=studio.owner.headers)
    assert usage.json()["budget"]["exceeded"] is True


async def test_the_tenants_rate_limit_defers_the_call_instead_of_failing_it(
    studio: Studio, provider: FakeProvider, worker_with: Any
) -> None:
    await studio.byok()
    worker_with(ai_rate_limits_per_minute={"caption": 1, "embed": 100})
    first = await studio.upload(photo(800, 600))
    assert first["caption"]["state"] == "generated"
    retries: list[int] = []

    second = await studio.start_and_confirm(photo(640, 480))
    with pytest.raises(RuntimeError, match="still being retried"):
        await studio.run(retries, max_rounds=3)

    assert len(retries) >= 2
    # At most the window's full minute plus the jitter (ai.rate.wait_ms: up to 2 s).
    assert all(0 < delay <= 62_000 for delay in retries)
    assert len(chat_calls(provider)) == 1  # no call over the limit
    assert (await studio.item(second))["caption"]["state"] == "pending"


async def test_a_new_embedding_model_retypes_the_column_and_re_embeds_every_item(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    items = [await studio.upload(photo(800 - 40 * n, 600)) for n in range(3)]
    schema = schema_of(pg, studio.tenant)

    changed = await studio.ai_settings(embedding_model="openai/text-embedding-3-large")

    assert changed["embedding_dimension"] == 3072
    assert changed["reembedding"] == {"done": 0, "total": 3, "running": True}
    column = pg.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = 'embedding'",
        (f'"{schema}".media_embeddings',),
    ).fetchone()
    assert column is not None
    assert column[0].removeprefix("extensions.") == "vector(3072)"
    assert all(vector_of(pg, studio.tenant, i["id"]) is None for i in items)  # no stale vector
    before = len(embedding_calls(provider))

    await studio.run()

    calls = embedding_calls(provider)[before:]
    assert len(calls) == 1  # one batch
    assert calls[0]["model"] == "text-embedding-3-large"
    assert len(calls[0]["input"]) == 3
    for item in items:
        vector = vector_of(pg, studio.tenant, item["id"])
        assert vector is not None
        assert len(vector) == 3072
        assert (await studio.item(item["id"]))["embedding_state"] == "embedded"
    progress = await studio.client.get(
        f"{studio.tenant_base}/ai/settings", headers=studio.owner.headers
    )
    assert progress.json()["reembedding"] == {"done": 3, "total": 3, "running": False}
    models = pg.execute(f'SELECT DISTINCT model FROM "{schema}".media_embeddings').fetchall()
    assert models == [("openai/text-embedding-3-large",)]


async def test_no_key_data_url_or_provider_text_reaches_a_log_line(
    studio: Studio,
    provider: FakeProvider,
    process_output: ProcessOutput,
    pg: psycopg.Connection[Row],
) -> None:
    await studio.byok(WRONG_KEY)
    refused = await studio.upload(photo(800, 600))
    assert refused["caption"]["state"] == "key_invalid"
    await studio.byok()
    provider.set_mode("rate_limited", times=1)
    await studio.client.post(
        f"{studio.base}/{refused['id']}/captions", json={}, headers=studio.who.headers
    )
    await studio.run()

    process_output.assert_logged("ai.call_failed", error_type="authentication_error")
    process_output.assert_logged("ai.call_failed", error_type="rate_limited")
    logged = process_output.everything()
    for secret in (WRONG_KEY, WRONG_KEY[-12:], "data:image", "base64,", "Incorrect API key"):
        assert secret not in logged
    from tests.integration.ai.fake_openai import GOOD_KEY

    assert GOOD_KEY not in logged
    problems = " ".join(str(e) for e in events(pg, studio.tenant, "media.captioned"))
    assert WRONG_KEY not in problems
    assert "Incorrect API key" not in problems


async def test_two_deliveries_of_one_event_at_once_caption_once(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row], platform: Platform
) -> None:
    import asyncio

    from socialflow.workers.actors import apply_named_event
    from socialflow.workers.testing import pending_envelopes

    await studio.byok()
    provider.latency_s = 0.3
    media_id = await studio.start_and_confirm()
    await studio.run(types=("media.uploaded",))
    (envelope,) = await pending_envelopes(studio.factory, studio.tenant_id, "media.processed")

    done = await asyncio.gather(
        apply_named_event("caption_media", envelope, studio.factory),
        apply_named_event("caption_media", envelope, studio.factory),
    )

    assert sorted(done) == [False, True]
    assert len(events(pg, studio.tenant, "media.captioned")) == 1
    assert (await studio.item(media_id))["caption"]["state"] == "generated"
    # Both may have called (neither holds a lock during the call), but both settled.
    assert_nothing_reserved(pg, studio.tenant)


async def test_a_redelivery_waits_for_what_its_lost_delivery_still_holds_instead_of_failing(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row], world: World
) -> None:
    await studio.byok()
    budget = Decimal("0.01")
    limited = await studio.client.patch(
        f"{studio.tenant_base}/entitlements",
        json={"overrides": {"ai_spend_usd_per_month": float(budget)}},
        headers=world.admin_x.headers,
    )
    assert limited.status_code == 200, limited.text
    media_id = await studio.start_and_confirm()
    await studio.run(types=("media.uploaded",))
    (processed,) = await pending_envelopes(studio.factory, studio.tenant_id, "media.processed")
    # A delivery of it that died mid-call: its reservation (the whole budget) made just now.
    tenant = TenantKey(studio.tenant_id, studio.tenant, schema_of(pg, studio.tenant))
    async with unit_of_work(studio.factory) as session:
        allowance = await ai_ledger.allowance(session, tenant)
    await ai_ledger.reserve_call(
        studio.factory.kw["bind"],
        tenant,
        allowance,
        operation="caption",
        model="openai/gpt-4o-mini",
        key_source="byok",
        amount=budget,
        event_id=uuid.UUID(str(processed["event_id"])),
    )
    retries: list[int] = []

    with pytest.raises(RuntimeError, match="still being retried"):
        await studio.run(retries, types=("media.processed",), max_rounds=2)

    # Refused only for what the event itself holds: it comes back once that can be released
    # (AI_CALL_TIMEOUT_S 5 + 30 s), rather than failing the item for want of budget.
    assert (await studio.item(media_id))["caption"]["state"] == "pending"
    assert retries
    assert min(retries) >= 35_000
    assert chat_calls(provider) == []
    schema = schema_of(pg, studio.tenant)
    pg.execute(
        f"UPDATE \"{schema}\".ai_usage SET created_at = created_at - interval '2 minutes' "
        "WHERE outcome = 'reserved'"
    )
    await studio.run(types=("media.processed", "media.captioned"))
    assert (await studio.item(media_id))["caption"]["state"] == "generated"
    assert outcomes(pg, studio.tenant, "caption") == ["abandoned", "ok"]
