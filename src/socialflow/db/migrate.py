"""Running the two Alembic trees: the shared schema, and one tenant schema at a time."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from alembic import command
from alembic.config import Config

from socialflow.db.engine import sqlalchemy_url
from socialflow.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SHARED_TREE = PROJECT_ROOT / "migrations"
TENANT_TREE = PROJECT_ROOT / "tenant_migrations"


def migration_database_url(settings: Settings) -> str | None:
    """Where migrations connect: DATABASE_DIRECT_URL when set, else DATABASE_URL.

    They work through a transaction pooler too (their locks and settings are per transaction),
    but their long DDL transactions would hold one of its few server connections meanwhile.
    """
    return settings.database_direct_url or settings.database_url


def alembic_config(tree: Path, database_url: str, *, output_buffer: TextIO | None = None) -> Config:
    config = Config(output_buffer=output_buffer)
    config.set_main_option("script_location", str(tree))
    config.set_main_option("path_separator", "os")
    # Escape % for ConfigParser interpolation (passwords may contain it).
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade_shared(database_url: str, revision: str = "head") -> None:
    """Bring the shared schema to `revision` (serialised across processes by env.py's lock)."""
    command.upgrade(alembic_config(SHARED_TREE, database_url), revision)


def upgrade_tenant(database_url: str, schema: str, revision: str = "head") -> None:
    """Bring one tenant schema to `revision` through the tenant tree."""
    config = alembic_config(TENANT_TREE, database_url)
    config.attributes["tenant_schema"] = schema
    command.upgrade(config, revision)
