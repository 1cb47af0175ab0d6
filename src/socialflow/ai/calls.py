"""AI calls with a tenant's credentials: litellm, with the guarded outbound client injected.

litellm chooses the HTTP path from the provider, the model and its own settings, and each path
takes a client of its own kind through `client=`: an `AsyncOpenAI` / `AsyncAzureOpenAI` (OpenAI,
OpenAI-compatible, Azure) or an `AsyncHTTPHandler` (Anthropic, Gemini). A client of the wrong
kind is silently replaced by litellm's own, unguarded one, so paths that would take another kind
(the Responses API bridge, litellm's experimental OpenAI handler) are refused for tenant base URLs.
"""

from __future__ import annotations

import asyncio
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpx
import structlog

from socialflow.ai.credentials import ProviderCredentials
from socialflow.ai.providers import Provider, litellm_model
from socialflow.lib.outbound import OutboundError, OutboundPolicy, Resolver
from socialflow.lib.outbound_http import guarded_client, guarded_transport
from socialflow.settings import Settings

log = structlog.get_logger(__name__)

# Embeddings asked for as base64 (captions.embedding) arrive as strings where litellm's response
# model declares float lists; dumping it warns on every call, about a value that is right.
warnings.filterwarnings(
    "ignore", message="Pydantic serializer warnings", category=UserWarning, module="pydantic.main"
)

_OPENAI_SDK = {Provider.OPENAI, Provider.OPENAI_COMPATIBLE}


class UnguardedPath(OutboundError):
    """litellm would reach the tenant's base URL through a client the guard cannot give it."""

    kind = "provider_path_not_guarded"


# What a tenant is told: a fixed sentence per kind of failure, never the provider's own words.
MESSAGES = {
    "url_not_allowed": "The provider's address is not allowed: it is not a public address.",
    "too_many_redirects": "The provider redirected the call more often than allowed.",
    "response_too_large": "The provider's answer was larger than the platform accepts.",
    "response_not_accepted": "The provider answered in a form the platform does not accept.",
    "provider_path_not_guarded": (
        "This model cannot be used with a custom base URL on this platform."
    ),
    "timeout": "The provider did not answer in time.",
    "authentication_error": "The provider did not accept the key.",
    "permission_denied": "The provider refused this key access to the model.",
    "not_found": "The provider does not know this model or endpoint.",
    "rate_limited": "The provider is rate limiting this key.",
    "bad_request": "The provider rejected the request; check the model name and API version.",
    "connection_error": "The provider could not be reached.",
    "provider_error": "The provider answered with an error.",
    "content_refused": "The provider refused this content under its usage policy.",
}
# What a failed call means for the work that made it.
RETRYABLE = frozenset(
    {"timeout", "rate_limited", "connection_error", "provider_error", "too_many_redirects"}
)
KEY_REFUSED = frozenset({"authentication_error", "permission_denied"})
# Error codes of a provider's content refusal that litellm leaves a plain BadRequestError
# (OpenAI's 400 content_policy_violation; Azure's content_filter).
_CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
_BY_STATUS = {
    400: "bad_request",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found",
    422: "bad_request",
    429: "rate_limited",
}


@dataclass(frozen=True)
class CallFailure:
    """A failed call as a tenant may see it: a type, the provider's status, a fixed sentence."""

    error_type: str
    status_code: int | None
    message: str


async def acompletion(
    credentials: ProviderCredentials,
    settings: Settings,
    *,
    model: str,
    messages: list[dict[str, Any]],
    timeout_s: float,
    resolver: Resolver | None = None,
    **params: Any,
) -> Any:
    """`litellm.acompletion` with `credentials`, through the guard, each answer within
    `timeout_s`. Failures are raised as they come; `summarise()` turns one into what a tenant
    may see."""
    return await _call_litellm(
        "acompletion",
        credentials,
        settings,
        model,
        timeout_s,
        resolver,
        messages=messages,
        **params,
    )


async def aembedding(
    credentials: ProviderCredentials,
    settings: Settings,
    *,
    model: str,
    input: list[str],
    timeout_s: float,
    resolver: Resolver | None = None,
    **params: Any,
) -> Any:
    """`litellm.aembedding` with `credentials`, through the guard, as `acompletion`."""
    return await _call_litellm(
        "aembedding", credentials, settings, model, timeout_s, resolver, input=input, **params
    )


