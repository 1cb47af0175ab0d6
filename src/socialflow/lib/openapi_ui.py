"""The API's documentation at `/schema`: Swagger UI, its files served by the API itself (from the
`swagger-ui-py` package), so that the page loads nothing from a CDN and works offline.

`/schema` is the page, `/schema/openapi.json` (and `.yaml`, `.yml`) the document; no other UI
(ReDoc, Elements, RapiDoc, Scalar) and no OAuth2 redirect page. The page's files are the few it
loads, each at `/schema/assets/<name>.<digest>.<ext>`: exact paths, nothing else of the package's
folder, cached for a year since a new file is a new URL. The page has no inline script or style
(the start-up code is one of those files and finds the document's URL in the page), so its
Content-Security-Policy allows scripts and styles from the API's own origin only.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from litestar import Request, Response, Router, get
from litestar.constants import OPENAPI_JSON_HANDLER_NAME
from litestar.datastructures import ResponseHeader
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    YamlRenderPlugin,
)

# What the page may load: its own origin's scripts, styles and the document (`connect-src`, also
# what "Try it out" calls); images from its origin, `data:` (the icons in swagger-ui.css) and
# `blob:` (image responses shown by "Try it out"). No inline script or style, no frames, no forms.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# A file's URL names its content's digest: a changed file is a new URL.
IMMUTABLE = "public, max-age=31536000, immutable"
ASSETS_PATH = "/assets"

JS = "text/javascript"  # Litestar adds `; charset=utf-8` to text types
CSS = "text/css"
PNG = "image/png"

# Starts Swagger UI on the page's container with the document its `data-openapi-url` names.
# What Authorize is given lives in the page only: `persistAuthorization` would keep API keys
# in localStorage, readable by any script of the origin for as long as the browser keeps it.
# `validatorUrl: null` keeps the page from sending the document to validator.swagger.io.
INIT_JS = b"""\
"use strict";
(function () {
  var container = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: container.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    displayRequestDuration: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
})();
"""


@dataclass(frozen=True, slots=True)
class Asset:
    """One file the page loads."""

    name: str  # as the package names it
    media_type: str
    body: bytes

    @property
    def path(self) -> str:
        """`/assets/<stem>.<digest>.<ext>`, under the schema router."""
        stem, _, ext = self.name.rpartition(".")
        digest = hashlib.sha256(self.body).hexdigest()[:12]
        return f"{ASSETS_PATH}/{stem}.{digest}.{ext}"

    @property
    def handler_name(self) -> str:
        return f"openapi-ui-asset:{self.name}"


def _packaged(name: str, media_type: str) -> Asset:
    return Asset(name, media_type, (files("swagger_ui") / "static" / name).read_bytes())


@cache
def assets() -> dict[str, Asset]:
    """The page's files by name, read once per process. Swagger UI's own page styles are
    `index.css`; the standalone preset is not loaded (its top bar would offer to load other
    documents)."""
    found = [
        _packaged("swagger-ui-bundle.js", JS),
        _packaged("swagger-ui.css", CSS),
        _packaged("index.css", CSS),
        _packaged("favicon-32x32.png", PNG),
        Asset("swagger-init.js", JS, INIT_JS),
    ]
    return {asset.name: asset for asset in found}


def _asset_handler(asset: Asset) -> HTTPRouteHandler:
    def serve() -> Response[bytes]:
        return Response(
            asset.body, media_type=asset.media_type, headers={"cache-control": IMMUTABLE}
        )

    return get(
        asset.path,
        name=asset.handler_name,
        include_in_schema=False,
        sync_to_thread=False,
    )(serve)


class SwaggerUI(OpenAPIRenderPlugin):
    """Swagger UI at the schema router's root, from the API's own files."""

    def __init__(self, *, path: str | Sequence[str] = "/", **kwargs: Any) -> None:
        super().__init__(path=path, **kwargs)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        def url(name: str) -> str:
            return html.escape(request.app.route_reverse(assets()[name].handler_name))

        title = html.escape(str(openapi_schema["info"]["title"]))
        document = html.escape(request.app.route_reverse(OPENAPI_JSON_HANDLER_NAME))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{url("favicon-32x32.png")}">
<link rel="stylesheet" href="{url("swagger-ui.css")}">
<link rel="stylesheet" href="{url("index.css")}">
<script src="{url("swagger-ui-bundle.js")}" defer></script>
<script src="{url("swagger-init.js")}" defer></script>
</head>
<body>
<noscript><p><a href="{document}">The OpenAPI document (JSON)</a></p></noscript>
<div id="swagger-ui" data-openapi-url="{document}"></div>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        """Serve the page's files; unlike Litestar's Swagger plugin, no OAuth2 redirect page
        (the API's credentials are bearer tokens, pasted into Authorize)."""
        for asset in assets().values():
            router.register(_asset_handler(asset))


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """What `/schema` serves: Swagger UI at its root, the document as JSON and YAML."""
    return [SwaggerUI(), JsonRenderPlugin(), YamlRenderPlugin()]


def openapi_router(path: str) -> Router:
    """The router of `/schema` (its handlers come from the render plugins): Litestar's own,
    plus the UI's Content-Security-Policy on every answer under it (the API's default policy
    is not sent under `/schema`, see lib.request_context)."""
    return Router(
        path,
        route_handlers=[],
        include_in_schema=False,
        dto=None,
        return_dto=None,
        response_headers=[ResponseHeader(name="content-security-policy", value=CSP)],
    )
