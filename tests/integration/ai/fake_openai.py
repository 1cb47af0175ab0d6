"""A small AI provider on loopback speaking the real APIs: OpenAI chat completions and embeddings
(also as Azure deployments), Anthropic messages and Gemini generateContent. Some keys make it
misbehave; for GOOD_KEY a switchable `mode` does (see MODES)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GOOD_KEY = "sk-good-0123456789abcdefghijklmnop"
SLOW_KEY = "sk-slow-0123456789abcdefghijklmnop"
BIG_KEY = "sk-big-0123456789abcdefghijklmnopq"  # answers with a body of `big_bytes`
REDIRECT_KEY = "sk-redirect-0123456789abcdefghijk"  # answers 307 to `redirect_to`
DRIP_KEY = "sk-drip-0123456789abcdefghijklmno"  # answers a byte every 0.2 s, for 10 s
# Every error body carries this: a tenant must never see the provider's own words.
RAW_BODY_MARKER = "raw-provider-body-Q7X2"

# What GOOD_KEY's answers do, by `FakeProvider.mode`:
MODES = frozenset(
    {
        "ok",  # normal answers
        "unauthorized",  # 401 invalid_api_key, as for an unknown key
        "forbidden",  # 403 permission_denied
        "rate_limited",  # 429 with Retry-After: `retry_after` and x-ratelimit-* headers
        "server_error",  # 500 server_error
        "slow",  # sleeps `slow_s`, then answers normally
        "malformed",  # chat completions: 200 with truncated, non-JSON content
        "no_usage",  # answers normally, without the usage object
        "refusal",  # chat completions: 400 content_policy_violation
    }
)
# Chat completions asking for JSON answer a caption object.
DEFAULT_CAPTION: dict[str, Any] = {
    "caption": "A test caption",
    "alt_text": "Alt text",
    "description": "A detailed description",
    "hashtags": ["#test", "#socialflow"],
    "language": "en",
}
MALFORMED_CONTENT = 'Sure! Here is a caption: {"caption": "A test cap'
IMAGE_PART_TOKENS = 85  # what one image part counts for in prompt_tokens

CaptionFor = Callable[[dict[str, Any]], dict[str, Any]]


def default_caption(request: dict[str, Any]) -> dict[str, Any]:
    """The caption answered when `FakeProvider.caption_for` is None, whatever the request."""
    return copy.deepcopy(DEFAULT_CAPTION)


@dataclass
class FakeProvider:
    host: str
    port: int
    calls: list[dict[str, object]] = field(default_factory=list)
    connections: list[tuple[str, int]] = field(default_factory=list)  # every TCP accept
    redirect_to: str | None = None
    big_bytes: int = 2 * 1024 * 1024
    # Embeddings: this length, unless the request asks for `dimensions`; `wrong_dimension`
    # overrides both (an answer of the wrong length).
    embedding_dimension: int = 1536
    wrong_dimension: int | None = None
    # The caption object (given the request body) of chat completions asking for JSON.
    caption_for: CaptionFor | None = None
    # GOOD_KEY's behaviour (one of MODES), for `mode_times` calls (None: until changed).
    mode: str = "ok"
    mode_times: int | None = None
    retry_after: str = "1"  # seconds, the Retry-After of "rate_limited"
    slow_s: float = 3.0  # the delay of "slow"
    latency_s: float = 0.0  # before every answer, whatever the key or mode
    set_cookie: str | None = None  # a Set-Cookie on every answer (as CDNs in front of APIs)
    # Called with each call's facts before it is answered, on the server's thread: a test
    # looks at the platform while one of its calls waits for an answer.
    on_call: Callable[[dict[str, object]], None] | None = None
    # Requests between their start and their answer sent: now, and the most at once.
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def set_mode(self, mode: str, times: int | None = None) -> None:
        """Behave as `mode` for the next `times` calls with GOOD_KEY (None: until changed)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {sorted(MODES)}")
        with self._lock:
            self.mode = mode
            self.mode_times = times

    def reset(self) -> None:
        """Forget the calls, connections and peak concurrency, and go back to mode "ok".
        Settings (latency_s, caption_for, embedding_dimension…) stay."""
        with self._lock:
            self.calls.clear()
            self.connections.clear()
            self.max_in_flight = self.in_flight
            self.mode = "ok"
            self.mode_times = None

    def _take_mode(self) -> str:
        """The mode of this call, counting it against `mode_times`."""
        with self._lock:
            if self.mode_times is not None and self.mode_times <= 0:
                self.mode, self.mode_times = "ok", None
            mode = self.mode
            if self.mode_times is not None:
                self.mode_times -= 1
                if self.mode_times <= 0:
                    self.mode, self.mode_times = "ok", None
            return mode

    @contextmanager
    def _serving(self) -> Iterator[None]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


