"""`Idempotency-Key` on POST: the same caller, path, key and body replay the first answer.

Route middleware (it runs after routing, so it knows the route's options). In order:

1. The body is refused on `Content-Length` past the limit and read no further than it, in
   chunks joined once.
2. The caller is authenticated first (revoked keys and disabled users are nobody); a request
   that opens nothing is passed on untouched, and the route answers it. The record is keyed on
   the principal, so a refreshed token is the same caller.
3. A Redis record claims the key with a short lease, renewed while the request runs (a crashed
   process frees the key within the lease); the same key with another body is a 422, while
   the first runs a 409 with `Retry-After`.
4. Only 2xx and deterministic 4xx answers are kept, for 24 hours. Fields a route names in
   `opt["withhold_on_replay"]` (one-time secrets) are never stored: a replay carries them as
   null and says so in `Idempotent-Withheld`.
A Redis failure is a 503 problem with `Retry-After`, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from litestar.middleware import MiddlewareProtocol
from litestar.types import ASGIApp as LitestarASGIApp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from socialflow.lib import http_metrics
from socialflow.lib.problems import Problem
from socialflow.lib.request_context import current_request_id
from socialflow.lib.route_facts import facts_of

# Plain-dict ASGI types: this layer only moves messages through.
Scope = MutableMapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TTL_S = 24 * 3600
LEASE_S = 30.0
KEY_PREFIX = "socialflow:idempotency:"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Per-response headers that must not be replayed (content-length: a withheld field changes it).
_NOT_REPLAYED = {
    b"x-request-id",
    b"ratelimit-limit",
    b"ratelimit-remaining",
    b"ratelimit-reset",
    b"date",
    b"content-length",
}
# Client errors that a retry of the same request would meet again. 401/403/404/409/429 and
# the like depend on the moment (credentials, membership, concurrent changes): not kept.
_KEPT_CLIENT_ERRORS = frozenset({400, 405, 410, 413, 415, 422})

# Compare-and-set on the record's owner token: a request whose lease ran out (and whose key
# another request took over) must neither renew, overwrite nor delete the other's record.
# ARGV: owner token, new value ("" deletes), expiry in ms.
_IF_OWNER = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, record = pcall(cjson.decode, current)
if not ok or record['owner'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""

# The lease's renewal: only a record that is still running, and still ours. A renewal sent
# just as the request finished must not turn its kept answer back into "running".
_RENEW = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, record = pcall(cjson.decode, current)
if not ok or record['owner'] ~= ARGV[1] or record['state'] ~= 'running' then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

log = structlog.get_logger(__name__)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


@functools.cache
def _fingerprint_key(secret: str) -> bytes:
    return hashlib.sha256(b"socialflow idempotency fingerprint:" + secret.encode()).digest()


def keeps(status: int) -> bool:
    """Whether an answer with this status is kept for replay."""
    return 200 <= status < 300 or status in _KEPT_CLIENT_ERRORS


class _BodyTooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


@dataclass(frozen=True)
class _Slot:
    """One key's record in Redis: where, which body it belongs to, and who holds it."""

    redis: Redis
    key: str
    fingerprint: str
    owner: str

    async def if_owner(self, value: str, ttl_ms: int) -> None:
        await self.redis.eval(_IF_OWNER, 1, self.key, self.owner, value, ttl_ms)

    async def renew(self, running: str, ttl_ms: int) -> None:
        await self.redis.eval(_RENEW, 1, self.key, self.owner, running, ttl_ms)


class Caller(Protocol):
    @property
    def actor(self) -> str: ...


@dataclass(frozen=True)
class Callers:
    """How this layer learns who calls (given by the app: lib sits below identity).

    `authenticate(state, authorization)` is the caller or None, raising nothing;
    `count(state, scope, caller)` counts the request against the caller's rate limit (a 429
    problem past it), once per request.
    """

    authenticate: Callable[[Any, str | None], Awaitable[Caller | None]]
    count: Callable[[Any, MutableMapping[str, Any], Any], Awaitable[None]]


