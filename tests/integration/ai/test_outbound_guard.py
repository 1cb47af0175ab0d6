"""The guarded outbound layer against real loopback servers: addresses checked on every
connection and pinned, redirects re-checked and bounded, answers bounded, every AI provider path
through it. DNS is the outside world, so names resolve through an injected resolver."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from socialflow.ai.calls import acompletion
from socialflow.ai.credentials import ProviderCredentials
from socialflow.ai.key_check import try_credentials
from socialflow.ai.providers import Provider
from socialflow.lib.outbound import (
    IPAddress,
    OutboundRefused,
    OutboundResponseTooLarge,
    OutboundTimeout,
    OutboundTooManyRedirects,
    check_outbound_url,
)
from socialflow.lib.outbound_http import guarded_client
from socialflow.lib.problems import Problem
from socialflow.settings import Settings
from tests.integration.ai.fake_openai import (
    BIG_KEY,
    DRIP_KEY,
    GOOD_KEY,
    REDIRECT_KEY,
    FakeProvider,
    fake_provider,
    loopback_alias_available,
)

OTHER_LOOPBACK = "127.0.0.2"


class ScriptedDNS:
    """A resolver whose answers the test scripts, one list per lookup (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = [[ipaddress.ip_address(a) for a in answer] for answer in answers]
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append((host, port))
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


def _allowing(settings: Settings, *networks: str, **more: object) -> Settings:
    return settings.model_copy(
        update={"outbound_allowed_networks": networks, "outbound_allow_http": True, **more}
    )


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with fake_provider() as server:
        yield server


@pytest.fixture
def other_provider() -> Iterator[FakeProvider]:
    """A second server on another loopback address: what a redirect or DNS change points at."""
    if not loopback_alias_available(OTHER_LOOPBACK):
        pytest.skip(f"cannot listen on {OTHER_LOOPBACK} here")
    with fake_provider(OTHER_LOOPBACK) as server:
        yield server


def _chat(model: str = "llama3") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "ping"}]}


async def test_a_redirect_to_an_address_not_allowed_is_refused_and_never_connected(
    settings: Settings, provider: FakeProvider, other_provider: FakeProvider
) -> None:
    provider.redirect_to = f"{other_provider.base_url}/chat/completions"
    allowed = _allowing(settings, f"{provider.host}/32")
    async with guarded_client(allowed) as client:
        with pytest.raises(OutboundRefused):
            await client.post(
                f"{provider.base_url}/chat/completions",
                json=_chat(),
                headers={"Authorization": f"Bearer {REDIRECT_KEY}"},
            )
    assert len(provider.calls) == 1
    assert other_provider.connections == []


async def test_redirects_are_followed_only_up_to_the_bound(
    settings: Settings, provider: FakeProvider
) -> None:
    provider.redirect_to = f"{provider.base_url}/chat/completions"  # a loop
    allowed = _allowing(settings, f"{provider.host}/32", outbound_max_redirects=2)
    async with guarded_client(allowed) as client:
        with pytest.raises((httpx.TooManyRedirects, OutboundTooManyRedirects)):
            await client.post(
                f"{provider.base_url}/chat/completions",
                json=_chat(),
                headers={"Authorization": f"Bearer {REDIRECT_KEY}"},
            )
    assert len(provider.calls) == 3  # the request and two hops


async def test_a_redirect_to_another_origin_carries_no_credentials(
    settings: Settings, provider: FakeProvider, other_provider: FakeProvider
) -> None:
    provider.redirect_to = f"{other_provider.base_url}/chat/completions"
    allowed = _allowing(settings, f"{provider.host}/32", f"{other_provider.host}/32")
    async with guarded_client(allowed) as client:
        await client.post(
            f"{provider.base_url}/chat/completions",
            json=_chat(),
            headers={
                "Authorization": f"Bearer {REDIRECT_KEY}",
                "x-api-key": REDIRECT_KEY,
                "api-key": REDIRECT_KEY,
                "x-goog-api-key": REDIRECT_KEY,
            },
        )
    assert provider.calls[-1]["key"] == REDIRECT_KEY
    assert other_provider.calls[-1]["key"] == ""  # followed, without any credential header