@dataclass
class _Reply:
    status: int
    payload: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    provider: FakeProvider
    request_queue_size = 256  # the listen backlog: hundreds of clients connecting at once
    daemon_threads = True

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.provider.connections.append(client_address)
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Keep-alive, as the providers' APIs: a client may send many calls over one connection;
    # and no Nagle delay (as their servers): an answer's body is not held back ~40 ms behind
    # its headers waiting for the client's delayed ACK.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        provider = self.server.provider
        with provider._serving():
            self._serve(provider)

    def _serve(self, provider: FakeProvider) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw or b"{}")
        url = urlsplit(self.path)
        key = self._key(url.query)
        api = _api(url.path)
        mode = provider._take_mode() if api is not None and key == GOOD_KEY else "ok"
        call: dict[str, object] = {
            "path": url.path,
            "model": body.get("model"),
            "key": key,
            "host": self.headers.get("Host"),
            "mode": mode,
            "cookie": self.headers.get("Cookie"),
        }
        if api == "openai":
            call.update(_chat_facts(body))
        elif api == "embeddings":
            call.update(
                input=body.get("input"),
                encoding_format=body.get("encoding_format"),
                dimensions=body.get("dimensions"),
            )
        provider.calls.append(call)
        if provider.on_call is not None:
            provider.on_call(call)
        if provider.latency_s > 0:
            time.sleep(provider.latency_s)
        if api is None:
            self._send(404, {"error": {"message": f"not found {RAW_BODY_MARKER}"}})
        elif key == REDIRECT_KEY and provider.redirect_to:
            self._redirect(provider.redirect_to)
        elif key == BIG_KEY:
            self._send_big(provider.big_bytes)
        elif key == DRIP_KEY:
            self._drip()
        elif key == SLOW_KEY:
            time.sleep(3)
            self._reply(_answer(provider, api, body, url.path, "ok"))
        elif key != GOOD_KEY:
            self._reply(_invalid_key(key))
        else:
            reply = _mode_error(mode, api, key, provider.retry_after)
            if reply is None:
                if mode == "slow":
                    time.sleep(provider.slow_s)
                reply = _answer(provider, api, body, url.path, mode)
            self._reply(reply)

    def _key(self, query: str) -> str:
        for header in ("x-api-key", "api-key", "x-goog-api-key"):
            if self.headers.get(header):
                return str(self.headers[header])
        from_query = parse_qs(query).get("key")
        if from_query:
            return from_query[0]
        return self.headers.get("Authorization", "").removeprefix("Bearer ")

    def _reply(self, reply: _Reply) -> None:
        self._send(reply.status, reply.payload, reply.headers)

    def _send(
        self, status: int, payload: dict[str, object], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.server.provider.set_cookie is not None:
            self.send_header("Set-Cookie", self.server.provider.set_cookie)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_big(self, size: int) -> None:
        # No Content-Length: the body ends when the connection closes, so only counting the
        # bytes as they arrive can stop it.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = b" " * 65536
        try:
            self.wfile.write(b'{"padding": "')
            for _ in range(size // len(chunk) + 1):
                self.wfile.write(chunk)
            self.wfile.write(b'"}')
        except OSError:
            pass  # the client stopped reading, as it should

    def _drip(self) -> None:
        # Every read finishes well within a read timeout; the whole answer never does.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for _ in range(50):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up, as it should


def _api(path: str) -> str | None:
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith("/messages"):
        return "anthropic"
    if path.endswith(":generateContent"):
        return "gemini"
    return None


def _error(
    status: int, message: str, type_: str, code: str | None = None, **extra: object
) -> _Reply:
    error: dict[str, object] = {"message": f"{message} {RAW_BODY_MARKER}", "type": type_}
    if code is not None:
        error["code"] = code
    error.update(extra)
    return _Reply(status, {"error": error})


def _invalid_key(key: str) -> _Reply:
    # Like OpenAI, the error quotes the key it was given.
    return _error(
        401,
        f"Incorrect API key provided: {key}.",
        "invalid_request_error",
        "invalid_api_key",
        param=None,
    )


def _mode_error(mode: str, api: str, key: str, retry_after: str) -> _Reply | None:
    """The error answered in `mode`; None when the mode answers (perhaps oddly) with 200."""
    if mode in ("ok", "slow", "malformed", "no_usage"):
        return None
    if mode == "unauthorized":
        return _invalid_key(key)
    if mode == "forbidden":
        return _error(
            403,
            "You are not allowed to use this model.",
            "permission_denied",
            "permission_denied",
        )
    if mode == "rate_limited":
        reply = _error(
            429,
            "Rate limit reached for requests. Please try again in 1s.",
            "requests",
            "rate_limit_exceeded",
        )
        reply.headers = {
            "Retry-After": retry_after,
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
        }
        return reply
    if mode == "server_error":
        return _error(500, "The server had an error while processing your request.", "server_error")
    if mode == "refusal":
        if api != "openai":
            return None
        return _error(
            400,
            "Your request was rejected as a result of our safety system. Your prompt may "
            "contain text that is not allowed by our safety system.",
            "invalid_request_error",
            "content_policy_violation",
            param=None,
        )
    return _error(500, f"The fake provider has no mode {mode!r}.", "fake_misconfigured")


def _answer(provider: FakeProvider, api: str, body: dict[str, Any], path: str, mode: str) -> _Reply:
    if api == "embeddings":
        reply = _embeddings_answer(provider, body)
    elif api == "anthropic":
        reply = _Reply(
            200,
            {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "test"),
                "content": [{"type": "text", "text": "p"}],
                "stop_reason": "max_tokens",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        )
    elif api == "gemini":
        reply = _Reply(
            200,
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": "p"}], "role": "model"},
                        "finishReason": "MAX_TOKENS",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 1,
                    "candidatesTokenCount": 1,
                    "totalTokenCount": 2,
                },
                "modelVersion": path.rsplit("/", 1)[-1].split(":", 1)[0],
            },
        )
    else:
        reply = _Reply(200, _chat_answer(provider, body, mode))
    if mode == "no_usage":
        reply.payload.pop("usage", None)
        reply.payload.pop("usageMetadata", None)
    return reply


