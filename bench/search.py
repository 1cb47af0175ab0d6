"""Search benchmark: one tenant's 100,000 items searched by text, by vector and by both.

Starts `socialflow api` (1 process) on durable embedded servers (or DATABASE_URL / REDIS_URL),
provisions a tenant through the API, uploads one photo (processed by a relay and a worker,
stopped once it is `ready`) and makes the tenant's library out of copies of it: `--items` live
`ready` items with generated titles, captions, descriptions and tags, and a 1,536-dimension
vector each, loaded with the HNSW index absent, then the index built as the product builds it.

The data is shaped like a real library, not uniform noise (on which HNSW recall means nothing):
500 topics in 50 themes, topic sizes Zipf-distributed; a vector is a direction all vectors share
(real embeddings are anisotropic), its theme's, its topic's, a position along its topic's 8
facets and some noise of its own (more for some items than others), and for a quarter of the
items a lean towards a second topic; so items of one theme are closer than strangers, topics
are not islands, and the neighbours of a query depend on where in its topic it points (mean
cosines: ~0.15 between strangers, ~0.3 within a theme, ~0.55 within a topic). Text comes from
the same structure: each theme and topic has its own invented words, each facet one word (a
second topic adds its own), mixed with common caption words (Zipf) and fillers. Two tags are
carried across topics, independently: `campaign-x` by 1 % of the items, the selective filter
(fewer vectors than SEARCH_EXACT_SCAN_BELOW: the API ranks them by an exact scan), and
`campaign-y` by 10 %, the broad one (at 100,000 items, more: the API takes the HNSW index's 1,000
nearest, filters them, and ranks every match exactly if fewer than a page is left).

Each of `--queries` queries has 2-4 words of one item's topic (that item holds them all) and a
vector near that item; the vectors are put in the API's query-vector cache beforehand
(search.query_vectors.remember), so no provider is called and none is measured. One client
thread sends them through HTTP keep-alive, limit 20, in five modes: semantic, hybrid, text, and
semantic with `tags=campaign-x` (filtered) or `tags=campaign-y` (broad); a warm-up pass, then a
timed pass, modes interleaved per query.

- semantic_p95_ms, hybrid_p95_ms: the client's time per request (send to body read), p95;
- recall_at_20: the semantic answers' share of the 20 nearest live items by an exact scan in SQL
  (the distance `+ 0`: no index), the mean over the queries;
- filtered_recall_at_20: the same with `tags=campaign-x`, against an exact scan of the tagged.

Also reported: text and both filters' latencies, the broad filter's recall@20 (against an exact
scan of the items tagged `campaign-y`) and how many tagged items a query's 1,000 nearest hold,
each recall's worst query, the load time, the index's build time and size. The run verifies what
it measures: every answer non-empty with `"semantic": "ok"` (the cache was hit), filtered answers
holding their tag's items only, the exact scans using no index and agreeing with numpy's over
the generated vectors, the tenant holding exactly the items (and tagged ones) loaded.

    python bench/search.py [--json] [--items 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import math
import random
import re
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np
import psycopg
import redis.asyncio
from pgvector.psycopg import register_vector
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test photo (tests/)

from tests.integration.media.support import photo

from _http_bench import Api, cached_api_environment, seed
from _servers import (
    check,
    durable_servers,
    prepare_shared,
    print_settings,
    quiet_logging,
    server_settings,
    settings_lines,
)
from media import Client, Process, wait_ready
from socialflow.ai.vectors import INDEX_NAME, create_index_sql
from socialflow.db.engine import libpq_url
from socialflow.db.tenant_schema import search_path_for
from socialflow.search import query_vectors
from socialflow.search.services import HNSW_MAX_FETCH
from socialflow.settings import Settings

DIMENSION = 1536
K = 20  # the page a search answers by default, and the depth recall is measured at
THEMES, TOPICS, FACETS = 50, 500, 8
# An item vector's squared norm, shared out (before its own noise's spread, a second topic's
# lean and normalising): cosine ~0.15 between strangers, ~0.3 within a theme, ~0.55 ± 0.12
# within a topic.
SHARED, THEME, TOPIC, FACET, NOISE = 0.15, 0.15, 0.25, 0.30, 0.15
TOPIC_ZIPF = 0.7  # topic sizes ∝ rank^-0.7: ~50 to ~5,000 items at 100,000
# A photo is rarely of one thing: a quarter of the items also lean towards a second topic
# (BRIDGE of the squared norm more), of the same theme 7 times in 10.
BRIDGED, BRIDGE, BRIDGE_SAME_THEME = 0.25, 0.15, 0.7
INDEX_BUILD = {"maintenance_work_mem": "2GB", "max_parallel_maintenance_workers": "1"}
QUERY_VECTOR_TTL_S = 24 * 3600
DISTANCE_OPERATORS = {"vector_cosine_ops": "<=>", "vector_l2_ops": "<->", "vector_ip_ops": "<#>"}


@dataclass(frozen=True)
class Filter:
    """A tag some items carry, across topics, that a semantic mode filters on."""

    tag: str
    share: float  # of the items
    label: str  # in the table


FILTERS = {  # the filtered modes: a selective tag (ranked exactly) and a broad one (HNSW)
    "filtered": Filter("campaign-x", 0.01, "filtered"),
    "broad": Filter("campaign-y", 0.10, "broad filter"),
}
MODES: dict[str, dict[str, str]] = {
    "semantic": {"mode": "semantic"},
    "hybrid": {"mode": "hybrid"},
    "text": {"mode": "text"},
    **{mode: {"mode": "semantic", "tags": f.tag} for mode, f in FILTERS.items()},
}
AI_RATE_LIMITS = {"caption": 100_000, "embed": 100_000, "embed_query": 100_000}
COMMON_WORDS = (  # noqa: SIM905 - a word list reads better as text
    "photo day new team time love today morning light city summer people life week moment "
    "friends night world style home weekend family beautiful view work best fresh colour "
    "sunset little together behind scenes first event launch story moments spring autumn "
    "winter season happy local design details inside studio street walk coffee weather look "
    "favourite community celebrate project update welcome thanks special edition process "
    "crafted collection detail quiet bright golden blue green warm open early late journey "
    "travel outdoor window table market sky water nature classic"
).split()
FILLERS = ("the", "a", "with", "in", "at", "on", "of", "and", "for", "our", "from", "this", "to")
OVERRIDES = {  # media_items columns the copies do not take from the uploaded item
    "id": "s.id",
    "sha256": "s.sha256",
    "title": "s.title",
    "caption": "s.caption",
    "description": "s.description",
    "tags": "s.tags",
    "status": "'ready'",
    "deleted_at": "NULL",
    "caption_state": "'generated'",
    "caption_reason": "NULL",
    "embedding_state": "'embedded'",
    "embedding_reason": "NULL",
    "created_at": "s.created_at",
    "updated_at": "s.created_at",
    "captioned_at": "s.created_at",
}


@dataclass
class Library:
    ids: list[str]
    vectors: np.ndarray  # (items, DIMENSION) float32, unit rows
    rows: list[tuple[Any, ...]]  # id, sha256, title, caption, description, tags, created_at
    tagged: dict[str, set[str]]  # per filtered mode (FILTERS), the ids carrying its tag

    def tagged_at(self, mode: str) -> np.ndarray:
        """The positions of the items carrying `mode`'s tag."""
        return np.array([i for i, m in enumerate(self.ids) if m in self.tagged[mode]])