async def test_an_answer_larger_than_the_bound_is_cut_off(
    settings: Settings, provider: FakeProvider
) -> None:
    allowed = _allowing(settings, f"{provider.host}/32", outbound_max_response_bytes=64 * 1024)
    async with guarded_client(allowed) as client:
        with pytest.raises(OutboundResponseTooLarge):  # no Content-Length: counted while read
            await client.post(
                f"{provider.base_url}/chat/completions",
                json=_chat(),
                headers={"Authorization": f"Bearer {BIG_KEY}"},
            )
    async with guarded_client(allowed, max_response_bytes=100) as client:
        with pytest.raises(OutboundResponseTooLarge):  # announced: refused before reading
            await client.post(
                f"{provider.base_url}/chat/completions",
                json=_chat(),
                headers={"Authorization": f"Bearer {GOOD_KEY}"},
            )


async def test_an_answer_dripping_in_slower_than_the_time_budget_is_stopped(
    settings: Settings, provider: FakeProvider
) -> None:
    allowed = _allowing(settings, f"{provider.host}/32")
    async with guarded_client(allowed, timeout=1.0) as client:
        with pytest.raises(OutboundTimeout):
            await client.post(
                f"{provider.base_url}/chat/completions",
                json=_chat(),
                headers={"Authorization": f"Bearer {DRIP_KEY}"},
            )


async def test_a_name_connects_to_the_address_it_was_checked_at_keeping_the_host_header(
    settings: Settings, provider: FakeProvider
) -> None:
    # "ai.tenant.test" resolves nowhere but through the scripted resolver: the connection
    # reaching the fake proves nothing resolved the name a second time.
    dns = ScriptedDNS([provider.host])
    url = f"http://ai.tenant.test:{provider.port}/v1/chat/completions"
    async with guarded_client(_allowing(settings, f"{provider.host}/32"), resolver=dns) as client:
        answer = await client.post(
            url, json=_chat(), headers={"Authorization": f"Bearer {GOOD_KEY}"}
        )
    assert answer.status_code == 200
    assert dns.lookups == [("ai.tenant.test", provider.port)]
    assert provider.calls[-1]["host"] == f"ai.tenant.test:{provider.port}"


async def test_a_dns_answer_that_changes_after_saving_is_refused_at_call_time(
    settings: Settings, provider: FakeProvider
) -> None:
    # Public when the tenant saves the URL, then the name is re-pointed at an internal address.
    dns = ScriptedDNS(["93.184.215.14"], [provider.host])
    base_url = f"http://ai.tenant.test:{provider.port}/v1"
    policy = _allowing(settings)  # no private network allowed
    assert await check_outbound_url(base_url, policy, resolver=dns) == base_url
    credentials = ProviderCredentials(
        Provider.OPENAI_COMPATIBLE, GOOD_KEY, "tenant", base_url=base_url
    )
    outcome = await try_credentials(credentials, "llama3", policy, resolver=dns)
    assert (outcome["ok"], outcome["error_type"]) == (False, "url_not_allowed")
    assert len(dns.lookups) == 2  # checked again when calling
    assert provider.connections == []  # and never connected


PROVIDER_PATHS = [
    (Provider.OPENAI, "/v1", "gpt-4o-mini", None),
    (Provider.OPENAI_COMPATIBLE, "/v1", "llama3", None),
    (Provider.AZURE, "", "caption-deployment", "2024-10-21"),
    (Provider.ANTHROPIC, "", "claude-3-5-haiku-latest", None),
    (Provider.GEMINI, "/v1beta", "gemini-1.5-flash", None),
]


@pytest.mark.parametrize(("kind", "path", "model", "version"), PROVIDER_PATHS)
async def test_every_provider_path_goes_through_the_guard(
    settings: Settings,
    provider: FakeProvider,
    kind: Provider,
    path: str,
    model: str,
    version: str | None,
) -> None:
    credentials = ProviderCredentials(kind, GOOD_KEY, "tenant", provider.origin + path, version)
    allowed = _allowing(settings, f"{provider.host}/32")
    reached = await try_credentials(credentials, model, allowed)
    assert reached["ok"] is True, reached
    assert provider.calls[-1]["key"] == GOOD_KEY
    # The same call where the operator allows nothing private: the guard refuses it and no
    # other client of litellm's connects instead.
    connections = len(provider.connections)
    refused = await try_credentials(credentials, model, _allowing(settings))
    assert (refused["ok"], refused["error_type"]) == (False, "url_not_allowed")
    assert len(provider.connections) == connections


