"""Search over a tenant's media: relevance of each mode on a small labelled set, web search
syntax, filters on the HNSW path, degradation without a vector, the query cache and ledger,
pages, "more like this", tenants apart, and bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.lib.pagination import encode_cursor
from socialflow.media import text_search
from socialflow.search import query_vectors
from socialflow.search.services import SearchQuery
from tests.integration.ai.fake_openai import DEFAULT_CAPTION, FakeProvider
from tests.integration.captions.conftest import Studio, studio_for
from tests.integration.captions.test_pipeline import ledger, schema_of
from tests.integration.held_transactions import open_api_transactions
from tests.integration.media.support import photo
from tests.integration.tenancy_fixtures import Platform, World

Row = tuple[Any, ...]

# title, tags, caption: what each labelled item is about
LABELLED = {
    "harbour": ("Harbour at dawn", ["sea", "boats"], "Fishing boats moored in a quiet harbour"),
    "summit": ("Alpine summit", ["mountains", "snow"], "Snow-covered peaks under a blue sky"),
    "espresso": ("Morning espresso", ["coffee"], "A freshly pulled espresso on a marble counter"),
    "skyline": ("Night skyline", ["city", "lights"], "Skyscrapers glowing over the river"),
    "retriever": ("Beach retriever", ["dog", "beach"], "A golden retriever running in the surf"),
}
QUERIES = {
    "harbour": "fishing boats in the harbour",
    "summit": "snow peaks in the mountains",
    "espresso": "espresso coffee",
    "skyline": "city skyscrapers at night",
    "retriever": "golden retriever dog",
}


def caption_by_title(request: dict[str, Any]) -> dict[str, Any]:
    """The caption the fake model writes for a labelled item (found by its title)."""
    said = json.dumps(request.get("messages"))
    for title, _, caption in LABELLED.values():
        if title in said:
            return {**DEFAULT_CAPTION, "caption": caption, "description": caption}
    return dict(DEFAULT_CAPTION)


async def labelled(studio: Studio, provider: FakeProvider) -> dict[str, str]:
    """The labelled items, captioned and embedded through the real pipeline: name → id."""
    await studio.byok()
    provider.caption_for = caption_by_title
    ids = {}
    for n, (name, (title, tags, _)) in enumerate(LABELLED.items()):
        item = await studio.upload(photo(900 + 20 * n, 600), title=title, tags=tags)
        assert item["embedding_state"] == "embedded", item
        ids[name] = item["id"]
    return ids


async def search(studio: Studio, **params: Any) -> dict[str, Any]:
    answer = await studio.client.get(
        f"{studio.tenant_base}/search", params=params, headers=studio.who.headers
    )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def ids_of(found: dict[str, Any]) -> list[str]:
    return [hit["media_id"] for hit in found["items"]]


async def test_each_mode_finds_the_labelled_item_in_its_top_3(
    studio: Studio, provider: FakeProvider
) -> None:
    ids = await labelled(studio, provider)

    for mode in ("text", "semantic", "hybrid"):
        for name, query in QUERIES.items():
            found = await search(studio, q=query, mode=mode)
            assert ids[name] in ids_of(found)[:3], (mode, query, found)
            assert found["semantic"] == ("not_used" if mode == "text" else "ok")
    best = (await search(studio, q="golden retriever dog"))["items"][0]
    assert best["media_id"] == ids["retriever"]
    assert best["title"] == "Beach retriever"
    assert best["caption"] == LABELLED["retriever"][2]
    assert best["matched"] == ["text", "semantic"]
    assert best["thumbnail_url"]
    assert (await studio.download(best["thumbnail_url"]))[:4] == b"RIFF"  # the WebP thumb


async def test_web_search_syntax_phrases_exclusions_and_or(
    studio: Studio, provider: FakeProvider
) -> None:
    ids = await labelled(studio, provider)

    phrase = await search(studio, q='"golden retriever"', mode="text")
    assert ids_of(phrase) == [ids["retriever"]]
    assert ids_of(await search(studio, q='"retriever golden"', mode="text")) == []
    either = await search(studio, q="espresso or skyscrapers", mode="text")
    assert set(ids_of(either)) == {ids["espresso"], ids["skyline"]}
    without = await search(studio, q="snow or espresso -coffee", mode="text")
    assert ids_of(without) == [ids["summit"]]
    # English stemming (the tenant's language): "running" finds "running", "runs", "run".
    assert ids_of(await search(studio, q="runs", mode="text")) == [ids["retriever"]]


async def test_filters_narrow_every_mode(studio: Studio, provider: FakeProvider) -> None:
    ids = await labelled(studio, provider)

    for mode in ("text", "semantic", "hybrid"):
        found = await search(studio, q="snow or espresso or boats", mode=mode, tags="coffee")
        assert ids_of(found) == [ids["espresso"]], mode
        both = await search(studio, q="snow or espresso or boats", mode=mode, tags="snow,mountains")
        assert ids_of(both) == [ids["summit"]], mode
        assert ids_of(await search(studio, q="espresso", mode=mode, kind="video")) == []
    later = await search(studio, q="espresso", created_from="2999-01-01T00:00:00Z")
    assert later["items"] == []


@pytest.fixture
def search_settings() -> dict[str, object]:
    return {}


@pytest.mark.parametrize("search_settings", [{"search_exact_scan_below": 100}])
async def test_a_filter_on_the_hnsw_path_returns_every_match(
    studio: Studio, pg: psycopg.Connection[Row], search_settings: dict[str, object]
) -> None:
    """2,000 vectors, 25 of them tagged: the index's 1,000 nearest (pgvector's most) hold
    only some of the tagged ones, and the answer still has all 25."""
    schema = schema_of(pg, studio.tenant)
    seed = await studio.upload(photo(), title="Seed")
    pg.execute(f'SET search_path TO "{schema}", extensions')
    columns = stored_columns(pg, schema)
    pg.execute(
        f"""
        INSERT INTO media_items ({columns}) SELECT {columns} FROM (
            SELECT (jsonb_populate_record(NULL::media_items,
                to_jsonb(m) || jsonb_build_object('id', gen_random_uuid(),
                    'sha256', md5(g::text) || md5(g::text),
                    'tags', CASE WHEN g %% 80 = 0 THEN ARRAY['rare'] ELSE ARRAY['common'] END,
                    'title', 'Item ' || g))).*
            FROM media_items m, generate_series(1, 2000) g WHERE m.id = %s
        ) copied
        """,
        (seed["id"],),
    )
    pg.execute(
        "INSERT INTO media_embeddings (media_id, model, content_sha256, embedding) "
        "SELECT id, 'openai/text-embedding-3-small', sha256, "
        "(SELECT array_agg(random() - 0.5) FROM generate_series(1, 1536) d "
        " WHERE m.id IS NOT NULL)::vector "
        "FROM media_items m WHERE title LIKE 'Item %%'"
    )
    pg.execute("ANALYZE media_embeddings")
    rare = {str(r[0]) for r in pg.execute("SELECT id FROM media_items WHERE 'rare' = ANY(tags)")}
    assert len(rare) == 25
    query = [((i * 7919) % 1000) / 1000 - 0.5 for i in range(1536)]
    redis = Redis.from_url(str(studio_settings(studio).effective_cache_redis_url))
    model = query_vectors.Model("openai/text-embedding-3-small", 1536)
    await query_vectors.remember(redis, studio.tenant_id, model, "anything", query, ttl_s=60)
    await redis.aclose()
    literal = "[" + ",".join(map(str, query)) + "]"
    pg.execute("SET hnsw.ef_search = 1000")
    nearest = {
        str(r[0])
        for r in pg.execute(
            "SELECT media_id FROM media_embeddings ORDER BY embedding <=> %s::vector LIMIT 1000",
            (literal,),
        )
    }
    assert 0 < len(rare & nearest) < len(rare)  # the index alone would lose some
    pg.execute("RESET search_path")

    found = await search(studio, q="anything", mode="semantic", tags="rare", limit=50)
    assert found["semantic"] == "ok"
    assert set(ids_of(found)) == rare
    hybrid = await search(studio, q="anything", mode="hybrid", tags="rare", limit=50)
    assert set(ids_of(hybrid)) == rare


def stored_columns(pg: psycopg.Connection[Row], schema: str) -> str:
    """media_items' columns an INSERT may name (not the generated search_doc)."""
    row = pg.execute(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped "
        "AND attgenerated = ''",
        (f'"{schema}".media_items',),
    ).fetchone()
    assert row is not None
    return str(row[0])


