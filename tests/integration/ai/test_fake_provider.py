"""The fake provider's embeddings, captions, modes and concurrency, through the real SDK."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from tests.integration.ai.fake_openai import (
    DEFAULT_CAPTION,
    GOOD_KEY,
    RAW_BODY_MARKER,
    FakeProvider,
    fake_embedding,
    fake_provider,
)

IMAGE_URL = "https://cdn.example.test/photo.jpg"
CAPTION_SCHEMA: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {
        "name": "caption",
        "schema": {"type": "object", "properties": {"caption": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeProvider]:
    with fake_provider() as provider:
        yield provider


@pytest.fixture
def provider(shared: FakeProvider) -> Iterator[FakeProvider]:
    shared.reset()
    yield shared
    shared.reset()
    shared.latency_s = 0.0
    shared.caption_for = None
    shared.wrong_dimension = None


@pytest.fixture
def client(provider: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=provider.base_url, api_key=GOOD_KEY, max_retries=0)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _post(provider: FakeProvider, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{provider.base_url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {GOOD_KEY}"},
        timeout=5,
    )


def _chat(provider: FakeProvider) -> httpx.Response:
    return _post(
        provider,
        "/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )


def test_embeddings_as_floats(client: openai.OpenAI, provider: FakeProvider) -> None:
    answer = client.embeddings.create(
        model="text-embedding-3-small", input=["red apple pie", "sky"], encoding_format="float"
    )

    assert [item.index for item in answer.data] == [0, 1]
    assert answer.data[0].embedding == pytest.approx(fake_embedding("red apple pie", 1536))
    assert len(answer.data[1].embedding) == 1536
    assert answer.model == "text-embedding-3-small"
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == 4
    assert provider.calls[-1]["encoding_format"] == "float"


def test_embeddings_by_default_travel_as_base64(
    client: openai.OpenAI, provider: FakeProvider
) -> None:
    answer = client.embeddings.create(model="text-embedding-3-small", input="red apple pie")

    assert provider.calls[-1]["encoding_format"] == "base64"  # what the SDK asks for
    vector = answer.data[0].embedding
    assert vector == pytest.approx(fake_embedding("red apple pie", 1536), abs=1e-6)
    assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-5)


def test_embeddings_are_deterministic_and_close_for_shared_words(
    client: openai.OpenAI,
) -> None:
    texts = ["The cat sat on the mat", "the cat sat on a MAT", "Quarterly revenue grew fast"]
    first = client.embeddings.create(model="e", input=texts, encoding_format="float")
    again = client.embeddings.create(model="e", input=texts, encoding_format="float")
    cat, similar_cat, revenue = (item.embedding for item in first.data)

    assert [item.embedding for item in again.data] == [cat, similar_cat, revenue]
    assert _cosine(cat, similar_cat) > 0.7
    assert abs(_cosine(cat, revenue)) < 0.3


def test_embedding_dimensions(client: openai.OpenAI, provider: FakeProvider) -> None:
    asked = client.embeddings.create(model="e", input="hello", dimensions=256)
    provider.wrong_dimension = 7
    wrong = client.embeddings.create(model="e", input="hello", dimensions=256)

    assert len(asked.data[0].embedding) == 256
    assert len(wrong.data[0].embedding) == 7


def test_a_json_schema_request_with_an_image_answers_a_caption(
    client: openai.OpenAI, provider: FakeProvider
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You write captions."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Caption this photo"},
                {"type": "image_url", "image_url": {"url": IMAGE_URL}},
            ],
        },
    ]
    answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        response_format=CAPTION_SCHEMA,
        max_completion_tokens=300,
    )

    content = answer.choices[0].message.content
    assert content is not None
    assert json.loads(content) == DEFAULT_CAPTION
    call = provider.calls[-1]
    assert call["has_image"] is True
    assert call["image_url"] == IMAGE_URL
    assert call["max_tokens"] == 300
    assert call["response_format"] == CAPTION_SCHEMA
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 85 + 3 + 3
    assert answer.usage.completion_tokens == len(content.split())
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_the_caption_comes_from_caption_for(client: openai.OpenAI, provider: FakeProvider) -> None:
    def caption_for(request: dict[str, Any]) -> dict[str, Any]:
        return {**DEFAULT_CAPTION, "caption": f"for {request['model']}"}

    provider.caption_for = caption_for
    answer = client.chat.completions.create(
        model="captioner",
        messages=[{"role": "user", "content": "Answer in JSON: a caption"}],
    )

    content = answer.choices[0].message.content
    assert content is not None
    assert json.loads(content)["caption"] == "for captioner"
    assert provider.calls[-1]["has_image"] is False
    assert provider.calls[-1]["image_url"] is None


def test_a_plain_chat_answers_as_before(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "ping"}], max_tokens=1
    )

    assert answer.choices[0].message.content == "p"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1, 1)


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("unauthorized", 401, "invalid_api_key"),
        ("forbidden", 403, "permission_denied"),
        ("rate_limited", 429, "rate_limit_exceeded"),
        ("server_error", 500, None),
        ("refusal", 400, "content_policy_violation"),
    ],
)
def test_error_modes(provider: FakeProvider, mode: str, status: int, code: str | None) -> None:
    provider.set_mode(mode)

    answer = _chat(provider)

    assert answer.status_code == status
    error = answer.json()["error"]
    assert RAW_BODY_MARKER in error["message"]
    assert error.get("code") == code
    assert provider.mode == mode  # until changed
    assert provider.calls[-1]["mode"] == mode


def test_rate_limited_says_when_to_retry(provider: FakeProvider) -> None:
    provider.retry_after = "7"
    provider.set_mode("rate_limited")
    try:
        answer = _post(provider, "/embeddings", {"model": "e", "input": "x"})
    finally:
        provider.retry_after = "1"

    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"
    assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    assert answer.headers["x-ratelimit-reset-requests"] == "1s"


def test_the_sdk_raises_the_matching_errors(client: openai.OpenAI, provider: FakeProvider) -> None:
    for mode, error in [
        ("unauthorized", openai.AuthenticationError),
        ("forbidden", openai.PermissionDeniedError),
        ("rate_limited", openai.RateLimitError),
        ("server_error", openai.InternalServerError),
        ("refusal", openai.BadRequestError),
    ]:
        provider.set_mode(mode)
        with pytest.raises(error):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_malformed_and_no_usage(client: openai.OpenAI, provider: FakeProvider) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "A caption"}]
    provider.set_mode("malformed")
    malformed = client.chat.completions.create(
        model="m", messages=messages, response_format={"type": "json_object"}
    )
    provider.set_mode("no_usage")
    no_usage = client.chat.completions.create(model="m", messages=messages)
    embedded = client.embeddings.create(model="e", input="x")

    content = malformed.choices[0].message.content
    assert content is not None
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    assert malformed.usage is not None
    assert malformed.usage.completion_tokens > 0
    assert no_usage.choices[0].message.content == "p"
    assert no_usage.usage is None
    assert embedded.data  # embeddings answer too, just without usage
    assert provider.calls[-1]["mode"] == "no_usage"


def test_slow_mode_answers_late(client: openai.OpenAI, provider: FakeProvider) -> None:
    provider.slow_s = 0.3
    provider.set_mode("slow")
    try:
        started = time.monotonic()
        answer = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
        elapsed = time.monotonic() - started
    finally:
        provider.slow_s = 3.0

    assert elapsed >= 0.3
    assert answer.choices[0].message.content == "p"


def test_a_mode_lasts_mode_times_calls(provider: FakeProvider) -> None:
    provider.set_mode("server_error", times=2)

    statuses = [_chat(provider).status_code for _ in range(3)]

    assert statuses == [500, 500, 200]
    assert (provider.mode, provider.mode_times) == ("ok", None)


def test_the_sdk_retries_past_a_rate_limit(provider: FakeProvider) -> None:
    provider.retry_after = "0.01"
    provider.set_mode("rate_limited", times=1)
    retrying = openai.OpenAI(base_url=provider.base_url, api_key=GOOD_KEY, max_retries=2)
    try:
        answer = retrying.embeddings.create(model="e", input="x")
    finally:
        provider.retry_after = "1"

    assert len(answer.data[0].embedding) == 1536
    assert [call["mode"] for call in provider.calls] == ["rate_limited", "ok"]


def test_modes_leave_other_keys_alone(provider: FakeProvider) -> None:
    provider.set_mode("server_error")

    answer = httpx.post(
        f"{provider.base_url}/chat/completions",
        json={"model": "m", "messages": []},
        headers={"Authorization": "Bearer sk-someone-else"},
    )

    assert answer.status_code == 401
    assert provider.mode_times is None
    assert provider.calls[-1]["mode"] == "ok"


@pytest.mark.parametrize(("clients", "latency_s"), [(20, 0.2), (100, 0.5)])
def test_concurrent_requests_overlap(
    provider: FakeProvider, clients: int, latency_s: float
) -> None:
    provider.latency_s = latency_s  # long enough for every client to be in before one answer
    start = threading.Barrier(clients)
    statuses: list[int] = []
    # One client (one TLS context, a connection per thread) so that starting is cheap.
    http = httpx.Client(
        headers={"Authorization": f"Bearer {GOOD_KEY}"},
        limits=httpx.Limits(max_connections=clients),
        timeout=5,
    )

    def call() -> None:
        start.wait()
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        statuses.append(http.post(f"{provider.base_url}/chat/completions", json=body).status_code)

    threads = [threading.Thread(target=call) for _ in range(clients)]
    with http:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started

    assert statuses == [200] * clients
    assert provider.max_in_flight == clients
    assert elapsed < 2.0  # served together, not one after another
    deadline = time.monotonic() + 1
    while provider.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert provider.in_flight == 0


def test_reset(client: openai.OpenAI, provider: FakeProvider) -> None:
    client.embeddings.create(model="e", input="x")
    provider.set_mode("forbidden", times=5)
    # The answer can reach the client before the server's thread has counted the call done.
    deadline = time.monotonic() + 5
    while provider.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)

    provider.reset()

    assert provider.calls == []
    assert provider.connections == []
    assert (provider.mode, provider.mode_times, provider.max_in_flight) == ("ok", None, 0)


def test_set_mode_refuses_unknown_modes(provider: FakeProvider) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        provider.set_mode("sulking")
