"""Fixtures: a tenant with an editor uploading, on the local store (the app serves its signed
URLs) or on S3 (moto's server on loopback, real boto3 and real HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import boto3
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.app import create_app
from socialflow.settings import Settings
from socialflow.workers.actors import WorkerResources
from socialflow.workers.testing import worker_settings_for
from tests.integration.media.support import Uploader
from tests.integration.moto_server import moto_endpoint
from tests.integration.tenancy_fixtures import Platform, World


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def media_settings(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    if request.param == "local":
        return settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("media")})
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"media-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    return settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": endpoint,
            "s3_access_key_id": "testing",
            "s3_secret_access_key": SecretStr("testing"),
        }
    )


@pytest.fixture
def app(media_settings: Settings) -> Litestar:
    return create_app(media_settings)


@pytest.fixture
def worker_settings(media_settings: Settings) -> Iterator[Settings]:
    """The actors' resources (worker_resources()) use the test's settings."""
    with worker_settings_for(media_settings) as settings:
        yield settings


@pytest.fixture
async def uploader(
    platform: Platform,
    world: World,
    client: AsyncTestClient[Litestar],
    session_factory: async_sessionmaker[AsyncSession],
    worker_settings: Settings,
    pg: psycopg.Connection[tuple[object, ...]],
) -> AsyncIterator[Uploader]:
    editor = await platform.member(world.tenant_a, "editor")
    row = pg.execute("SELECT id FROM shared.tenants WHERE slug = %s", (world.tenant_a,)).fetchone()
    assert row is not None
    yield Uploader(client, session_factory, world.tenant_a, row[0], editor)  # type: ignore[arg-type]
    await WorkerResources.dispose()