class IdempotencyMiddleware(MiddlewareProtocol):
    def __init__(self, app: LitestarASGIApp, callers: Callers) -> None:
        self.app: ASGIApp = app  # type: ignore[assignment]
        self.callers = callers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        if not _KEY.fullmatch(key):
            await _problem(
                scope,
                send,
                400,
                "invalid-idempotency-key",
                detail="Idempotency-Key must be 1 to 255 visible ASCII characters.",
            )
            return
        if not facts_of(scope["route_handler"]).authenticated:
            # Sign-in and invitation routes answer anyone: nothing to key a record on, and
            # their answers hold tokens that must never sit in Redis.
            await self.app(scope, receive, send)
            return
        await self._idempotent(scope, receive, send, key)

    async def _idempotent(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        state = scope["app"].state
        limit: int = state.settings.max_request_body_bytes
        try:
            body = await _read_body(scope, receive, limit)
        except _BodyTooLarge:
            await _problem(
                scope,
                send,
                413,
                "request-entity-too-large",
                detail=f"The request body is larger than {limit} bytes.",
            )
            return
        except _Disconnected:
            return
        principal = await self.callers.authenticate(state, _header(scope, b"authorization"))
        replayed_body = _replay_receive(body)
        if principal is None:
            # Nobody to key a record on: the route answers 401.
            await self.app(scope, replayed_body, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        try:
            # Counted before anything is stored: records never outgrow the caller's limit.
            await self.callers.count(state, scope, principal)
        except Problem as refused:
            await _problem(
                scope,
                send,
                refused.status,
                refused.kind,
                detail=refused.detail,
                headers=[(k.lower().encode(), v.encode()) for k, v in refused.headers.items()],
            )
            return
        digest = hashlib.sha256(key.encode()).hexdigest()
        slot = _Slot(
            redis=state.redis,
            key=f"{KEY_PREFIX}{principal.actor}:{scope['path']}:{digest}",
            # Keyed, not a bare hash: a body may hold a password, and Redis is not a vault.
            fingerprint=hmac.new(
                _fingerprint_key(state.settings.signing_key()), body, "sha256"
            ).hexdigest(),
            owner=secrets.token_hex(16),
        )
        running = json.dumps({"state": "running", "body": slot.fingerprint, "owner": slot.owner})
        try:
            claimed = await slot.redis.set(slot.key, running, nx=True, px=int(LEASE_S * 1000))
            stored = None if claimed else await slot.redis.get(slot.key)
        except (RedisError, OSError) as exc:
            http_metrics.redis_error("idempotency")
            await _unavailable(scope, send, exc)
            return
        if claimed:
            await self._run_and_keep(scope, replayed_body, send, slot, running)
        else:
            await _answer_from(scope, send, stored, slot)

    async def _run_and_keep(
        self, scope: Scope, receive: Receive, send: Send, slot: _Slot, running: str
    ) -> None:
        withheld = tuple(scope["route_handler"].opt.get("withhold_on_replay", ()))
        response: dict[str, Any] = {"status": 500, "headers": [], "chunks": []}
        kept = False

        async def capture(message: Message) -> None:
            nonlocal kept
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                response["chunks"].append(message.get("body", b""))
                if not message.get("more_body", False) and keeps(response["status"]):
                    # Kept before the answer leaves: a retry right after it finds the record.
                    kept = await _keep(slot, response, withheld)
            await send(message)

        renewer = asyncio.create_task(_renew(slot, running))
        try:
            await self.app(scope, receive, capture)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not kept:
                with contextlib.suppress(RedisError, OSError):
                    await slot.if_owner("", 0)  # free the key: the request may be retried


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    return b"".join(chunks)


def _replay_receive(body: bytes) -> Receive:
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _renew(slot: _Slot, running: str) -> None:
    """Keep the lease while the request runs."""
    while True:
        await asyncio.sleep(LEASE_S / 3)
        with contextlib.suppress(RedisError, OSError):
            await slot.renew(running, int(LEASE_S * 1000))


async def _keep(slot: _Slot, response: dict[str, Any], withheld: tuple[str, ...]) -> bool:
    body = b"".join(response["chunks"])
    present: list[str] = []
    if withheld and 200 <= response["status"] < 300:
        body, present = _without(body, withheld)
    record = {
        "state": "done",
        "body": slot.fingerprint,
        "owner": slot.owner,
        "status": response["status"],
        "withheld": present,
        "headers": [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in response["headers"]
            if k.lower() not in _NOT_REPLAYED
        ],
        "response": base64.b64encode(body).decode(),
    }
    try:
        await slot.if_owner(json.dumps(record), TTL_S * 1000)
    except (RedisError, OSError) as exc:
        http_metrics.redis_error("idempotency")
        # The change is committed and its answer goes out; only its replay is lost.
        log.warning("idempotency.not_kept", error_type=type(exc).__name__)
        return False
    return True


def _without(body: bytes, fields: tuple[str, ...]) -> tuple[bytes, list[str]]:
    """The JSON body with `fields` nulled, and which of them it had."""
    try:
        document = json.loads(body)
    except ValueError:
        return b"", []  # not JSON: keep nothing that could hold the secret
    if not isinstance(document, dict):
        return b"", []
    present = [f for f in fields if f in document]
    for field in present:
        document[field] = None
    return json.dumps(document).encode(), present


async def _answer_from(scope: Scope, send: Send, stored: bytes | str | None, slot: _Slot) -> None:
    record: dict[str, Any] = (
        json.loads(stored) if stored else {"state": "running", "body": slot.fingerprint}
    )
    if record["body"] != slot.fingerprint:
        await _problem(
            scope,
            send,
            422,
            "idempotency-key-reused",
            detail="This Idempotency-Key was used with another request body.",
        )
        return
    if record["state"] == "running":
        await _problem(
            scope,
            send,
            409,
            "idempotency-in-progress",
            detail="A request with this Idempotency-Key is still running; retry shortly.",
            headers=[(b"retry-after", b"1")],
        )
        return
    body = base64.b64decode(record["response"])
    headers = [(str(k).encode(), str(v).encode()) for k, v in record["headers"]]
    headers += [(b"idempotent-replayed", b"true"), (b"content-length", str(len(body)).encode())]
    if record.get("withheld"):
        headers.append((b"idempotent-withheld", ", ".join(record["withheld"]).encode()))
    await send({"type": "http.response.start", "status": record["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _unavailable(scope: Scope, send: Send, exc: BaseException) -> None:
    log.warning("idempotency.unavailable", error_type=type(exc).__name__)
    await _problem(
        scope,
        send,
        503,
        "idempotency-unavailable",
        detail="Idempotency keys cannot be checked right now; retry shortly.",
        headers=[(b"retry-after", b"2")],
    )


async def _problem(
    scope: Scope,
    send: Send,
    status: int,
    kind: str,
    *,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(
        {
            "type": f"/problems/{kind}",
            "title": kind.replace("-", " ").capitalize(),
            "status": status,
            "detail": detail,
            "instance": scope["path"],
            "request_id": current_request_id(scope),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