async def test_a_model_litellm_routes_around_the_guard_is_refused_for_a_base_url(
    settings: Settings, provider: FakeProvider
) -> None:
    credentials = ProviderCredentials(
        Provider.OPENAI_COMPATIBLE, GOOD_KEY, "tenant", provider.base_url
    )
    outcome = await try_credentials(
        credentials, "responses/gpt-4o", _allowing(settings, f"{provider.host}/32")
    )
    assert (outcome["ok"], outcome["error_type"]) == (False, "provider_path_not_guarded")
    assert provider.connections == []


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Hello(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str | None], list[str | None]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for provider.test only."""
    cert, key = _certificate(tmp_path, "provider.test")
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.hosts = []  # type: ignore[attr-defined]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert, names, server.hosts  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


async def test_tls_is_verified_for_the_hostname_while_connecting_to_the_pinned_address(
    settings: Settings, tls_server: tuple[int, Path, list[str | None], list[str | None]]
) -> None:
    port, cert, sni_names, hosts = tls_server
    trust = ssl.create_default_context(cafile=str(cert))
    allowed = settings.model_copy(update={"outbound_allowed_networks": ("127.0.0.1/32",)})
    dns = ScriptedDNS(["127.0.0.1"])
    async with guarded_client(allowed, resolver=dns, ssl_context=trust) as client:
        answer = await client.get(f"https://provider.test:{port}/")
        assert answer.text == "ok"
        assert (sni_names, hosts) == (["provider.test"], [f"provider.test:{port}"])
        # The same server by address: its certificate does not name it, so no connection.
        with pytest.raises(httpx.ConnectError):
            await client.get(f"https://127.0.0.1:{port}/")


async def test_calls_to_one_provider_reuse_a_guarded_connection_never_across_policies(
    settings: Settings, provider: FakeProvider
) -> None:
    credentials = ProviderCredentials(Provider.OPENAI, GOOD_KEY, "tenant", provider.base_url)
    allowed = _allowing(settings, f"{provider.host}/32")
    messages = [{"role": "user", "content": "hello"}]
    for _ in range(3):
        await acompletion(credentials, allowed, model="gpt-4o-mini", messages=messages, timeout_s=5)
    assert len(provider.calls) == 3
    assert len(provider.connections) == 1  # one TCP (and, on https, TLS) handshake for three
    # Settings that allow nothing private: the kept connection is not theirs to use.
    with pytest.raises(Exception, match="tenants may not reach"):  # litellm wraps the refusal
        await acompletion(
            credentials, _allowing(settings), model="gpt-4o-mini", messages=messages, timeout_s=5
        )
    assert len(provider.calls) == 3


async def test_a_cookie_a_provider_sets_for_one_call_never_rides_on_the_next(
    settings: Settings, provider: FakeProvider
) -> None:
    # The kept connections serve every tenant: a session cookie of one must not reach another.
    provider.set_cookie = "__cf_bm=tenant-a-session; Path=/"
    allowed = _allowing(settings, f"{provider.host}/32")
    messages = [{"role": "user", "content": "hello"}]
    for key_owner in ("a", "b"):
        credentials = ProviderCredentials(Provider.OPENAI, GOOD_KEY, "tenant", provider.base_url)
        await acompletion(credentials, allowed, model="gpt-4o-mini", messages=messages, timeout_s=5)
        assert provider.calls[-1]["cookie"] is None, key_owner
    assert len(provider.connections) == 1  # the same kept connection served both


async def test_a_host_name_idna_cannot_encode_is_refused_as_not_resolving(
    settings: Settings,
) -> None:
    with pytest.raises(Problem) as refused:
        await check_outbound_url(f"https://{'a' * 70}.example.com/", settings)
    assert refused.value.status == 422
