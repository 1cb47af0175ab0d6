"""`Idempotency-Key` on POST: the same key and body replay the first response for 24 hours.

The same key with another body is a 422; while the first request still runs, a second with its
key gets a 409 (retry shortly). Keys are per caller (the Authorization header, hashed) and per
path; only completed, non-5xx responses are kept, so a failed attempt can be retried.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from socialflow.lib.request_context import current_request_id

# Plain-dict ASGI types: this layer only moves messages through.
Scope = MutableMapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TTL_S = 24 * 3600
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Per-response headers that must not be replayed.
_NOT_REPLAYED = {b"x-request-id", b"ratelimit-remaining", b"ratelimit-reset", b"date"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


@dataclass(frozen=True)
class _Slot:
    """Where one key's record lives in Redis, and the body it belongs to."""

    redis: Redis
    key: str
    fingerprint: str


class IdempotencyMiddleware:
    def __init__(self, app: Any, redis: Callable[[], Redis]) -> None:
        self.app: ASGIApp = app
        self.redis = redis

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        if not _KEY.fullmatch(key):
            await _problem(
                scope, send, 400, "invalid-idempotency-key",
                detail="Idempotency-Key must be 1 to 255 visible ASCII characters.",
            )  # fmt: skip
            return
        body, more = b"", True
        while more:  # the whole body, to hash it and hand it on unchanged
            message = await receive()
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
        caller = hashlib.sha256((_header(scope, b"authorization") or "").encode()).hexdigest()
        slot = _Slot(
            redis=self.redis(),
            key=f"socialflow:idempotency:{caller}:{scope['path']}:{key}",
            fingerprint=hashlib.sha256(body).hexdigest(),
        )
        claimed = await slot.redis.set(
            slot.key, json.dumps({"state": "running", "body": slot.fingerprint}), nx=True, ex=TTL_S
        )
        if claimed:
            await self._run_and_keep(scope, send, body, slot)
        else:
            await self._answer_from(scope, send, await slot.redis.get(slot.key), slot)

    async def _answer_from(
        self, scope: Scope, send: Send, stored: bytes | str | None, slot: _Slot
    ) -> None:
        record: dict[str, Any] = (
            json.loads(stored) if stored else {"state": "running", "body": slot.fingerprint}
        )
        if record["body"] != slot.fingerprint:
            await _problem(
                scope, send, 422, "idempotency-key-reused",
                detail="This Idempotency-Key was used with another request body.",
            )  # fmt: skip
        elif record["state"] == "running":
            await _problem(
                scope, send, 409, "idempotency-in-progress",
                detail="A request with this Idempotency-Key is still running; retry shortly.",
                headers=[(b"retry-after", b"1")],
            )  # fmt: skip
        else:
            headers = [(str(k).encode(), str(v).encode()) for k, v in record["headers"]]
            headers.append((b"idempotent-replayed", b"true"))
            await send(
                {"type": "http.response.start", "status": record["status"], "headers": headers}
            )
            await send({"type": "http.response.body", "body": base64.b64decode(record["response"])})

    async def _run_and_keep(self, scope: Scope, send: Send, body: bytes, slot: _Slot) -> None:
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        response: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["headers"] = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                    if k.lower() not in _NOT_REPLAYED
                ]
            elif message["type"] == "http.response.body":
                response["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, replay_body, capture)
        finally:
            if 200 <= response["status"] < 500:
                record = {
                    "state": "done", "body": slot.fingerprint, "status": response["status"],
                    "headers": response["headers"],
                    "response": base64.b64encode(response["body"]).decode(),
                }  # fmt: skip
                await slot.redis.set(slot.key, json.dumps(record), ex=TTL_S)
            else:
                await slot.redis.delete(slot.key)


async def _problem(
    scope: Scope,
    send: Send,
    status: int,
    kind: str,
    *,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({
        "type": f"/problems/{kind}", "title": kind.replace("-", " ").capitalize(),
        "status": status, "detail": detail, "instance": scope["path"],
        "request_id": current_request_id(scope),
    }).encode()  # fmt: skip
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()), *(headers or [])],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
