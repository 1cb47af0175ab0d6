"""Tenant-chosen URLs cannot reach private networks; keys never survive into text or logs."""

from __future__ import annotations

import pytest

from socialflow.lib.outbound import check_outbound_url
from socialflow.lib.problems import Problem
from socialflow.lib.redaction import REDACTED, redact
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