# --- chat completions


def _chat_answer(provider: FakeProvider, body: dict[str, Any], mode: str) -> dict[str, object]:
    if mode == "malformed":
        content, finish_reason = MALFORMED_CONTENT, "stop"
    elif _wants_json(body):
        caption_for = provider.caption_for or default_caption
        content, finish_reason = json.dumps(caption_for(body)), "stop"
    else:
        content, finish_reason = "p", "length"
    prompt_tokens = _prompt_tokens(body.get("messages"))
    completion_tokens = _words(content)
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test"),
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _chat_facts(body: dict[str, Any]) -> dict[str, object]:
    """What a test may check about a chat completion request."""
    messages = body.get("messages")
    images = [part for part in _parts(messages) if part.get("type") == "image_url"]
    urls = [url for part in images if (url := _image_url(part)) is not None]
    return {
        "messages": messages,
        "response_format": body.get("response_format"),
        "max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
        "has_image": bool(images),
        "image_url": urls[0] if urls else None,
    }


def _parts(messages: object) -> Iterator[dict[str, Any]]:
    """Every content part of the messages; a string content is one text part."""
    if not isinstance(messages, list):
        return
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield {"type": "text", "text": content}
        elif isinstance(content, list):
            yield from (part for part in content if isinstance(part, dict))


