"""The documentation at /schema: Swagger UI from the API's own files (nothing from a CDN), no
other UI, a strict Content-Security-Policy, and a bearer scheme that takes both credentials."""

from __future__ import annotations

import re

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.integration.tenancy_fixtures import Platform, World, bearer

URL_ATTRIBUTE = re.compile(r"""\b(?:src|href|data-openapi-url)="([^"]*)\"""")
SETTINGS = "/api/v1/tenants/{tenant}/settings"


async def _page_urls(client: AsyncTestClient[Litestar]) -> list[str]:
    page = await client.get("/schema")
    assert page.status_code == 200
    return URL_ATTRIBUTE.findall(page.text)


async def test_schema_serves_swagger_ui_whose_every_url_is_local(
    client: AsyncTestClient[Litestar],
) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="swagger-ui"' in page.text
    assert re.search(r"https?:|//", page.text) is None
    urls = URL_ATTRIBUTE.findall(page.text)
    assert urls
    assert all(url.startswith("/schema/") for url in urls), urls
    assert "/schema/openapi.json" in urls
    names = {url.rsplit("/", 1)[-1].split(".", 1)[0] for url in urls}
    assert {"swagger-ui-bundle", "swagger-ui", "swagger-init", "favicon-32x32"} <= names


async def test_the_page_assets_are_served_and_nothing_else_of_the_package(
    client: AsyncTestClient[Litestar],
) -> None:
    assets = [url for url in await _page_urls(client) if url.startswith("/schema/assets/")]
    expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in assets:
        response = await client.get(url)
        assert response.status_code == 200, url
        kind = expected[url[url.rindex(".") :]]
        assert response.headers["content-type"].split(";")[0] == kind, url
        assert response.headers["content-type"].count("charset") <= 1, url
        assert "immutable" in response.headers["cache-control"], url
        assert len(response.content) > 100, url
    bundle = next(url for url in assets if "swagger-ui-bundle" in url)
    assert len((await client.get(bundle)).content) > 500_000
    for path in (
        "/schema/assets/swagger-editor-bundle.js",
        "/schema/assets/swagger-ui-bundle.js",  # only at its digest's URL
        "/schema/assets/swagger-ui-bundle.js.map",
        "/schema/assets/",
        "/schema/assets/../../settings.py",
        "/schema/assets/..%2F..%2Fsettings.py",
        "/schema/assets/%2e%2e/%2e%2e/settings.py",
    ):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        # An error under /schema loads nothing either: the API's own policy.
        assert missing.headers["content-security-policy"].startswith("default-src 'none'")


async def test_no_other_ui_remains_and_the_document_is_still_served(
    client: AsyncTestClient[Litestar],
) -> None:
    for ui in ("redoc", "elements", "rapidoc", "scalar", "swagger", "oauth2-redirect.html"):
        assert (await client.get(f"/schema/{ui}")).status_code == 404, ui
    document = await client.get("/schema/openapi.json")
    assert document.status_code == 200
    assert document.json()["openapi"].startswith("3.1")
    assert (await client.get("/schema/openapi.yaml")).status_code == 200


async def test_the_bearer_scheme_takes_an_access_token_and_an_api_key(
    platform: Platform, world: World
) -> None:
    client = platform.client
    document = (await client.get("/schema/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert "bearerFormat" not in scheme  # API keys are not JWTs
    assert "access token" in scheme["description"]
    assert "sfk_" in scheme["description"]
    assert {"bearer": []} in document["paths"][SETTINGS]["get"]["security"]

    # What Authorize sends: `Authorization: Bearer <what was pasted>`.
    created = await client.post(
        f"/api/v1/tenants/{world.tenant_a}/api-keys",
        json={"name": "docs", "role": "viewer"},
        headers=world.owner_a.headers,
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("sfk_")
    assert world.owner_a.token.count(".") == 2  # a JWT
    url = SETTINGS.format(tenant=world.tenant_a)
    for credential in (world.owner_a.token, key):
        assert (await client.get(url, headers=bearer(credential))).status_code == 200
    assert (await client.get(url)).status_code == 401


async def test_the_ui_page_allows_scripts_from_its_own_origin_only(
    client: AsyncTestClient[Litestar],
) -> None:
    page = await client.get("/schema")
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in page.headers["content-security-policy"].split(";")
        if directive.strip()
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    # No inline script or style to allow: every script tag loads a file, and no style element.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, flags=re.S | re.I)
    assert scripts
    assert all("src=" in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", page.text, flags=re.I)
    assert page.headers.get_list("content-security-policy") == [
        page.headers["content-security-policy"]
    ]