@dataclass
class Query:
    text: str
    vector: np.ndarray


def unit(x: np.ndarray) -> np.ndarray:
    normed: np.ndarray = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return normed


class Space:
    """Where the vectors lie: a direction all share, 50 themes, 500 topics of Zipf sizes (10 a
    theme), 8 facets a topic, each item's position along its topic's facets and, for some, a
    second topic."""

    def __init__(self, rng: np.random.Generator, items: int) -> None:
        self.rng = rng
        shared = unit(rng.standard_normal(DIMENSION, dtype=np.float32))
        themes = unit(rng.standard_normal((THEMES, DIMENSION), dtype=np.float32))
        self.theme_of = np.arange(TOPICS) % THEMES
        self.topics = unit(rng.standard_normal((TOPICS, DIMENSION), dtype=np.float32))
        self.bases = (
            math.sqrt(SHARED) * shared
            + math.sqrt(THEME) * themes[self.theme_of]
            + math.sqrt(TOPIC) * self.topics
        )
        self.facets = unit(rng.standard_normal((TOPICS, FACETS, DIMENSION), dtype=np.float32))
        sizes = 1 / np.arange(1, TOPICS + 1) ** TOPIC_ZIPF
        self.topic_of = rng.choice(TOPICS, items, p=sizes / sizes.sum())
        self.weights = rng.standard_normal((items, FACETS), dtype=np.float32)
        # -1: none; topics of a theme are those equal modulo THEMES.
        same_theme = (self.topic_of + THEMES * rng.integers(1, TOPICS // THEMES, items)) % TOPICS
        anywhere = rng.integers(0, TOPICS, items)
        second = np.where(rng.random(items) < BRIDGE_SAME_THEME, same_theme, anywhere)
        self.second = np.where(rng.random(items) < BRIDGED, second, -1)
        # An item's two strongest facets: their words are in its title and caption.
        self.strongest = np.argsort(-self.weights, axis=1)[:, :2]

    def place(
        self, topic: int, at: np.ndarray, noise_scale: np.ndarray, lean: np.ndarray | float = 0.0
    ) -> np.ndarray:
        """Unit vectors in `topic` at facet weights `at`, each with noise of its own, plus
        `lean` (towards second topics)."""
        noise = self.rng.standard_normal((len(at), DIMENSION), dtype=np.float32)
        return unit(
            self.bases[topic]
            + math.sqrt(FACET / FACETS) * (at @ self.facets[topic])
            + math.sqrt(NOISE / DIMENSION) * noise_scale[:, None] * noise
            + lean
        )

    def item_vectors(self) -> np.ndarray:
        vectors = np.empty((len(self.topic_of), DIMENSION), dtype=np.float32)
        for topic in range(TOPICS):
            members = np.flatnonzero(self.topic_of == topic)
            if len(members):  # some items stray further from their topic than others
                scale = self.rng.uniform(0.5, 1.5, len(members)).astype(np.float32)
                second = self.second[members]
                lean = math.sqrt(BRIDGE) * self.topics[second] * (second >= 0)[:, None]
                vectors[members] = self.place(topic, self.weights[members], scale, lean)
        return vectors

    def query_vector(self, near: int) -> np.ndarray:
        """A vector in item `near`'s topic, about where it is along the facets."""
        at = 0.8 * self.weights[near : near + 1] + 0.6 * self.rng.standard_normal(
            (1, FACETS), dtype=np.float32
        )
        vector: np.ndarray = self.place(int(self.topic_of[near]), at, np.ones(1, np.float32))[0]
        return vector


class Vocabulary:
    """Invented words: a theme's name and 4 words, a topic's 3 core words and one word per facet;
    an item's text draws on its topic's, its theme's, common caption words (Zipf) and fillers,
    and names its second topic if it has one."""

    def __init__(self, rnd: random.Random, space: Space) -> None:
        self.rnd, self.space = rnd, space
        words = iter(invented_words(rnd, THEMES * 5 + TOPICS * (3 + FACETS)))
        self.themes = [[next(words) for _ in range(5)] for _ in range(THEMES)]
        self.cores = [[next(words) for _ in range(3)] for _ in range(TOPICS)]
        self.facets = [[next(words) for _ in range(FACETS)] for _ in range(TOPICS)]
        zipf = 1 / np.arange(1, len(COMMON_WORDS) + 1)
        chances = np.concatenate(
            [
                [0.06] * 3,  # core words
                [0.02] * FACETS,
                [0.02] * 5,  # the theme's
                [0.20 / len(FILLERS)] * len(FILLERS),
                0.36 * zipf / zipf.sum(),
            ]
        )
        self.cumulative = np.cumsum(chances).tolist()
        self.pools = [  # in the order of `chances`
            [*core, *facets, *self.themes[space.theme_of[topic]], *FILLERS, *COMMON_WORDS]
            for topic, (core, facets) in enumerate(zip(self.cores, self.facets, strict=True))
        ]

    def words_of(self, n: int) -> dict[str, str]:
        """The words item `n` certainly holds: its topic's first core word (title, tags), its
        strongest facet's (title, tags), its next facet's (caption), its theme's name (tags)."""
        topic = int(self.space.topic_of[n])
        facet, next_facet = (self.facets[topic][int(f)] for f in self.space.strongest[n])
        return {
            "core": self.cores[topic][0],
            "facet": facet,
            "next facet": next_facet,
            "theme": self.themes[self.space.theme_of[topic]][0],
        }

    def draw(self, n: int, low: int, high: int) -> list[str]:
        pool = self.pools[int(self.space.topic_of[n])]
        return self.rnd.choices(pool, cum_weights=self.cumulative, k=self.rnd.randint(low, high))

    def item(self, n: int) -> tuple[str, str, str, list[str]]:
        """Title, caption, description and tags of item `n`."""
        sure = self.words_of(n)
        title = [sure["core"], sure["facet"], *self.draw(n, 1, 3)]
        self.rnd.shuffle(title)
        caption = self.draw(n, 12, 24)
        caption.insert(self.rnd.randrange(len(caption)), sure["next facet"])
        if (other := int(self.space.second[n])) >= 0:
            caption.insert(self.rnd.randrange(len(caption)), self.cores[other][0])
        description = self.draw(n, 20, 45)
        return (
            " ".join(title).capitalize(),
            " ".join(caption).capitalize() + ".",
            " ".join(description).capitalize() + ".",
            [sure["theme"], sure["core"], sure["facet"]],
        )

    def query(self, n: int) -> str:
        """2-4 words item `n` holds: its core word, its strongest facet's, maybe more."""
        sure = self.words_of(n)
        extra = self.rnd.sample([sure["next facet"], sure["theme"]], self.rnd.randint(0, 2))
        return " ".join([sure["core"], sure["facet"], *extra])


def invented_words(rnd: random.Random, count: int) -> list[str]:
    """Distinct pronounceable words of 2-3 syllables, none a common word or a filler."""
    onsets = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st")
    vowels, codas = "aeiou", "nrlst"
    known = set(COMMON_WORDS) | set(FILLERS)
    words: list[str] = []
    while len(words) < count:
        word = "".join(rnd.choice(onsets) + rnd.choice(vowels) for _ in range(rnd.randint(2, 3)))
        word += rnd.choice(codas) if rnd.random() < 0.4 else ""
        if word not in known:
            known.add(word)
            words.append(word)
    return words


def generate(items: int, queries: int, seed: int = 7) -> tuple[Library, list[Query]]:
    """The library and the queries: the same for the same arguments."""
    rng, rnd = np.random.default_rng(seed), random.Random(seed)
    space = Space(rng, items)
    vocabulary = Vocabulary(rnd, space)
    # The first tag from the run's stream, as it always was; each other from a stream of its
    # own (independent of the first; no vector, text or query changes for it).
    streams = [rng, *rng.spawn(len(FILTERS) - 1)]
    tagged_at = {
        mode: set(stream.choice(items, round(items * f.share), replace=False).tolist())
        for (mode, f), stream in zip(FILTERS.items(), streams, strict=True)
    }
    now = datetime.now(UTC)
    ids: list[str] = []
    rows: list[tuple[Any, ...]] = []
    tagged: dict[str, set[str]] = {mode: set() for mode in FILTERS}
    for n in range(items):
        media_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        title, caption, description, tags = vocabulary.item(n)
        for mode, at in tagged_at.items():
            if n in at:
                tags.append(FILTERS[mode].tag)
                tagged[mode].add(media_id)
        created_at = now - timedelta(seconds=rnd.uniform(0, 365 * 24 * 3600))
        sha256 = hashlib.sha256(media_id.encode()).hexdigest()  # distinct "bytes"
        ids.append(media_id)
        rows.append((media_id, sha256, title, caption, description, tags, created_at))
    library = Library(ids, space.item_vectors(), rows, tagged)
    asked: set[str] = set()
    chosen: list[Query] = []
    while len(chosen) < queries:  # near an item, with words it holds
        n = rnd.randrange(items)
        text = vocabulary.query(n)
        if text not in asked:  # one text, one cached vector
            asked.add(text)
            chosen.append(Query(text, space.query_vector(n)))
    return library, chosen


def load(
    conn: psycopg.Connection[Any], seed_id: str, library: Library, model: str
) -> dict[str, float]:
    """The library as the tenant's items and vectors, the HNSW index absent (dropped first):
    the items as copies of the uploaded one, which is then deleted (the tenant holds exactly the
    library); the vectors by binary COPY. Seconds each took."""
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(INDEX_NAME)))
    started = time.perf_counter()
    conn.execute(
        "CREATE TEMP TABLE bench_items (id uuid, sha256 text, title text, caption text, "
        "description text, tags text[], created_at timestamptz)"
    )
    with conn.cursor() as cursor, cursor.copy("COPY bench_items FROM STDIN") as copy:
        for row in library.rows:
            copy.write_row(row)
    # Every column but generated ones (search_doc): the uploaded item's, or the copy's own.
    columns = [
        str(row[0])
        for row in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'media_items'::regclass "
            "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
        )
    ]
    conn.execute(
        sql.SQL(
            "INSERT INTO media_items ({}) SELECT {} FROM media_items m, bench_items s "
            "WHERE m.id = %s"
        ).format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.SQL(", ").join(
                sql.SQL(OVERRIDES[c]) if c in OVERRIDES else sql.Identifier("m", c) for c in columns
            ),
        ),
        (seed_id,),
    )
    conn.execute("UPDATE media_items SET deleted_at = now() WHERE id = %s", (seed_id,))
    conn.execute("DROP TABLE bench_items")
    items_s = time.perf_counter() - started
    started = time.perf_counter()
    with (
        conn.cursor() as cursor,
        cursor.copy(
            "COPY media_embeddings (media_id, model, content_sha256, embedding) FROM STDIN "
            "WITH (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["uuid", "text", "text", "vector"])
        for row, vector in zip(library.rows, library.vectors, strict=True):
            embedded = "\n".join([*row[2:5], " ".join(row[5])])  # as captions.embedding joins it
            digest = hashlib.sha256(embedded.encode()).hexdigest()
            copy.write_row((uuid.UUID(row[0]), model, digest, vector))
    vectors_s = time.perf_counter() - started
    # As autovacuum would leave them before anyone searches: visibility map, statistics.
    conn.execute("VACUUM (ANALYZE) media_items, media_embeddings")
    tagged = ", count(*) FILTER (WHERE m.tags @> %s::varchar[])" * len(FILTERS)
    live = conn.execute(
        f"SELECT count(*), count(e.media_id){tagged} "
        "FROM media_items m LEFT JOIN media_embeddings e ON e.media_id = m.id "
        "WHERE m.deleted_at IS NULL AND m.status = 'ready'",
        [[f.tag] for f in FILTERS.values()],
    ).fetchone()
    expected = (len(library.ids), len(library.ids), *map(len, library.tagged.values()))
    check(
        live == expected, f"live items, vectors, tagged by each filter: {live}, loaded {expected}"
    )
    return {"items_s": items_s, "vectors_s": vectors_s}


def build_index(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The product's HNSW statement, timed, in a session with INDEX_BUILD's settings."""
    statement = create_index_sql(DIMENSION)
    check(statement is not None, f"no HNSW index for {DIMENSION} dimensions")
    assert statement is not None
    for name, value in INDEX_BUILD.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    started = time.perf_counter()
    conn.execute(statement)
    build_s = time.perf_counter() - started
    for name in INDEX_BUILD:
        conn.execute(sql.SQL("RESET {}").format(sql.Identifier(name)))
    row = conn.execute(
        "SELECT pg_get_indexdef(c.oid), pg_relation_size(c.oid) FROM pg_class c "
        "WHERE c.oid = to_regclass(%s)",
        (INDEX_NAME,),
    ).fetchone()
    check(row is not None, f"{INDEX_NAME} was not built")
    assert row is not None
    definition = str(row[0])
    check(" USING hnsw " in definition, f"not an HNSW index: {definition}")
    opclass = next((o for o in DISTANCE_OPERATORS if o in definition), None)
    check(opclass is not None, f"unknown operator class: {definition}")
    assert opclass is not None
    given = re.search(r"WITH \((.*)\)", definition)
    parameters = (
        given.group(1).replace("'", "")
        if given
        else "m=16, ef_construction=64 (pgvector's defaults: none given)"
    )
    return {
        "build_s": build_s,
        "mb": int(row[1]) / 1024 / 1024,
        "opclass": opclass,
        "operator": DISTANCE_OPERATORS[opclass],
        "parameters": parameters,
    }


def exact_nearest(
    conn: psycopg.Connection[Any], operator: str, queries: list[Query], tag: str | None
) -> list[list[str]]:
    """Each query's K nearest live items (carrying `tag`, if one) by a full scan (`+ 0`: no
    index can give the order)."""
    statement = (
        "SELECT e.media_id::text FROM media_embeddings e JOIN media_items m ON m.id = e.media_id "
        "WHERE m.deleted_at IS NULL AND m.status = 'ready' "
        + ("AND m.tags @> %s::varchar[] " if tag else "")
        + f"ORDER BY (e.embedding {operator} %s) + 0 LIMIT {K}"
    )
    filters = ([tag],) if tag else ()
    plan = conn.execute(f"EXPLAIN {statement}", (*filters, queries[0].vector)).fetchall()
    check(
        not any(INDEX_NAME in str(line[0]) for line in plan),
        f"the exact scan would use the index: {plan}",
    )
    return [[str(r[0]) for r in conn.execute(statement, (*filters, q.vector))] for q in queries]


def numpy_nearest(library: Library, queries: list[Query], among: np.ndarray) -> list[list[str]]:
    """The same by numpy over the generated vectors (unit rows: every metric ranks alike)."""
    sims = np.stack([q.vector for q in queries]) @ library.vectors[among].T
    top = np.argsort(-sims, axis=1)[:, :K]
    return [[library.ids[among[i]] for i in row] for row in top]


async def cache_query_vectors(
    cache_url: str, tenant: uuid.UUID, model: query_vectors.Model, queries: list[Query]
) -> None:
    """Each query's vector in the API's cache, as the product leaves it after embedding it,
    then read back as the API reads it."""
    client = redis.asyncio.Redis.from_url(cache_url)
    try:
        for q in queries:
            await query_vectors.remember(
                client, tenant, model, q.text, q.vector.tolist(), ttl_s=QUERY_VECTOR_TTL_S
            )
        for q in queries:
            cached = await query_vectors.recalled(client, tenant, model, q.text)
            check(
                cached is not None and np.array_equal(np.array(cached, np.float32), q.vector),
                f"{q.text!r}: its vector is not in the cache as it was put",
            )
    finally:
        await client.aclose()


class SearchClient:
    """One client thread's keep-alive HTTP connection to the tenant's search."""

    def __init__(self, base: str, slug: str, key: str) -> None:
        url = urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.path = f"/api/v1/tenants/{slug}/search?"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def search(self, text: str, params: dict[str, str]) -> tuple[float, dict[str, Any]]:
        """(milliseconds from sending to the body read, the answer)."""
        path = self.path + urlencode({"q": text, "limit": K, **params})
        for attempt in (1, 2):  # the server may close an idle keep-alive connection
            try:
                started = time.perf_counter()
                self.connection.request("GET", path, headers=self.headers)
                answer = self.connection.getresponse()
                body = answer.read()
                elapsed_ms = (time.perf_counter() - started) * 1000
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 2:
                    raise
        check(answer.status == 200, f"search {params} {text!r}: {answer.status} {body[:300]!r}")
        return elapsed_ms, json.loads(body)

    def close(self) -> None:
        self.connection.close()


def verified_ids(
    mode: str, text: str, answer: dict[str, Any], tagged: dict[str, set[str]]
) -> list[str]:
    """The answer's ids, once it is seen to be what was asked for."""
    ids = [str(item["media_id"]) for item in answer["items"]]
    check(0 < len(ids) <= K, f"{mode} {text!r}: {len(ids)} items")
    if mode != "text":
        check(
            answer["semantic"] == "ok",
            f"{mode} {text!r}: semantic={answer['semantic']!r} (the query vector cache was not "
            "hit, or vectors are not searched)",
        )
    if mode in FILTERS:
        check(
            set(ids) <= tagged[mode],
            f"{text!r}: an item without {FILTERS[mode].tag} in a {mode} answer",
        )
    return ids


@dataclass
class Tenant:
    id: uuid.UUID
    slug: str
    schema: str
    admin_key: str  # uploads the photo
    viewer_key: str  # searches: the least role that may


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logging()
    # The search settings the API reads (none is set here: the environment's, or defaults).
    product = Settings()
    tuning = {
        "ef_search": product.search_hnsw_ef_search,
        "exact_below": product.search_exact_scan_below,
        "fallback_max": product.search_exact_fallback_max,
    }
    started = time.perf_counter()
    library, queries = generate(args.items, args.queries)
    generate_s = time.perf_counter() - started
    with durable_servers() as servers:
        assert servers.redis_url is not None
        # A library this size is past some plans' limits: none here, and no request rate that
        # counts against the run.
        prepare_shared(
            servers.database_url,
            api_requests_per_minute=10_000_000,
            media_items=None,
            storage_bytes=None,
        )
        with cached_api_environment(servers) as env:
            env["AI_RATE_LIMITS_PER_MINUTE"] = json.dumps(AI_RATE_LIMITS)
            logs = servers.data_dir
            api = Api(env, 1, logs / "api.log")
            try:
                tenant = provision(api, servers.database_url)
                with psycopg.connect(libpq_url(servers.database_url), autocommit=True) as conn:
                    seed_id = upload_seed(api, env, logs, tenant, conn)
                    conn.execute(f"SET search_path TO {search_path_for(tenant.schema)}")
                    register_vector(conn)
                    outcome = measure(
                        conn, api, tenant, seed_id, env["CACHE_REDIS_URL"], library, queries
                    )
                outcome["_generate_s"] = generate_s
                outcome["_tuning"] = tuning
                outcome["_settings"] = settings_lines(servers, server_settings(servers))
            finally:
                api.stop()
    return outcome


def provision(api: Api, database_url: str) -> Tenant:
    """A tenant through the API (the benchmarks' `seed`), and a viewer's API key of its own."""
    (target, *_) = seed(api, database_url)
    slug = target["slug"]
    viewer = api.call(
        "POST",
        f"/api/v1/tenants/{slug}/api-keys",
        {"name": "search bench", "role": "viewer"},
        target["jwt"],
    )["key"]
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT id, schema_name FROM shared.tenants WHERE slug = %s AND status = 'active'",
            (slug,),
        ).fetchone()
    check(row is not None, f"no tenant {slug}")
    assert row is not None
    return Tenant(row[0], slug, str(row[1]), target["key"], str(viewer))


def upload_seed(
    api: Api, env: dict[str, str], logs: Path, tenant: Tenant, conn: psycopg.Connection[Any]
) -> str:
    """One photo through the API, processed to `ready` by a relay and a worker stopped after:
    the item every other is a copy of (its derivatives, its thumbnail)."""
    relay = Process(["relay"], env, logs / "relay.log")
    worker = Process(["worker", "--processes", "1"], env, logs / "worker.log")
    try:
        client = Client(api, tenant.slug, tenant.admin_key)
        media_id = client.start(photo(1600, 1200), 0)
        client.confirm(media_id)
        wait_ready(conn, tenant.schema, [media_id], 120)
    finally:
        worker.stop()
        relay.stop()
    return media_id


def measure(
    conn: psycopg.Connection[Any],
    api: Api,
    tenant: Tenant,
    seed_id: str,
    cache_url: str,
    library: Library,
    queries: list[Query],
) -> dict[str, Any]:
    """Load, build, seed the cache, scan exactly, then search through the API (`conn`: on the
    tenant's search_path)."""
    settings = conn.execute(
        "SELECT embedding_model, embedding_dimension FROM ai_settings WHERE id = 1"
    ).fetchone()
    check(settings is not None and settings[1] == DIMENSION, f"AI settings: {settings}")
    assert settings is not None
    model = query_vectors.Model(str(settings[0]), int(settings[1]))
    loaded = load(conn, seed_id, library, model.name)
    index = build_index(conn)
    asyncio.run(cache_query_vectors(cache_url, tenant.id, model, queries))
    truth = ground_truth(conn, index["operator"], library, queries)
    facts = server_facts(conn)
    times, found = time_searches(
        SearchClient(api.base, tenant.slug, tenant.viewer_key), library, queries
    )
    recall = {mode: recalls(found[mode], truth[mode]) for mode in truth}
    return {
        "semantic_p95_ms": round(percentile(times["semantic"], 0.95), 1),
        "hybrid_p95_ms": round(percentile(times["hybrid"], 0.95), 1),
        "recall_at_20": round(statistics.fmean(recall["semantic"]), 4),
        "filtered_recall_at_20": round(statistics.fmean(recall["filtered"]), 4),
        "_recall": {mode: (statistics.fmean(r), min(r)) for mode, r in recall.items()},
        "_latency": {mode: (percentile(t, 0.5), percentile(t, 0.95)) for mode, t in times.items()},
        "_over_fetched": over_fetched(library, queries),
        "_load_s": loaded,
        "_index": index,
        "_facts": facts,
        "_similarity": similarity(library, queries),
    }


def ground_truth(
    conn: psycopg.Connection[Any], operator: str, library: Library, queries: list[Query]
) -> dict[str, list[list[str]]]:
    """Each query's K nearest by exact scans in SQL, among all items and among each filter's
    tagged, each checked against numpy's over the generated vectors (a wrong load or scan would
    show here)."""
    truth = {}
    amongs = {"semantic": (None, np.arange(len(library.ids)))} | {
        mode: (f.tag, library.tagged_at(mode)) for mode, f in FILTERS.items()
    }
    for name, (tag, among) in amongs.items():
        truth[name] = exact_nearest(conn, operator, queries, tag)
        agree = statistics.fmean(recalls(numpy_nearest(library, queries, among), truth[name]))
        check(agree >= 0.99, f"{name}: the exact scan agrees with numpy's at {agree:.3f}")
    return truth


def time_searches(
    client: SearchClient, library: Library, queries: list[Query]
) -> tuple[dict[str, list[float]], dict[str, list[list[str]]]]:
    """A warm-up pass, then a timed one, the modes interleaved per query (a slow spell hits
    every mode alike): each mode's times, and the semantic and filtered answers' ids."""
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    found: dict[str, list[list[str]]] = {mode: [] for mode in ("semantic", *FILTERS)}
    try:
        for timed in (False, True):
            for q in queries:
                for mode, params in MODES.items():
                    elapsed_ms, answer = client.search(q.text, params)
                    ids = verified_ids(mode, q.text, answer, library.tagged)
                    if timed:
                        times[mode].append(elapsed_ms)
                        if mode in found:
                            found[mode].append(ids)
    finally:
        client.close()
    return times, found


def server_facts(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """What else the figures depend on: pgvector's version, ef_search, shared_buffers."""
    row = conn.execute(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
        "current_setting('hnsw.ef_search', true), "
        "(SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers')"
    ).fetchone()
    assert row is not None
    return {
        "pgvector": str(row[0]),
        "ef_search": str(row[1]),
        "shared_buffers_mb": f"{row[2] / 1024 / 1024:.0f}",
    }


def similarity(library: Library, queries: list[Query]) -> dict[str, float]:
    """Mean cosines that show the data's shape: a query's 1st and Kth nearest, random pairs."""
    sims = np.sort(np.stack([q.vector for q in queries]) @ library.vectors.T, axis=1)
    pairs = np.random.default_rng(1).integers(0, len(library.ids), (2, 2000))
    strangers = np.einsum("ij,ij->i", library.vectors[pairs[0]], library.vectors[pairs[1]])
    return {
        "1st": float(sims[:, -1].mean()),
        f"{K}th": float(sims[:, -K].mean()),
        "random pairs": float(strangers.mean()),
    }


def over_fetched(library: Library, queries: list[Query]) -> dict[str, tuple[int, int]]:
    """Per filter, what the API's over-fetch leaves (by numpy, exactly; the index's list is
    near it): the fewest items with its tag among a query's HNSW_MAX_FETCH nearest, and how
    many queries have fewer than a first page's list (K + 1), which the API then ranks exactly
    (when the matches are at most SEARCH_EXACT_FALLBACK_MAX)."""
    sims = np.stack([q.vector for q in queries]) @ library.vectors.T
    fetch = min(HNSW_MAX_FETCH, len(library.ids))
    fetched = np.argpartition(-sims, fetch - 1, axis=1)[:, :fetch]
    left = {}
    for mode in FILTERS:
        carries = np.zeros(len(library.ids), dtype=bool)
        carries[library.tagged_at(mode)] = True
        counts = carries[fetched].sum(axis=1)
        left[mode] = (int(counts.min()), int((counts < K + 1).sum()))
    return left


def filter_line(mode: str, outcome: dict[str, Any], args: argparse.Namespace) -> str:
    """A filter's settings line: its items, and how the API ranks its queries at this size."""
    f, tuning = FILTERS[mode], outcome["_tuning"]
    tagged = round(args.items * f.share)
    line = f"{tagged:,} items ({f.share * 100:g} %), across topics, independent of the other tag: "
    if tagged < tuning["exact_below"]:
        return line + "fewer than SEARCH_EXACT_SCAN_BELOW, so ranked by an exact scan"
    fewest, short = outcome["_over_fetched"][mode]
    fallback = (
        "every match is ranked exactly (the exact fallback)"
        if tagged <= tuning["fallback_max"]
        else "the short list stands (over SEARCH_EXACT_FALLBACK_MAX: no exact fallback)"
    )
    return line + (
        f"the HNSW path: the index's {HNSW_MAX_FETCH:,} nearest (over-fetch), filtered; if "
        f"fewer than {K + 1} are left, {fallback}. By numpy, a query's {HNSW_MAX_FETCH:,} "
        f"nearest hold {fewest} tagged at fewest; {short} of {args.queries} queries fewer "
        f"than {K + 1}"
    )


def recalls(found: list[list[str]], truth: list[list[str]]) -> list[float]:
    """Per query, the share of the true nearest that was found."""
    return [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def print_table(outcome: dict[str, Any], args: argparse.Namespace, file: Any) -> None:
    index, loaded, facts = outcome["_index"], outcome["_load_s"], outcome["_facts"]
    tuning = outcome["_tuning"]
    shapes = ", ".join(f"{k} {v:.2f}" for k, v in outcome["_similarity"].items())
    fits = index["mb"] <= float(facts["shared_buffers_mb"])
    print_settings(
        outcome["_settings"],
        {
            "items": f"{args.items:,} live `ready` items in one tenant, copies of one uploaded "
            f"photo; {TOPICS} topics in {THEMES} themes, Zipf sizes; {DIMENSION}-d unit vectors "
            f"(mean cosine of a query to its 1st / {K}th nearest, of random pairs: {shapes})",
            **{
                f"{f.label} (tags={f.tag})": filter_line(mode, outcome, args)
                for mode, f in FILTERS.items()
            },
            "load": f"{loaded['items_s']:.1f} s items (INSERT … SELECT from a COPY), "
            f"{loaded['vectors_s']:.1f} s vectors (binary COPY), the HNSW index absent; data "
            f"generated in {outcome['_generate_s']:.1f} s",
            "index": f"{INDEX_NAME}: hnsw ({index['opclass']}), "
            f"{index['parameters']}; pgvector {facts['pgvector']}; built with "
            + ", ".join(f"{k}={v}" for k, v in INDEX_BUILD.items()),
            "search": f"SEARCH_HNSW_EF_SEARCH={tuning['ef_search']} (hnsw.ef_search; the API "
            f"raises it for deeper lists and filtered ones; the database's default: "
            f"{facts['ef_search']}); SEARCH_EXACT_SCAN_BELOW={tuning['exact_below']:,}: a query "
            "whose filters leave fewer vectors is ranked exactly; "
            f"SEARCH_EXACT_FALLBACK_MAX={tuning['fallback_max']:,}: a filtered HNSW list that "
            "came back short is ranked exactly when its matches are at most this many",
            "memory": f"shared_buffers={facts['shared_buffers_mb']} MB; the index "
            f"({index['mb']:.0f} MB) "
            + ("fits" if fits else "does not fit: searches read it through the OS cache"),
            "queries": f"{args.queries} of 2-4 words, their vectors in the API's cache beforehand "
            f"(query_vectors.remember); one client thread, HTTP keep-alive, limit={K}, a viewer's "
            "API key; a warm-up pass, then a timed pass, the "
            f"{len(MODES)} modes interleaved per query",
            "recall": f"against exact scans in SQL (distance {index['operator']} + 0: no index) "
            "of live items, themselves checked against numpy's",
            "API": "socialflow api --workers 1 (uvicorn), logging JSON at INFO to a file",
        },
        file=file,
    )
    targets = {
        "semantic p95 ms": "<= 30",
        "hybrid p95 ms": "<= 60",
        "recall@20": ">= 0.95",
        **{f"{f.label} recall@20": ">= 0.95" for f in FILTERS.values()},
    }
    rows: list[tuple[str, str]] = []
    for mode, (p50, p95) in outcome["_latency"].items():
        label = f"semantic, {FILTERS[mode].label}" if mode in FILTERS else mode
        rows += [(f"{label} p50 ms", f"{p50:.1f}"), (f"{label} p95 ms", f"{p95:.1f}")]
    names = {"semantic": ("recall@20", "recall@20, worst query")} | {
        mode: (f"{f.label} recall@20", f"{f.label}, worst query") for mode, f in FILTERS.items()
    }
    for mode, (mean, worst) in outcome["_recall"].items():
        rows += [(names[mode][0], f"{mean:.3f}"), (names[mode][1], f"{worst:.2f}")]
    rows += [
        ("load s", f"{loaded['items_s'] + loaded['vectors_s']:.1f}"),
        ("index build s", f"{index['build_s']:.1f}"),
        ("index MB", f"{index['mb']:.0f}"),
        ("items", f"{args.items:,}"),
    ]
    print(f"{'metric':<30}{'value':>10}  target", file=file)
    for name, value in rows:
        print(f"{name:<30}{value:>10}  {targets.get(name, '')}".rstrip(), file=file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="table to stderr, one JSON line")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rarest = min(f.share for f in FILTERS.values())  # every filter holds a page of items
    if round(args.items * rarest) < K:
        parser.error(f"--items: at least {math.ceil(K / rarest)} ({rarest * 100:g} % of them, {K})")
    if args.queries < 1:
        parser.error("--queries: at least 1")
    outcome = run(args)
    print_table(outcome, args, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))


if __name__ == "__main__":
    main()