def _image_url(part: dict[str, Any]) -> str | None:
    image_url = part.get("image_url")
    if isinstance(image_url, dict):
        image_url = image_url.get("url")
    return image_url if isinstance(image_url, str) else None


_JSON_WORD = re.compile(r"\bjson\b", re.IGNORECASE)


def _wants_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_schema",
        "json_object",
    ):
        return True
    return any(
        part.get("type") == "text" and _JSON_WORD.search(str(part.get("text", "")))
        for part in _parts(body.get("messages"))
    )


def _prompt_tokens(messages: object) -> int:
    """A rough count: IMAGE_PART_TOKENS per image part, and the words of the text parts."""
    tokens = 0
    for part in _parts(messages):
        if part.get("type") == "image_url":
            tokens += IMAGE_PART_TOKENS
        elif part.get("type") == "text":
            tokens += _words(str(part.get("text", "")))
    return tokens


def _words(text: str) -> int:
    return len(text.split())


# --- embeddings

_WORD = re.compile(r"\w+")


# OpenAI's embedding models answer vectors of these lengths unless asked for `dimensions`;
# other models answer `FakeProvider.embedding_dimension`.
NATIVE_DIMENSIONS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536}


def fake_embedding(text: str, dimension: int) -> list[float]:
    """A bag-of-words hashing embedding: each lowercase word adds ±1 to one of `dimension`
    buckets (both picked by its BLAKE2b hash), then the vector is scaled to length 1. Texts
    sharing words are close in cosine distance; unrelated texts are nearly orthogonal."""
    vector = [0.0] * dimension
    for word in _WORD.findall(text.lower()) or [text]:
        number = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vector[(number >> 1) % dimension] += 1.0 if number & 1 else -1.0
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0:  # the words cancelled out
        vector[0], norm = 1.0, 1.0
    return [value / norm for value in vector]


def _embeddings_answer(provider: FakeProvider, body: dict[str, Any]) -> _Reply:
    given = body.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return _error(
            400,
            "'input' must be a string or a non-empty list of strings.",
            "invalid_request_error",
            param="input",
        )
    dimension = body.get("dimensions")
    if dimension is None:
        dimension = NATIVE_DIMENSIONS.get(str(body.get("model")), provider.embedding_dimension)
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        return _error(
            400,
            "'dimensions' must be a positive integer.",
            "invalid_request_error",
            param="dimensions",
        )
    if provider.wrong_dimension is not None:
        dimension = provider.wrong_dimension
    as_base64 = body.get("encoding_format") == "base64"
    data: list[dict[str, object]] = []
    for index, text in enumerate(texts):
        vector = fake_embedding(text, dimension)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": _base64_floats(vector) if as_base64 else vector,
            }
        )
    tokens = max(1, sum(_words(text) for text in texts))
    return _Reply(
        200,
        {
            "object": "list",
            "data": data,
            "model": body.get("model", "test"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


def _base64_floats(vector: list[float]) -> str:
    """As OpenAI sends them: float32, little-endian, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@contextmanager
def fake_provider(host: str = "127.0.0.1") -> Iterator[FakeProvider]:
    """A fake provider listening on `host` (any loopback address) on a free port."""
    server = _Server((host, 0), _Handler)
    server.provider = FakeProvider(host, server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.provider
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def fake_openai_server() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """Yield (base URL, calls received)."""
    with fake_provider() as provider:
        yield provider.base_url, provider.calls


def loopback_alias_available(host: str) -> bool:
    """Whether this machine can listen on another loopback address (Linux: all of 127/8)."""
    try:
        with socket.socket() as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True
