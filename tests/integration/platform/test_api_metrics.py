"""The API's /metrics after real requests: counted by route template (never the raw path, so
no tenant's slug or id becomes a label), method and status, with latency and the pool."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.tenancy_fixtures import World

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(client: AsyncTestClient[Litestar]) -> Samples:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _count(samples: Samples, route: str, method: str, status: str) -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return samples.get(("socialflow_api_requests_total", labels), 0.0)


async def test_requests_are_counted_by_route_template_method_and_status(
    client: AsyncTestClient[Litestar], world: World
) -> None:
    route = "/api/v1/tenants/{tenant}/settings"
    before = await _scrape(client)
    for _ in range(3):
        answer = await client.get(
            f"/api/v1/tenants/{world.tenant_a}/settings", headers=world.owner_a.headers
        )
        assert answer.status_code == 200
    refused = await client.get(
        f"/api/v1/tenants/{world.tenant_b}/settings", headers=world.owner_a.headers
    )
    missing = await client.get(f"/no/such/page/{world.tenant_a}")
    assert missing.status_code == 404
    after = await _scrape(client)

    assert _count(after, route, "GET", "200") - _count(before, route, "GET", "200") == 3
    status = str(refused.status_code)
    assert _count(after, route, "GET", status) - _count(before, route, "GET", status) == 1
    assert _count(after, "unmatched", "GET", "404") - _count(before, "unmatched", "GET", "404") == 1

    def timed(code: str) -> float:
        key = (
            "socialflow_api_request_duration_seconds_count",
            (("method", "GET"), ("route", route), ("status", code)),
        )
        return after[key] - before.get(key, 0.0)

    assert timed("200") == 3
    assert timed(status) == 1
    labels = {value for (_, pairs) in after for _, value in pairs}
    assert not any(world.tenant_a in value or world.tenant_b in value for value in labels)
    assert ("socialflow_api_db_pool_in_use", ()) in after
    assert ("socialflow_api_db_pool_overflow", ()) in after
