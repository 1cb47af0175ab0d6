"""A search query's vector: the tenant's embedding model's, cached in Redis by tenant, model,
dimension and normalised query (a repeated query costs no provider call and no budget),
otherwise one embeddings call counted in the AI ledger and budget like any other (operation
`embed_query`).

The cache key is a digest: a query's words never sit in Redis in clear. Anything that keeps a
vector from being had (no model or key, the budget, the rate limit, the provider down or
refusing) is an `Unavailable` with a sentence for the client: search then answers by text.
"""

from __future__ import annotations

import array
import asyncio
import hashlib
import math
import sys
import unicodedata
import uuid
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.ai import ledger
from socialflow.ai.credentials import ProviderCredentials
from socialflow.ai.pricing import ModelFacts, text_tokens_bound
from socialflow.captions import calling
from socialflow.captions.calling import NoCall, Retry
from socialflow.captions.embedding import request_vectors, settlement_of
from socialflow.plans.quota import TenantKey
from socialflow.resources import Resources

log = structlog.get_logger(__name__)

OPERATION = "embed_query"
_KEY_PREFIX = "sf:search:qvec:"


@dataclass(frozen=True)
class Model:
    """The tenant's embedding model and the dimension of its vector column."""

    name: str
    dimension: int


@dataclass(frozen=True)
class Unavailable:
    """Why the query has no vector (no key for the model, the budget, the rate limit, the
    provider), as a sentence for the client."""

    reason: str


def normalise(query: str) -> str:
    """The form a query is cached by: NFKC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def cache_key(tenant: uuid.UUID, model: str, dimension: int, query: str) -> str:
    """Per tenant: a tenant's key may reach its own endpoint for a model name, and one tenant
    must not learn from the cache (or its ledger) what another searched for."""
    key = f"{tenant}\0{model}\0{dimension}\0{normalise(query)}"
    return _KEY_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def _pack(vector: list[float]) -> bytes:
    floats = array.array("f", vector)
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tobytes()


def _unpack(raw: bytes, dimension: int) -> list[float] | None:
    if len(raw) != 4 * dimension:
        return None
    floats = array.array("f")
    floats.frombytes(raw)
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tolist()


async def remember(
    redis: Redis,
    tenant: uuid.UUID,
    model: Model,
    query: str,
    vector: list[float],
    *,
    ttl_s: int,
) -> None:
    """Keep a query's vector for `ttl_s` (best effort: a cache that fails costs a call later)."""
    try:
        await redis.set(
            cache_key(tenant, model.name, model.dimension, query), _pack(vector), ex=ttl_s
        )
    except RedisError as error:
        log.warning("search.query_cache_unavailable", error=type(error).__name__)


async def recalled(redis: Redis, tenant: uuid.UUID, model: Model, query: str) -> list[float] | None:
    try:
        raw = await redis.get(cache_key(tenant, model.name, model.dimension, query))
    except RedisError as error:
        log.warning("search.query_cache_unavailable", error=type(error).__name__)
        return None
    if raw is None:
        return None
    return _unpack(raw if isinstance(raw, bytes) else raw.encode(), model.dimension)


@dataclass(frozen=True)
class Call:
    """A query embedding to make: what step 1 read in the request's transaction."""

    tenant: TenantKey
    model: Model
    query: str
    credentials: ProviderCredentials
    facts: ModelFacts
    allowance: ledger.Allowance


@dataclass(frozen=True)
class Refused:
    """The provider refused the key: the caller marks it invalid (in a transaction)."""

    credentials: ProviderCredentials
    failure: calling.Failure


async def prepare(
    session: AsyncSession, resources: Resources, tenant: TenantKey, model: Model, query: str
) -> list[float] | Unavailable | Call:
    """Step 1, in the request's transaction: the cached vector, or the call to make (its key,
    the model's price, the rate limit, the budget it reserves against), or why there is none."""
    redis = resources.redis
    if redis is not None:
        cached = await recalled(redis, tenant.id, model, query)
        if cached is not None:
            return cached
    credentials = await calling.credentials(session, resources, tenant, model.name)
    if isinstance(credentials, NoCall):  # no key for the model, or the tenant's is invalid
        return Unavailable(credentials.reason)
    facts = calling.facts_for(credentials, model.name, "embedding")
    if isinstance(facts, NoCall):
        return Unavailable(facts.reason)
    try:
        limited = await calling.rate_wait(resources, tenant, OPERATION)
    except RedisError:
        return Unavailable("Query embeddings are unavailable for a moment.")
    if isinstance(limited, Retry):
        return Unavailable("The tenant's query embeddings are rate limited.")
    allowance = await ledger.allowance(session, tenant)
    return Call(tenant, model, query, credentials, facts, allowance)


async def embed(
    resources: Resources, call: Call, *, request_id: str | None
) -> list[float] | Unavailable | Refused:
    """Step 2, with no transaction or connection held while the provider answers: reserve
    the call's bound, make it, settle it (also when the request is cancelled meanwhile), and
    keep the vector in the cache."""
    try:
        reservation = await ledger.reserve_call(
            resources.engine,
            call.tenant,
            call.allowance,
            operation=OPERATION,
            model=call.facts.name,
            key_source="byok" if call.credentials.source == "tenant" else "platform",
            amount=call.facts.cost(text_tokens_bound(call.query), 0),
            request_id=(request_id or "")[:64] or None,  # the ledger keeps 64 characters
        )
    except ledger.BudgetExceeded as exceeded:
        return Unavailable(exceeded.problem.detail)
    try:
        answer = await request_vectors(
            call.credentials,
            call.facts,
            call.model.name,
            call.model.dimension,
            [call.query],
            resources,
            timeout_s=resources.settings.search_embed_timeout_s,
        )
    except BaseException:  # cancelled (the client left) or a bug: nothing was spent
        gone = ledger.Settlement("failed", error_type="cancelled")
        await asyncio.shield(ledger.settle(resources.engine, call.tenant, reservation, gone))
        raise
    settlement = settlement_of(reservation, call.facts, answer)
    await asyncio.shield(ledger.settle(resources.engine, call.tenant, reservation, settlement))
    if answer.failure is not None:
        if answer.failure.key_refused:
            return Refused(call.credentials, answer.failure)
        return Unavailable(answer.failure.message)
    vectors = answer.vectors or []
    if len(vectors) != 1 or len(vectors[0]) != call.model.dimension:
        return Unavailable("The model answered no vector of the tenant's size.")
    if not all(math.isfinite(x) for x in vectors[0]):
        return Unavailable("The model answered a vector that is not a number.")
    if resources.redis is not None:
        ttl = resources.settings.search_query_cache_ttl_s
        await remember(
            resources.redis, call.tenant.id, call.model, call.query, vectors[0], ttl_s=ttl
        )
    return vectors[0]
