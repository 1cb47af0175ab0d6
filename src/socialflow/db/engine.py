"""The async SQLAlchemy engine on psycopg 3, built from settings."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from socialflow.settings import Settings

# The shared schema holds every table that is not a tenant's; it is always schema-qualified.
SHARED_SCHEMA = "shared"
EXTENSIONS_SCHEMA = "extensions"


def sqlalchemy_url(url: str, *, driver: str = "psycopg") -> str:
    """Normalise postgres:// and postgresql:// URLs to the psycopg 3 dialect."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql", "postgresql+psycopg"}:
        parsed = parsed.set(drivername=f"postgresql+{driver}")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a plain libpq URL, for raw psycopg connections (LISTEN, COPY)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(settings: Settings, *, database_url: str | None = None) -> AsyncEngine:
    url = database_url or settings.database_url
    if url is None:
        raise RuntimeError("DATABASE_URL is not set and no embedded database was started")
    # No tenant → no tenant schema on the path; tenant transactions set theirs with SET LOCAL.
    options = f"-c statement_timeout={settings.db_statement_timeout_ms} -c search_path=extensions"
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        connect_args={"options": options, "application_name": "socialflow"},
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
