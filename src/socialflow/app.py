"""create_app(): the Litestar application — plugins and controllers, nothing else."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from socialflow.access.directory import listening
from socialflow.access.guards import (
    check_guards,
    count_caller,
    provide_principal,
    provide_tenant_access,
)
from socialflow.ai.controllers import AIController
from socialflow.audit.controllers import AuditLogController
from socialflow.captions.controllers import CaptionsController
from socialflow.db.session import UnitOfWorkMiddleware, provide_session
from socialflow.event_routing import EVENT_ROUTES
from socialflow.health.controllers import HealthController, MetricsController
from socialflow.identity.auth import api_key_cache, authenticate, principal_from_header
from socialflow.identity.controllers import AuthController, MeController
from socialflow.lib import telemetry
from socialflow.lib.idempotency import Callers, IdempotencyMiddleware
from socialflow.lib.input_guard import refuse_unsafe_text
from socialflow.lib.logging import configure_logging
from socialflow.lib.openapi import document_problems
from socialflow.lib.openapi_ui import openapi_router, render_plugins
from socialflow.lib.problems import EXCEPTION_HANDLERS
from socialflow.lib.request_context import RequestContextMiddleware
from socialflow.media.controllers import LocalStorageController, MediaController
from socialflow.members.api_keys import API_KEY_CHANGES
from socialflow.members.controllers import (
    ApiKeysController,
    InvitationController,
    MembersController,
)
from socialflow.plans.controllers import (
    AgencyUsageController,
    EntitlementsController,
    PlanController,
)
from socialflow.publishing.controllers import PostController
from socialflow.resources import Resources
from socialflow.search.controllers import SearchController
from socialflow.settings import Settings, get_settings
from socialflow.social.controllers import OAuthCallbackController, SocialAccountController
from socialflow.tenancy.controllers import (
    AgencyController,
    TenantController,
    TenantSettingsController,
)
from socialflow.webhooks.controllers import (
    EventHistoryController,
    EventTypesController,
    WebhookController,
)
from socialflow.webhooks.services import event_types


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings)
    telemetry.configure("api")  # only when OTEL_* ask for traces

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The API uses Redis for caches only (rate limits, idempotency, tenant announcements);
        # the broker's Redis is the relay's and the workers'.
        resources = Resources.open(settings, cache_redis=True)
        app.state.resources = resources
        # The names routes and guards read.
        app.state.engine = resources.engine
        app.state.session_factory = resources.session_factory
        app.state.vault = resources.vault
        app.state.redis = resources.redis
        app.state.tenant_directory = resources.directory
        # A revoked key is forgotten by every process's key cache as soon as it commits.
        resources.directory.on(API_KEY_CHANGES, api_key_cache(app.state).forget)
        # What start-up built (the app, its routes, imported modules) lives as long as the
        # process: kept out of the collector's sweeps, which then walk only request garbage.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        try:
            async with listening(resources.directory, settings.effective_cache_redis_url or ""):
                yield
        finally:
            await resources.close()

    if settings.database_url is None or settings.redis_url is None:
        raise RuntimeError(
            "DATABASE_URL and REDIS_URL must be set for the API; "
            "`socialflow dev` starts embedded servers and sets them"
        )
    app = Litestar(
        route_handlers=[
            HealthController,
            *([] if settings.api_metrics_port else [MetricsController]),
            AuthController,
            MeController,
            InvitationController,
            AgencyController,
            TenantController,
            TenantSettingsController,
            MembersController,
            ApiKeysController,
            AuditLogController,
            EventHistoryController,
            WebhookController,
            EventTypesController,
            AIController,
            PlanController,
            EntitlementsController,
            AgencyUsageController,
            MediaController,
            PostController,
            SocialAccountController,
            OAuthCallbackController,
            CaptionsController,
            SearchController,
            LocalStorageController,
        ],
        dependencies={
            "session": Provide(provide_session),
            # What the route's guards resolved (access/guards.py), never resolved again.
            "principal": Provide(provide_principal),
            "access": Provide(provide_tenant_access),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        # After routing: Idempotency-Key replays know the route (and what it withholds).
        # The request's unit of work innermost: it is finished before any answer leaves.
        middleware=[
            DefineMiddleware(IdempotencyMiddleware, callers=Callers(authenticate, count_caller)),
            UnitOfWorkMiddleware,
        ],
        guards=[refuse_unsafe_text],  # NUL / invalid UTF-8 in any input: 422
        lifespan=[lifespan],
        state=State(
            {
                "settings": settings,
                "resolve_principal": principal_from_header,  # how the guards authenticate
                # What webhooks can receive (GET /api/v1/event-types), from the routing table.
                "event_types": event_types(list(EVENT_ROUTES)),
            }
        ),
        openapi_config=OpenAPIConfig(
            title="SocialFlow API",
            version="1",
            path="/schema",
            # Swagger UI at /schema from the API's own files, the document as JSON and YAML.
            render_plugins=render_plugins(),
            openapi_router=openapi_router("/schema"),
            use_handler_docstrings=True,
            description=(
                "Event payloads (the event history's `payload`, a webhook's `data`) are "
                "documented, one JSON schema per event type, at "
                "[/api/v1/event-types](/api/v1/event-types)."
            ),
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
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler)
    check_guards(app)
    document_problems(app)
    return app
