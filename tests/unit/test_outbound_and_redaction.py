"""Tenant-chosen URLs cannot reach private networks; keys never survive into text or logs."""

from __future__ import annotations

import ipaddress
import re

import pytest

from socialflow.lib.outbound import (
    IPAddress,
    address_allowed,
    check_outbound_url,
    embedded_ipv4,
)
from socialflow.lib.problems import Problem
from socialflow.lib.redaction import REDACTED, _any_of, redact
from socialflow.settings import Environment, Settings


def _settings(**overrides: object) -> Settings:
    return Settings(env=Environment.TEST, _env_file=None, **overrides)  # type: ignore[arg-type,call-arg]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",  # plain http and loopback
        "https://127.0.0.1/v1",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://10.1.2.3/v1",
        "https://192.168.0.10/v1",
        "https://[::1]/v1",
        "https://[::ffff:127.0.0.1]/v1",
        "https://localhost/v1",  # a name resolving to loopback
        "https://0.0.0.0/v1",
        "https://user:pass@example.com/v1",
        "ftp://example.com/",
        "https:///nohost",
    ],
)
async def test_private_loopback_link_local_and_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(Problem) as refused:
        await check_outbound_url(url, _settings())
    assert refused.value.status == 422
    assert refused.value.kind == "url-not-allowed"


async def test_an_operator_may_allow_a_private_range_and_http() -> None:
    settings = _settings(outbound_allowed_networks=("127.0.0.0/8",), outbound_allow_http=True)
    assert await check_outbound_url("http://127.0.0.1:9000/v1", settings) == (
        "http://127.0.0.1:9000/v1"
    )
    with pytest.raises(Problem):
        await check_outbound_url("http://10.0.0.1/v1", settings)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # cloud metadata (link-local)
        "10.0.0.1",
        "10.255.255.254",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT: not private, not global either
        "100.127.255.254",
        "127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "192.0.2.10",  # documentation
        "::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 carrying 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 carrying 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:0:808:808:8000:f227:80ff:fffe",  # Teredo, public server, client 127.0.0.1
        "fc00::1",  # unique-local
        "fd12:3456:789a::1",
        "fe80::1",
        "fec0::1",  # site-local (deprecated, still not public)
        "ff0e::1",  # global-scope multicast
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "::7f00:1",  # IPv4-compatible 127.0.0.1
    ],
)
def test_non_public_addresses_and_their_ipv6_disguises_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_a_public_address_is_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


def test_the_ipv4_inside_6to4_teredo_and_nat64_addresses_is_what_is_judged() -> None:
    assert embedded_ipv4(ipaddress.ip_address("2002:7f00:1::")) == [
        ipaddress.IPv4Address("127.0.0.1")
    ]
    server, client = embedded_ipv4(ipaddress.ip_address("2001:0:808:808:8000:f227:80ff:fffe"))
    assert (str(server), str(client)) == ("8.8.8.8", "127.0.0.1")
    assert embedded_ipv4(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) == [
        ipaddress.IPv4Address("169.254.169.254")
    ]


def test_an_operator_allowed_network_admits_only_itself() -> None:
    allowed = (ipaddress.ip_network("10.0.0.0/8"),)
    assert address_allowed(ipaddress.ip_address("10.1.2.3"), allowed)
    assert address_allowed(ipaddress.ip_address("::ffff:10.1.2.3"), allowed)
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), allowed)
    assert not address_allowed(ipaddress.ip_address("100.64.0.1"), allowed)


@pytest.mark.parametrize(
    "url",
    [
        "https://100.64.0.1/v1",  # shared address space
        "https://100.127.255.254/v1",
        "https://[2002:7f00:1::]/v1",  # 6to4 of 127.0.0.1
        "https://[2002:a9fe:a9fe::1]/latest/meta-data",  # 6to4 of the metadata address
    ],
)
async def test_the_save_time_check_shares_the_address_policy(url: str) -> None:
    with pytest.raises(Problem) as refused:
        await check_outbound_url(url, _settings())
    assert refused.value.kind == "url-not-allowed"


async def test_a_name_is_refused_when_any_of_its_addresses_is_private() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        assert (host, port) == ("api.tenant.example", 443)
        return [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.7")]

    with pytest.raises(Problem) as refused:
        await check_outbound_url("https://api.tenant.example/v1", _settings(), resolver=resolver)
    assert refused.value.kind == "url-not-allowed"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "sk-ant-api03-abcdefghijklmnopqrstuv",
        "AIzaSyA1234567890abcdefghijklmnopqrstu",
        "0123456789abcdef0123456789abcdef",
        "sfk_abcdefghijklmnopqrstuvwx",
    ],
)
def test_provider_keys_are_scrubbed_from_text(secret: str) -> None:
    text = f"provider said: invalid key {secret} (check it)"
    assert secret not in redact(text)
    assert REDACTED in redact(text)


def test_bearer_tokens_and_key_parameters_are_scrubbed() -> None:
    text = "Authorization: Bearer abc.def.ghijklmnop and api_key=supersecretvalue123&x=1"
    scrubbed = redact(text)
    assert "abc.def.ghijklmnop" not in scrubbed
    assert "supersecretvalue123" not in scrubbed
    assert "x=1" in scrubbed


def test_the_one_scan_pre_check_refuses_a_pattern_flag_it_could_not_keep() -> None:
    # The pre-check joins the patterns into one; only (?i) survives that, per alternative.
    with pytest.raises(ValueError, match="only"):
        _any_of([re.compile("^key$", re.MULTILINE)])
    joined = _any_of([re.compile("(?i)bearer x"), re.compile("sk-y")])
    assert joined.search("BEARER x")
    assert joined.search("sk-y")
    assert not joined.search("SK-Y")