async def _call_litellm(  # noqa: PLR0917 - the two public calls' arguments, passed on
    function: str,
    credentials: ProviderCredentials,
    settings: Settings,
    model: str,
    timeout_s: float,
    resolver: Resolver | None,
    **params: Any,
) -> Any:
    import litellm  # heavy: imported on first use

    litellm.suppress_debug_info = True
    name = litellm_model(credentials.provider, model)
    _refuse_unguarded_paths(credentials, name)
    async with litellm_client(credentials, settings, resolver=resolver) as client:
        # `timeout_s` bounds each read and, in the guarded transport, the whole answer.
        return await getattr(litellm, function)(
            model=name,
            api_key=credentials.api_key,
            api_base=credentials.base_url,
            api_version=credentials.api_version,
            timeout=timeout_s,
            num_retries=0,
            max_retries=0,
            client=client,
            **params,
        )


@asynccontextmanager
async def litellm_client(
    credentials: ProviderCredentials, settings: Settings, *, resolver: Resolver | None = None
) -> AsyncIterator[Any]:
    """The `client=` for litellm calls with `credentials`: guarded, of the provider path's kind.
    None for the platform's own keys: their endpoints are the operator's choice, not a tenant's."""
    import openai
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    if credentials.source != "tenant":
        yield None
        return
    origin = credentials.base_url or f"provider:{credentials.provider}"  # its default endpoint
    async with _guarded_http(settings, origin, resolver) as (http, transport):
        # The SDK is typed for httpx2 and accepts an httpx client as well (as litellm passes).
        sdk_http: Any = http
        if credentials.provider in _OPENAI_SDK:
            yield openai.AsyncOpenAI(
                api_key=credentials.api_key,
                base_url=credentials.base_url,
                http_client=sdk_http,
                max_retries=0,
            )
        elif credentials.provider is Provider.AZURE:
            if credentials.base_url is None:
                raise UnguardedPath("an Azure key needs its endpoint")
            yield openai.AsyncAzureOpenAI(
                api_key=credentials.api_key,
                azure_endpoint=credentials.base_url,
                api_version=credentials.api_version or _azure_default_version(),
                http_client=sdk_http,
                max_retries=0,
            )
        else:
            # The handler rebuilds its client around `transport` after a connection error.
            handler = AsyncHTTPHandler(
                transport=transport, follow_redirects=http.follow_redirects, timeout=http.timeout
            )
            handler.client = http
            yield handler


# Connections to a provider's origin are kept and reused by the calls of every tenant that has
# it (connections carry no credentials: each request has its key), per event loop: a new TCP
# and TLS handshake per call cost more CPU than the call's own work. Each kept client holds one
# connection and serves one call at a time (checked out, then back to its origin's idle list):
# one httpx pool shared by many concurrent calls costs more CPU in its bookkeeping than the
# handshakes it saves. Bounded per origin and in origins (least recently used closed first).
_IDLE: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop,
    OrderedDict[tuple[str, OutboundPolicy], list[tuple[httpx.AsyncClient, Any, float]]],
] = weakref.WeakKeyDictionary()
SHARED_ORIGINS = 64
IDLE_PER_ORIGIN = 64
IDLE_EXPIRY_S = 30.0
_ONE_CONNECTION = httpx.Limits(
    max_connections=1, max_keepalive_connections=1, keepalive_expiry=IDLE_EXPIRY_S
)
_NO_COOKIES = DefaultCookiePolicy(allowed_domains=[])