def studio_settings(studio: Studio) -> Any:
    from socialflow.workers.actors import WorkerResources

    return WorkerResources.current_settings()


async def test_without_a_vector_search_answers_by_text_and_says_why(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    ids = await labelled(studio, provider)
    before = len(ledger(pg, studio.tenant))

    provider.set_mode("server_error")
    found = await search(studio, q="espresso coffee")
    assert found["semantic"] == "unavailable"
    assert found["semantic_reason"]
    assert "sk-" not in json.dumps(found)
    assert ids_of(found)[0] == ids["espresso"]
    assert [hit["matched"] for hit in found["items"]] == [["text"]] * len(found["items"])
    failed = ledger(pg, studio.tenant)[before:]
    assert [(r["operation"], r["outcome"]) for r in failed] == [("embed_query", "transient")]


async def test_a_tenant_without_a_key_for_its_model_is_searched_by_text(
    keyless_studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    studio, tenant = keyless_studio, keyless_studio.tenant
    item = await studio.upload(photo(), title="Lighthouse in a storm")

    for mode in ("semantic", "hybrid"):
        found = await search(studio, q="lighthouse", mode=mode)
        assert found["semantic"] == "unavailable"
        assert "No openai key" in found["semantic_reason"]
        assert ids_of(found) == [item["id"]]
    assert provider.calls == []
    assert ledger(pg, tenant) == []


async def test_a_query_is_embedded_once_counted_and_then_cached(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await labelled(studio, provider)
    calls = len(provider.calls)
    before = len(ledger(pg, studio.tenant))

    first = await search(studio, q="Snowy  Mountain peaks", mode="semantic")
    again = await search(studio, q="snowy mountain PEAKS", mode="hybrid")

    assert first["semantic"] == again["semantic"] == "ok"
    embedded = provider.calls[calls:]
    assert len(embedded) == 1
    assert embedded[0]["input"] == ["Snowy  Mountain peaks"]
    rows = ledger(pg, studio.tenant)[before:]
    assert [(r["operation"], r["outcome"]) for r in rows] == [("embed_query", "ok")]
    assert rows[0]["cost_usd"] > 0
    assert rows[0]["settled_at"] is not None


async def test_pages_follow_a_cursor_bound_to_its_query(
    studio: Studio, provider: FakeProvider
) -> None:
    await labelled(studio, provider)
    seen: list[str] = []
    params: dict[str, Any] = {"q": "a the snow coffee dog city boats", "limit": 2}
    for _ in range(5):
        page = await search(studio, **params)
        seen += ids_of(page)
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5

    first = await search(studio, q="snow", limit=1, mode="semantic")
    assert first["next_cursor"]
    other = await studio.client.get(
        f"{studio.tenant_base}/search",
        params={"q": "coffee", "cursor": first["next_cursor"], "mode": "semantic", "limit": 1},
        headers=studio.who.headers,
    )
    assert other.status_code == 422
    assert other.json()["type"].endswith("/invalid-cursor")


async def test_more_like_this_is_by_vector_and_never_the_item_itself(
    studio: Studio, provider: FakeProvider
) -> None:
    ids = await labelled(studio, provider)
    base = f"{studio.tenant_base}/media"

    like = await studio.client.get(f"{base}/{ids['summit']}/similar", headers=studio.who.headers)
    assert like.status_code == 200, like.text
    found = ids_of(like.json())
    assert ids["summit"] not in found
    assert sorted(found) == sorted(i for n, i in ids.items() if n != "summit")
    coffee_only = await studio.client.get(
        f"{base}/{ids['summit']}/similar", params={"tags": "coffee"}, headers=studio.who.headers
    )
    assert ids_of(coffee_only.json()) == [ids["espresso"]]

    missing = await studio.client.get(
        f"{base}/00000000-0000-4000-8000-000000000000/similar", headers=studio.who.headers
    )
    assert missing.status_code == 404
    unembedded = await studio.start_and_confirm(photo(640, 480))
    pending = await studio.client.get(f"{base}/{unembedded}/similar", headers=studio.who.headers)
    assert pending.status_code == 409


async def test_a_tenant_never_finds_another_tenants_items(
    platform: Platform,
    world: World,
    client: AsyncTestClient[Litestar],
    session_factory: async_sessionmaker[AsyncSession],
    studio: Studio,
    provider: FakeProvider,
    pg: psycopg.Connection[Row],
) -> None:
    ours = await labelled(studio, provider)
    theirs_studio = await studio_for(
        platform, client, session_factory, pg, provider, world.tenant_b, world.owner_b
    )
    theirs = await labelled(theirs_studio, provider)

    for mode in ("text", "semantic", "hybrid"):
        both = await asyncio.gather(
            search(studio, q="espresso coffee", mode=mode),
            search(theirs_studio, q="espresso coffee", mode=mode),
        )
        assert set(ids_of(both[0])) <= set(ours.values())
        assert set(ids_of(both[1])) <= set(theirs.values())
    elsewhere = await client.get(
        f"/api/v1/tenants/{world.tenant_b}/search", params={"q": "x"}, headers=studio.who.headers
    )
    assert elsewhere.status_code in (403, 404)
    like = await client.get(
        f"{studio.tenant_base}/media/{theirs['espresso']}/similar", headers=studio.who.headers
    )
    assert like.status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 1000}, "q"),
        ({"q": "x", "mode": "fuzzy"}, "mode"),
        ({"q": "x", "kind": "audio"}, "kind"),
        ({"q": "x", "status": "gone"}, "status"),
        ({"q": "x", "tags": ",,"}, "tags"),
        ({"q": "x", "limit": "0"}, "limit"),
        ({"q": "x", "limit": "101"}, "limit"),
        ({"q": "x", "colour": "red"}, "colour"),
        ({"q": "x", "cursor": "not-a-cursor"}, "cursor"),
        ({"q": "x", "created_from": "2026-01-01T00:00:00"}, "created_from"),
    ],
)
async def test_bad_input_is_a_clear_problem(
    studio: Studio, params: dict[str, str], field: str
) -> None:
    answer = await studio.client.get(
        f"{studio.tenant_base}/search", params=params, headers=studio.who.headers
    )
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert field in {e["field"] for e in problem["errors"]}


