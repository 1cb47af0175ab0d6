"""Fixtures: real PostgreSQL + pgvector and real Redis, started (or connected to) once per run.

With DATABASE_URL / REDIS_URL unset, embedded servers start in a throwaway folder. With them
set, a fresh database is created on that server for the run and dropped after it, and the
Redis database named by REDIS_URL is flushed between tests: point it at a dedicated one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from socialflow import embedded
from socialflow.app import create_app
from socialflow.db.engine import libpq_url
from socialflow.db.migrate import upgrade_shared
from socialflow.lib.logging import configure_logging
from socialflow.plans.seeding import seed_catalogue
from socialflow.settings import Environment, Settings

pytest_plugins = [
    "tests.integration.worker_fixtures",
    "tests.integration.tenancy_fixtures",
    "tests.integration.pooler_fixtures",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its tier folder, so `-m unit` etc. select them."""
    for item in items:
        for tier in ("unit", "integration", "e2e"):
            if f"tests/{tier}/" in str(item.path).replace(os.sep, "/"):
                item.add_marker(getattr(pytest.mark, tier))
        _name_each_operation(item)


def _name_each_operation(item: pytest.Item) -> None:
    """Schemathesis names its per-operation items `test[GET /path]` but gives them all the
    test's node id; pytest-xdist hands out tests by node id, so all but one would never run.
    Give each its own (the same on the controller and every worker)."""
    if "[" in item.name and not item.nodeid.endswith("]"):
        from _pytest.nodeid import coerce_node_id  # pytest 9 keeps the id as a NodeId

        item._id = coerce_node_id(f"{item.nodeid}[{item.name.split('[', 1)[1]}")


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.ServiceUrls]:
    data_dir = tmp_path_factory.mktemp("services")
    with embedded.services(
        os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL"), data_dir, throwaway=True
    ) as urls:
        if os.environ.get("DATABASE_URL"):
            with _scratch_database(urls.database_url) as database_url:
                yield embedded.ServiceUrls(database_url, urls.redis_url, urls.embedded)
        else:
            yield urls


class _scratch_database:  # noqa: N801 - reads as a context manager
    """A database of its own on an external server, dropped afterwards."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"socialflow_test_{uuid.uuid4().hex[:12]}"

    def _admin(self) -> psycopg.Connection[object]:
        return psycopg.connect(libpq_url(self.server_url), autocommit=True)

    def __enter__(self) -> str:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return (
            make_url(self.server_url).set(database=self.name).render_as_string(hide_password=False)
        )

    def __exit__(self, *exc: object) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(service_urls: embedded.ServiceUrls) -> str:
    upgrade_shared(service_urls.database_url)
    # The catalogue every start seeds (PLAN_CATALOGUE's defaults).
    seed_catalogue(Settings(_env_file=None), service_urls.database_url)  # type: ignore[call-arg]
    return service_urls.database_url


@pytest.fixture(scope="session")
def redis_url(service_urls: embedded.ServiceUrls) -> str:
    return service_urls.redis_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),  # the dev vault key ring lands here
        env=Environment.TEST,
        database_url=database_url,
        redis_url=redis_url,
        jwt_signing_key=SecretStr("test-signing-key-" + "x" * 32),
        db_pool_size=5,
        ready_timeout_s=2.0,
        password_time_cost=1,
        password_memory_kib=1024,
        # Every test signs in from the test client's one address; throttling tests lower it.
        signin_attempts_per_address_per_minute=1_000_000,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="session", autouse=True)
def _logging_through_stdlib() -> None:
    """Route structlog through the standard library (as the processes do), so caplog sees it."""
    configure_logging(Settings(env=Environment.TEST, _env_file=None))  # type: ignore[call-arg]


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app) as test_client:
        yield test_client


@pytest.fixture
def pg(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection for tests to look at the database directly."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]
