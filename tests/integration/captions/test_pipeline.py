"""From upload to caption and vector: the real actors, litellm and the fake provider on
loopback; BYOK, the platform's key, or neither; the caption endpoints; the usage ledger."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq.broker import MessageProxy
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from socialflow.captions.prompt import PROMPT_VERSION
from socialflow.event_routing import ROUTES
from socialflow.workers.actors import apply_named_event
from socialflow.workers.middleware import EventContext
from socialflow.workers.testing import envelope_of, pending_rows
from tests.integration.ai.fake_openai import DEFAULT_CAPTION, FakeProvider, fake_embedding
from tests.integration.captions.conftest import PIPELINE_EVENTS, Studio
from tests.integration.media.support import mp4, photo
from tests.integration.tenancy_fixtures import Platform

Row = tuple[Any, ...]


def fleet_counters() -> dict[str, float]:
    """This process's AI counters (what a worker's /metrics serves), no tenant in any label."""
    wanted = {"socialflow_ai_calls_total", "socialflow_ai_cost_usd_total"}
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name in wanted
    }


def schema_of(pg: psycopg.Connection[Row], tenant: str) -> str:
    row = pg.execute("SELECT schema_name FROM shared.tenants WHERE slug = %s", (tenant,)).fetchone()
    assert row is not None
    return str(row[0])


def ledger(pg: psycopg.Connection[Row], tenant: str) -> list[dict[str, Any]]:
    cursor = pg.execute(
        f"SELECT operation, model, key_source, outcome, error_type, prompt_tokens, "
        f"completion_tokens, reserved_usd, cost_usd, media_id, settled_at "
        f'FROM "{schema_of(pg, tenant)}".ai_usage ORDER BY created_at, id'
    )
    names = [c.name for c in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def vector_of(pg: psycopg.Connection[Row], tenant: str, media_id: str) -> list[float] | None:
    row = pg.execute(
        f'SELECT embedding::text FROM "{schema_of(pg, tenant)}".media_embeddings '
        "WHERE media_id = %s",
        (media_id,),
    ).fetchone()
    if row is None:
        return None
    return [float(x) for x in str(row[0]).strip("[]").split(",")]


def events(pg: psycopg.Connection[Row], tenant: str, *types: str) -> list[dict[str, Any]]:
    rows = pg.execute(
        "SELECT event_type, payload FROM shared.outbox WHERE tenant = %s "
        "AND event_type = ANY(%s) ORDER BY id",
        (tenant, list(types)),
    ).fetchall()
    return [{"type": r[0], **r[1]} for r in rows]


def chat_calls(provider: FakeProvider) -> list[dict[str, Any]]:
    return [c for c in provider.calls if str(c["path"]).endswith("/chat/completions")]


def embedding_calls(provider: FakeProvider) -> list[dict[str, Any]]:
    return [c for c in provider.calls if str(c["path"]).endswith("/embeddings")]


async def test_an_upload_gets_a_caption_from_the_tenants_own_key_and_its_text_a_vector(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    before = fleet_counters()
    item = await studio.upload(photo(1200, 800), title="Harbour at dawn", tags=["sea"])

    caption = item["caption"]
    assert caption["state"] == "generated"
    assert caption["caption"] == DEFAULT_CAPTION["caption"]
    assert caption["alt_text"] == DEFAULT_CAPTION["alt_text"]
    assert caption["description"] == DEFAULT_CAPTION["description"]
    assert caption["hashtags"] == DEFAULT_CAPTION["hashtags"]
    assert caption["language"] == "en"
    assert caption["model"] == "openai/gpt-4o-mini"
    assert caption["prompt_version"] == PROMPT_VERSION
    assert item["embedding_state"] == "embedded"

    (call,) = chat_calls(provider)
    assert call["model"] == "gpt-4o-mini"
    assert call["has_image"] is True
    # The provider gets the image's bytes, never a URL of ours (signed or not).
    assert str(call["image_url"]).startswith("data:image/jpeg;base64,")
    assert call["response_format"]["type"] == "json_schema"
    assert call["max_tokens"] == 800  # AI_CAPTION_MAX_TOKENS: what the budget reserved for

    (embedded,) = embedding_calls(provider)
    (text,) = embedded["input"]
    # Vectors travel as base64 float32 (OpenAI's compact form), decoded to the same numbers.
    assert embedded["encoding_format"] == "base64"
    for part in ("Harbour at dawn", "A test caption", "A detailed description", "sea"):
        assert part in text
    vector = vector_of(pg, studio.tenant, item["id"])
    assert vector is not None
    assert len(vector) == 1536
    expected = fake_embedding(text, 1536)
    assert max(abs(a - b) for a, b in zip(vector, expected, strict=True)) < 1e-6

    rows = ledger(pg, studio.tenant)
    assert [(r["operation"], r["key_source"], r["outcome"]) for r in rows] == [
        ("caption", "byok", "ok"),
        ("embed", "byok", "ok"),
    ]
    for row in rows:
        assert row["settled_at"] is not None
        assert 0 < row["cost_usd"] <= row["reserved_usd"]
        assert str(row["media_id"]) == item["id"]
    assert rows[0]["prompt_tokens"] > 0
    assert rows[0]["completion_tokens"] > 0

    # The fleet's metrics count both calls and what they cost, by operation only.
    moved = {k: v - before.get(k, 0.0) for k, v in fleet_counters().items()}
    calls = "socialflow_ai_calls_total[('operation', '{}'), ('outcome', 'ok')]"
    cost = "socialflow_ai_cost_usd_total[('key_source', 'byok'), ('operation', '{}')]"
    assert moved[calls.format("caption")] == 1
    assert moved[calls.format("embed")] == 1
    assert moved[cost.format("caption")] == pytest.approx(float(rows[0]["cost_usd"]))
    assert moved[cost.format("embed")] == pytest.approx(float(rows[1]["cost_usd"]))

    captioned = events(pg, studio.tenant, "media.captioned", "media.embedded")
    assert [(e["type"], e["state"]) for e in captioned] == [
        ("media.captioned", "generated"),
        ("media.embedded", "embedded"),
    ]


async def test_a_video_is_captioned_from_its_poster(
    studio: Studio, provider: FakeProvider, tmp_path: Path
) -> None:
    await studio.byok()
    clip = mp4(tmp_path / "clip.mp4")
    item = await studio.upload(clip, filename="clip.mp4", content_type="video/mp4")
    assert item["kind"] == "video"
    assert item["caption"]["state"] == "generated"
    assert chat_calls(provider)[0]["has_image"] is True


async def test_without_a_tenant_key_the_platforms_key_serves_a_plan_that_includes_it(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    item = await studio.upload(photo())
    assert item["caption"]["state"] == "generated"
    assert {r["key_source"] for r in ledger(pg, studio.tenant)} == {"platform"}
    assert len(chat_calls(provider)) == 1


async def test_without_a_tenant_key_or_a_plan_with_the_platforms_the_caption_is_not_configured(
    keyless_studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    studio, tenant = keyless_studio, keyless_studio.tenant

    item = await studio.upload(photo(), title="A title to embed")

    assert item["caption"]["state"] == "not_configured"
    assert "No openai key" in item["caption"]["reason"]
    assert item["embedding_state"] == "not_configured"
    assert provider.calls == []
    assert ledger(pg, tenant) == []


async def test_the_tenants_voice_language_and_hashtag_count_shape_the_prompt(
    studio: Studio, provider: FakeProvider
) -> None:
    await studio.byok()
    await studio.ai_settings(
        brand_voice="Playful, no emojis", caption_language="de", hashtag_count=1
    )
    provider.caption_for = lambda _: {**DEFAULT_CAPTION, "language": "de"}

    item = await studio.upload(photo())

    (call,) = chat_calls(provider)
    prompt = str(call["messages"])
    assert "Playful, no emojis" in prompt
    assert "de" in prompt
    assert "exactly 1 relevant hashtags" in prompt or "exactly 1 " in prompt
    assert item["caption"]["hashtags"] == ["#test"]  # trimmed to the count asked
    assert item["caption"]["language"] == "de"


async def test_a_new_caption_is_asked_for_with_instructions_and_lands_through_the_outbox(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    item = await studio.upload(photo())
    url = f"{studio.base}/{item['id']}/captions"
    provider.caption_for = lambda _: {**DEFAULT_CAPTION, "caption": "Second take"}

    editor_picks = await studio.client.post(
        url, json={"model": "openai/gpt-4o"}, headers=studio.who.headers
    )
    assert editor_picks.status_code == 403  # the model (its price) is the admins' choice
    asked = await studio.client.post(
        url,
        json={"prompt": "Mention the sunset.", "model": "openai/gpt-4o"},
        headers=studio.owner.headers,
    )

    assert asked.status_code == 202, asked.text
    assert asked.json()["state"] == "pending"
    assert (await studio.item(item["id"]))["caption"]["state"] == "pending"
    await studio.run()
    after = await studio.item(item["id"])
    assert after["caption"]["caption"] == "Second take"
    assert after["caption"]["model"] == "openai/gpt-4o"
    last = chat_calls(provider)[-1]
    assert last["model"] == "gpt-4o"
    assert "Mention the sunset." in str(last["messages"])
    requested = events(pg, studio.tenant, "media.caption_requested")
    assert requested[0]["prompt"] == "Mention the sunset."


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"model": "openai/not-a-model-at-all"}, 422, "validation-error"),
        ({"model": "openai/text-embedding-3-small"}, 422, "validation-error"),
        ({"model": "openai/gpt-3.5-turbo"}, 422, "validation-error"),  # cannot see images
        ({"model": "bad model name!"}, 400, None),
        ({"prompt": "x" * 2001}, 400, None),
        ({"temperature": 2}, 400, None),
    ],
)
async def test_a_caption_request_with_bad_input_changes_nothing(
    studio: Studio,
    pg: psycopg.Connection[Row],
    body: dict[str, Any],
    status: int,
    kind: str | None,
) -> None:
    await studio.byok()
    item = await studio.upload(photo())
    before = len(events(pg, studio.tenant, "media.caption_requested"))

    answer = await studio.client.post(
        f"{studio.base}/{item['id']}/captions", json=body, headers=studio.owner.headers
    )

    assert answer.status_code == status, answer.text
    if kind is not None:
        assert answer.json()["type"].endswith(kind)
    assert len(events(pg, studio.tenant, "media.caption_requested")) == before
    assert (await studio.item(item["id"]))["caption"]["state"] == "generated"


async def test_captions_are_asked_for_only_by_editors_and_of_processed_items(
    studio: Studio, platform: Platform
) -> None:
    media_id = await studio.start_and_confirm()  # not processed yet
    url = f"{studio.base}/{media_id}/captions"

    not_ready = await studio.client.post(url, json={}, headers=studio.who.headers)
    assert not_ready.status_code == 409
    assert not_ready.json()["type"].endswith("media-not-ready")

    viewer = await platform.member(studio.tenant, "viewer")
    await studio.run()
    refused = await studio.client.post(url, json={}, headers=viewer.headers)
    assert refused.status_code == 403
    missing = await studio.client.post(
        f"{studio.base}/{uuid.uuid4()}/captions", json={}, headers=studio.who.headers
    )
    assert missing.status_code == 404


async def test_an_edited_caption_is_marked_edited_re_embedded_and_outlives_a_late_generation(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    item = await studio.upload(photo())
    first_vector = vector_of(pg, studio.tenant, item["id"])
    # A regeneration is asked for, then an editor writes the caption before it runs.
    asked = await studio.client.post(
        f"{studio.base}/{item['id']}/captions", json={}, headers=studio.who.headers
    )
    assert asked.status_code == 202

    edited = await studio.client.patch(
        f"{studio.base}/{item['id']}/caption",
        json={"caption": "  Written by hand  ", "hashtags": ["#mine", "#mine", "#ours"]},
        headers=studio.who.headers,
    )

    assert edited.status_code == 200, edited.text
    assert edited.json()["state"] == "edited"
    assert edited.json()["caption"] == "Written by hand"
    assert edited.json()["hashtags"] == ["#mine", "#ours"]
    calls_before = len(chat_calls(provider))
    await studio.run()
    after = await studio.item(item["id"])
    assert after["caption"]["state"] == "edited"
    assert after["caption"]["caption"] == "Written by hand"
    assert len(chat_calls(provider)) == calls_before  # the late request paid for nothing
    assert vector_of(pg, studio.tenant, item["id"]) != first_vector  # the edit re-embedded
    assert "Written by hand" in embedding_calls(provider)[-1]["input"][0]
    assert events(pg, studio.tenant, "media.caption_edited")[0]["fields"] == [
        "caption",
        "hashtags",
    ]


@pytest.mark.parametrize(
    "body", [{"hashtags": ["no-hash"]}, {"caption": "x" * 2201}, {"mood": "happy"}]
)
async def test_a_caption_edit_with_bad_input_changes_nothing(
    studio: Studio, body: dict[str, Any]
) -> None:
    await studio.byok()
    item = await studio.upload(photo())

    answer = await studio.client.patch(
        f"{studio.base}/{item['id']}/caption", json=body, headers=studio.who.headers
    )

    assert answer.status_code == 400, answer.text
    assert (await studio.item(item["id"]))["caption"]["state"] == "generated"


async def test_a_title_change_re_embeds_and_an_unchanged_text_costs_no_call(
    studio: Studio, provider: FakeProvider
) -> None:
    await studio.byok()
    item = await studio.upload(photo(), title="First")
    url = f"{studio.base}/{item['id']}"

    await studio.client.patch(url, json={"title": "Second"}, headers=studio.who.headers)
    await studio.run()
    assert "Second" in embedding_calls(provider)[-1]["input"][0]
    calls = len(embedding_calls(provider))
    await studio.client.patch(
        url, json={"focal_point": {"x": 0.2, "y": 0.3}}, headers=studio.who.headers
    )
    await studio.run()
    assert len(embedding_calls(provider)) == calls


async def test_ai_usage_totals_the_months_calls_by_operation_model_and_key_source(
    studio: Studio, pg: psycopg.Connection[Row]
) -> None:
    await studio.byok()
    await studio.upload(photo(800, 600))
    await studio.upload(photo(640, 480))
    url = f"{studio.tenant_base}/ai/usage"

    usage = await studio.client.get(url, headers=studio.owner.headers)

    assert usage.status_code == 200, usage.text
    body = usage.json()
    lines = {(t["operation"], t["model"], t["key_source"]): t for t in body["totals"]}
    assert set(lines) == {
        ("caption", "openai/gpt-4o-mini", "byok"),
        ("embed", "openai/text-embedding-3-small", "byok"),
    }
    assert lines["caption", "openai/gpt-4o-mini", "byok"]["calls"] == 2
    assert body["calls"] == 4
    spent = sum(float(r["cost_usd"]) for r in ledger(pg, studio.tenant))
    assert body["cost_usd"] == pytest.approx(spent)
    assert body["budget"]["limit_usd"] == 200.0  # the "pro" plan's
    assert body["budget"]["spent_usd"] == pytest.approx(spent)
    assert body["budget"]["exceeded"] is False
    month = body["month"]

    same = await studio.client.get(url, params={"month": month}, headers=studio.owner.headers)
    assert same.json()["calls"] == 4
    past = await studio.client.get(url, params={"month": "2020-01"}, headers=studio.owner.headers)
    assert past.status_code == 200
    assert past.json()["calls"] == 0
    assert past.json()["totals"] == []
    assert past.json()["period_start"].startswith("2020-01")
    for bad in ("2020-13", "january", "2020-1", "'; DROP TABLE x", "0000-01", "9999-12"):
        wrong = await studio.client.get(url, params={"month": bad}, headers=studio.owner.headers)
        assert wrong.status_code == 422, bad
    editor = await studio.client.get(url, headers=studio.who.headers)
    assert editor.status_code == 403


async def test_a_traced_caption_shows_the_upload_request_the_actors_and_the_provider_calls(
    spans: InMemorySpanExporter, studio: Studio, provider: FakeProvider
) -> None:
    await studio.byok()
    media_id = await studio.start_and_confirm(photo(640, 480))
    # The worker: each event's actors run inside the middleware a worker thread runs.
    middleware = EventContext()
    for _ in range(10):
        rows = await pending_rows(studio.factory, studio.tenant_id, *PIPELINE_EVENTS)
        ran = 0
        for row in rows:
            for route in ROUTES.get(row.event_type, ()):
                message = MessageProxy(
                    dramatiq.Message(
                        queue_name=route.queue,
                        actor_name=route.actor,
                        args=(envelope_of(row),),
                        kwargs={},
                        options={"traceparent": (row.headers or {}).get("traceparent")},
                    )
                )
                middleware.before_process_message(dramatiq.get_broker(), message)
                try:
                    ran += await apply_named_event(route.actor, envelope_of(row), studio.factory)
                finally:
                    middleware.after_process_message(dramatiq.get_broker(), message)
        if not ran:
            break
    assert (await studio.item(media_id))["caption"]["state"] == "generated"

    finished = spans.get_finished_spans()
    [confirm] = [s for s in finished if s.kind is SpanKind.SERVER and "confirm" in s.name]
    assert confirm.context is not None
    in_trace = [s for s in finished if s.context and s.context.trace_id == confirm.context.trace_id]
    actors = {s.name for s in in_trace if s.kind is SpanKind.CONSUMER}
    assert {"caption_media process", "embed_media process"} <= actors
    calls = [
        s
        for s in in_trace
        if s.kind is SpanKind.CLIENT
        and s.attributes
        and s.attributes.get("url.full") == provider.origin
    ]
    assert len(calls) == 2  # the caption's completion and the embedding, in the upload's trace
    by_id = {s.context.span_id: s for s in in_trace if s.context}
    for call in calls:  # each under an actor's span
        above = call
        while above.parent is not None and above.kind is not SpanKind.CONSUMER:
            above = by_id[above.parent.span_id]
        assert above.kind is SpanKind.CONSUMER, call.name
