"""The catalogue's first plans: PLAN_CATALOGUE's, added where missing when the shared schema
is brought to head (`socialflow migrate`, `socialflow dev`)."""

from __future__ import annotations

import asyncio

from socialflow.db.engine import create_engine, create_session_factory
from socialflow.db.session import unit_of_work
from socialflow.plans.services import seed_plans
from socialflow.settings import Settings


def seed_catalogue(settings: Settings, database_url: str) -> list[str]:
    """Add the plans of `settings.plan_catalogue` the catalogue lacks; return their names.
    Plans already there are the operators' (changed through the API) and stay as they are."""

    async def seed() -> list[str]:
        engine = create_engine(settings, database_url=database_url)
        try:
            async with unit_of_work(create_session_factory(engine)) as session:
                return await seed_plans(session, settings.plan_catalogue)
        finally:
            await engine.dispose()

    return asyncio.run(seed())