@pytest.mark.parametrize(
    "q",
    [
        "'; DROP TABLE media_items; --",
        "a & b | !c <-> d:* (e",
        '"unbalanced quote',
        "-",
        "or",
        "\\ % _ * ?",
        "ünïcödé 東京 🙂",
    ],
)
async def test_query_syntax_never_breaks_a_search(studio: Studio, q: str) -> None:
    for mode in ("text", "hybrid"):
        found = await search(studio, q=q, mode=mode)
        assert found["items"] == []  # a tenant with no items: an empty answer


def text_config(pg: psycopg.Connection[Row], tenant: str) -> str:
    schema = schema_of(pg, tenant)
    pg.execute(f'SET search_path TO "{schema}"')
    try:
        row = pg.execute(text_search.CURRENT_CONFIG_SQL).fetchone()
    finally:
        pg.execute("RESET search_path")
    assert row is not None
    return str(row[0])


async def test_the_text_configuration_follows_the_tenants_language(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    ids = await labelled(studio, provider)
    assert text_config(pg, studio.tenant) == "english"
    assert ids_of(await search(studio, q="runs", mode="text")) == [ids["retriever"]]

    # Japanese: PostgreSQL has no dictionary for it, so `simple` (no stemming).
    changed = await studio.client.put(
        f"{studio.tenant_base}/settings", json={"locale": "ja"}, headers=studio.owner.headers
    )
    assert changed.status_code == 200, changed.text
    await studio.run(types=("settings.updated", "ai_settings.updated"))
    assert text_config(pg, studio.tenant) == "simple"
    assert ids_of(await search(studio, q="runs", mode="text")) == []
    assert ids_of(await search(studio, q="running", mode="text")) == [ids["retriever"]]

    # The caption language, when set, is the one the texts are written in.
    await studio.ai_settings(caption_language="de")
    await studio.run(types=("settings.updated", "ai_settings.updated"))
    assert text_config(pg, studio.tenant) == "german"
    assert ids_of(await search(studio, q="espresso", mode="text")) == [ids["espresso"]]


async def test_an_uncached_query_holds_no_connection_while_the_provider_answers(
    studio: Studio, provider: FakeProvider, database_url: str
) -> None:
    ids = await labelled(studio, provider)
    held: list[int] = []

    def look(call: dict[str, object]) -> None:  # on the provider's thread, mid-call
        held.append(open_api_transactions(database_url))

    provider.on_call = look
    found = await search(studio, q="espresso coffee", mode="hybrid")

    assert held == [0]  # one call, and the request's transaction had ended before it
    assert found["semantic"] == "ok"
    assert ids_of(found)[0] == ids["espresso"]


async def test_a_list_first_answered_by_text_stays_so_page_after_page(
    studio: Studio, provider: FakeProvider
) -> None:
    await labelled(studio, provider)
    provider.set_mode("server_error")
    first = await search(studio, q="snow or coffee or boats", limit=1)
    assert first["semantic"] == "unavailable"
    assert first["next_cursor"]

    provider.set_mode("ok")
    second = await search(studio, q="snow or coffee or boats", limit=1, cursor=first["next_cursor"])
    assert second["semantic"] == "unavailable"
    assert [hit["matched"] for hit in second["items"]] == [["text"]]
    assert ids_of(second) != ids_of(first)


async def test_a_forged_cursor_and_a_query_of_exclusions_only_are_clear_answers(
    studio: Studio, provider: FakeProvider
) -> None:
    ids = await labelled(studio, provider)
    fingerprint = SearchQuery("espresso", "hybrid").fingerprint
    for offset in ("²", "99999", "-1"):
        forged = encode_cursor((fingerprint, offset, "hybrid"))
        answer = await studio.client.get(
            f"{studio.tenant_base}/search",
            params={"q": "espresso", "cursor": forged},
            headers=studio.who.headers,
        )
        assert answer.status_code == 422, (offset, answer.text)
    # "-coffee" alone would match nearly every item: it finds nothing, as text.
    assert ids_of(await search(studio, q="-coffee", mode="text")) == []
    assert ids_of(await search(studio, q="espresso -snow", mode="text")) == [ids["espresso"]]


async def test_a_long_request_id_is_kept_to_what_the_ledger_holds(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    await labelled(studio, provider)
    answer = await studio.client.get(
        f"{studio.tenant_base}/search",
        params={"q": "a query nobody asked before"},
        headers={**studio.who.headers, "X-Request-ID": "r" * 120},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["semantic"] == "ok"
    schema = schema_of(pg, studio.tenant)
    row = pg.execute(
        f"SELECT request_id FROM \"{schema}\".ai_usage WHERE operation = 'embed_query'"
    ).fetchone()
    assert row is not None
    assert len(row[0]) == 64


async def test_a_deleted_item_leaves_search_with_its_vector(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row]
) -> None:
    ids = await labelled(studio, provider)
    removed = await studio.client.delete(
        f"{studio.base}/{ids['espresso']}", headers=studio.owner.headers
    )
    assert removed.status_code == 204, removed.text

    for mode in ("text", "semantic", "hybrid"):
        assert ids["espresso"] not in ids_of(await search(studio, q="espresso coffee", mode=mode))
    schema = schema_of(pg, studio.tenant)
    left = pg.execute(
        f'SELECT count(*) FROM "{schema}".media_embeddings WHERE media_id = %s',
        (ids["espresso"],),
    ).fetchone()
    assert left == (0,)


async def test_an_exhausted_budget_makes_no_query_call_and_search_answers_by_text(
    studio: Studio, provider: FakeProvider, pg: psycopg.Connection[Row], world: World
) -> None:
    ids = await labelled(studio, provider)
    limited = await studio.client.patch(
        f"{studio.tenant_base}/entitlements",
        json={"overrides": {"ai_spend_usd_per_month": 0}},
        headers=world.admin_x.headers,
    )
    assert limited.status_code == 200, limited.text
    calls, rows = len(provider.calls), len(ledger(pg, studio.tenant))

    found = await search(studio, q="espresso coffee", mode="semantic")

    assert found["semantic"] == "unavailable"
    assert "ai spend" in found["semantic_reason"].lower()
    assert ids_of(found)[0] == ids["espresso"]
    assert len(provider.calls) == calls
    assert len(ledger(pg, studio.tenant)) == rows
