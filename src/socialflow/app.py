"""create_app(): the Litestar application — plugins and controllers, nothing else."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from redis.asyncio import Redis

from socialflow.ai.controllers import AIController
from socialflow.db.engine import create_engine, create_session_factory
from socialflow.db.session import provide_session
from socialflow.health.controllers import HealthController
from socialflow.identity.auth import provide_principal
from socialflow.identity.controllers import AuthController, InvitationController, MeController
from socialflow.lib.idempotency import IdempotencyMiddleware
from socialflow.lib.input_guard import refuse_unsafe_text
from socialflow.lib.logging import configure_logging
from socialflow.lib.openapi import document_problems
from socialflow.lib.problems import EXCEPTION_HANDLERS
from socialflow.lib.request_context import RequestContextMiddleware
from socialflow.settings import Settings, get_settings
from socialflow.tenancy.controllers import (
    AgencyController,
    TenantContentController,
    TenantController,
)
from socialflow.tenancy.directory import TenantDirectory
from socialflow.vault.service import Vault


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings)

    async def open_resources(app: Litestar) -> None:
        app.state.engine = create_engine(settings)
        app.state.session_factory = create_session_factory(app.state.engine)
        app.state.vault = Vault.from_settings(settings)
        app.state.redis = Redis.from_url(
            settings.redis_url or "", socket_timeout=settings.ready_timeout_s
        )

    async def close_resources(app: Litestar) -> None:
        await app.state.redis.aclose()
        await app.state.engine.dispose()

    if settings.database_url is None or settings.redis_url is None:
        raise RuntimeError(
            "DATABASE_URL and REDIS_URL must be set for the API; "
            "`socialflow dev` starts embedded servers and sets them"
        )
    app = Litestar(
        route_handlers=[
            HealthController,
            AuthController,
            MeController,
            InvitationController,
            AgencyController,
            TenantController,
            TenantContentController,
            AIController,
        ],
        dependencies={
            "session": Provide(provide_session),
            "principal": Provide(provide_principal),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        guards=[refuse_unsafe_text],  # NUL / invalid UTF-8 in any input: 422
        on_startup=[open_resources],
        on_shutdown=[close_resources],
        state=State(
            {"settings": settings, "tenant_directory": TenantDirectory(settings.tenant_cache_ttl_s)}
        ),
        openapi_config=OpenAPIConfig(
            title="SocialFlow API", version="1", path="/schema", use_handler_docstrings=True
        ),
        logging_config=None,
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_allowed_origins),
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            allow_credentials=False,
            expose_headers=["X-Request-ID", "Link"],
        )
        if settings.cors_allowed_origins
        else None,
        request_max_body_size=settings.max_request_body_bytes,
    )
    # Outermost, around routing and error handling, so 404s and 500s carry the id too.
    idempotent: Any = IdempotencyMiddleware(app.asgi_handler, lambda: app.state.redis)
    app.asgi_handler = RequestContextMiddleware(idempotent)
    document_problems(app)
    return app