@asynccontextmanager
async def _guarded_http(
    settings: Settings, origin: str, resolver: Resolver | None
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """A guarded client (and its transport) for one call to `origin` (a base URL, or the
    provider's default endpoint): an idle kept one, else a new one kept after the call; one
    of its own, closed after, when the call brings its own resolver (tests). Kept clients
    accept no cookies: a cookie set for one tenant's call must never ride on another's."""
    if resolver is not None:
        transport = guarded_transport(settings, resolver=resolver)
        async with guarded_client(settings, transport=transport) as http:
            yield http, transport
        return
    # A connection made under one policy is never used under another (settings differ).
    key = (origin, OutboundPolicy.from_settings(settings))
    origins = _IDLE.setdefault(asyncio.get_running_loop(), OrderedDict())
    idle = origins.setdefault(key, [])
    origins.move_to_end(key)
    while len(origins) > SHARED_ORIGINS:
        _, dropped = origins.popitem(last=False)
        for client, _, _ in dropped:
            _close_later(client)
    now = time.monotonic()
    while idle and now - idle[0][2] > IDLE_EXPIRY_S:  # the oldest first: their server hung up
        _close_later(idle.pop(0)[0])
    found = None
    while idle and found is None:
        client, transport, _ = idle.pop()
        found = None if client.is_closed else (client, transport)
    if found is None:
        transport = guarded_transport(settings, limits=_ONE_CONNECTION)
        client = guarded_client(settings, transport=transport)
        client.cookies.jar.set_policy(_NO_COOKIES)
        found = (client, transport)
    try:
        yield found
    except BaseException:
        _close_later(found[0])  # its connection may be mid-answer
        raise
    kept = origins.get(key) is idle and len(idle) < IDLE_PER_ORIGIN
    if kept and not found[0].is_closed:
        found[0].cookies.clear()
        idle.append((*found, time.monotonic()))
    else:
        _close_later(found[0])


_closing: set[asyncio.Future[None]] = set()


def _close_later(client: httpx.AsyncClient) -> None:
    closing = asyncio.ensure_future(client.aclose())
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


def _azure_default_version() -> str:
    import litellm

    return str(litellm.AZURE_DEFAULT_API_VERSION)


def _refuse_unguarded_paths(credentials: ProviderCredentials, name: str) -> None:
    if credentials.base_url is None:
        return  # the provider's own endpoint: not a tenant-chosen URL
    from litellm.responses.bridge_check import responses_api_bridge_check
    from litellm.secret_managers.main import get_secret_bool

    prefix, model = name.split("/", 1)
    if credentials.provider in _OPENAI_SDK and get_secret_bool(
        "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"
    ):
        raise UnguardedPath("litellm's experimental OpenAI handler takes no OpenAI SDK client")
    info, _ = responses_api_bridge_check(
        model=model, custom_llm_provider=prefix, api_base=credentials.base_url
    )
    if info.get("mode") == "responses":
        raise UnguardedPath(f"{name!r} goes through litellm's Responses API bridge")


def summarise(exc: BaseException) -> CallFailure:
    """What a tenant may see of a failed call: never the provider's words (they can quote the
    key, internal addresses or anything the URL's server chose to say)."""
    error_type, status = _classify(exc)
    return CallFailure(error_type, status, MESSAGES[error_type])


def retry_after_s(exc: BaseException) -> float | None:
    """The provider's `Retry-After` (seconds or an HTTP date) on a failed call, if it sent one."""
    from email.utils import parsedate_to_datetime

    for link in _chain(exc):
        response = getattr(link, "response", None)
        headers = getattr(response, "headers", None) or getattr(
            link, "litellm_response_headers", None
        )
        value = headers.get("retry-after") if headers is not None else None
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            return max(0.0, when.timestamp() - time.time())
    return None


def _classify(exc: BaseException) -> tuple[str, int | None]:  # noqa: PLR0911 - one per kind
    from litellm.exceptions import APIConnectionError, ContentPolicyViolationError, Timeout

    chain = list(_chain(exc))
    for link in chain:
        if isinstance(link, OutboundError):
            return link.kind, None
    if any(
        isinstance(link, ContentPolicyViolationError)
        or (isinstance(code := getattr(link, "code", None), str) and code in _CONTENT_POLICY_CODES)
        for link in chain
    ):
        return "content_refused", getattr(exc, "status_code", None)
    if any(isinstance(link, httpx.TooManyRedirects) for link in chain):
        return "too_many_redirects", None
    timeouts = (TimeoutError, Timeout, httpx.TimeoutException)
    if any(isinstance(link, timeouts) for link in chain):
        return "timeout", None
    if isinstance(exc, APIConnectionError) or any(
        isinstance(link, httpx.TransportError) for link in chain
    ):
        return "connection_error", None
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 300 <= status <= 599:
        return "provider_error", None
    return _BY_STATUS.get(status, "provider_error"), status


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception it was raised from or while handling."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        link = todo.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        todo.extend(e for e in (link.__cause__, link.__context__) if e is not None)


def log_failure(credentials: ProviderCredentials, failure: CallFailure, exc: BaseException) -> None:
    # The exception's text can quote the key or the provider's body: only its class is logged.
    log.info(
        "ai.call_failed",
        provider=credentials.provider.value,
        source=credentials.source,
        error_type=failure.error_type,
        status_code=failure.status_code,
        exception_class=type(exc).__name__,
    )
