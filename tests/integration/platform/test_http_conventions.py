"""Request ids, problem documents and the request's unit of work, through the real app."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import psycopg
import pytest
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.integration.tenancy_fixtures import Platform

PROBLEM = "application/problem+json"


class Widget(msgspec.Struct):
    name: str
    size: int


@post("/test/widgets")
async def create_widget(data: JSONBody[Widget]) -> Widget:
    return data


@get("/test/explode")
async def explode() -> None:
    raise RuntimeError("connection to postgresql://admin:hunter2@db failed")


@post("/test/rows/{value:str}")
async def insert_row(
    value: FromPath[str], session: NamedDependency[AsyncSession]
) -> dict[str, str]:
    await session.execute(text("INSERT INTO public.uow_probe (value) VALUES (:v)"), {"v": value})
    if value.startswith("fail"):
        raise RuntimeError("handler failed after writing")
    return {"stored": value}


@pytest.fixture
def probe_app(app: Litestar, pg: psycopg.Connection[Any]) -> Litestar:
    pg.execute("DROP TABLE IF EXISTS public.uow_probe")
    # The unique check runs at COMMIT, so a test can make the commit itself fail.
    pg.execute(
        "CREATE TABLE public.uow_probe (value text, "
        "CONSTRAINT uow_probe_unique UNIQUE (value) DEFERRABLE INITIALLY DEFERRED)"
    )
    for handler in (create_widget, explode, insert_row):
        app.register(handler)
    return app


@pytest.fixture
async def probe(probe_app: Litestar) -> Any:
    async with AsyncTestClient(probe_app) as test_client:
        yield test_client


def _log_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict)]


async def test_a_given_request_id_is_returned_and_bound_into_log_lines(
    client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await client.get("/health", headers={"X-Request-ID": "req-123.abc"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-123.abc"
    completed = [e for e in _log_events(caplog) if e.get("event") == "request.completed"]
    assert completed
    assert completed[-1]["request_id"] == "req-123.abc"


async def test_a_missing_request_id_is_generated_per_request(
    client: AsyncTestClient[Litestar],
) -> None:
    first = (await client.get("/health")).headers["x-request-id"]
    second = (await client.get("/health")).headers["x-request-id"]
    assert len(first) == 32
    assert first != second


async def test_an_unsafe_request_id_is_replaced_not_echoed(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32


async def test_an_unknown_path_is_a_404_problem_with_the_request_id(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get("/no/such/thing", headers={"X-Request-ID": "r-404"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "/problems/not-found"
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert body["request_id"] == "r-404"
    assert response.headers["x-request-id"] == "r-404"


async def test_a_wrong_method_is_a_405_problem(client: AsyncTestClient[Litestar]) -> None:
    response = await client.delete("/health")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "/problems/method-not-allowed"


async def test_a_validation_error_lists_the_offending_fields(probe: Any) -> None:
    response = await probe.post("/test/widgets", json={"name": "w", "size": "big"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "/problems/validation-error"
    assert [e["field"] for e in body["errors"]] == ["size"]
    assert "size" in body["detail"]


async def test_malformed_json_is_a_400_problem(probe: Any) -> None:
    response = await probe.post(
        "/test/widgets", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_an_unhandled_error_is_a_500_problem_without_internals(
    probe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await probe.get("/test/explode", headers={"X-Request-ID": "r-500"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "/problems/internal-error"
    assert body["request_id"] == "r-500"
    for leaked in ("hunter2", "postgresql://", "Traceback", "RuntimeError"):
        assert leaked not in response.text
    errors = [e for e in _log_events(caplog) if e.get("event") == "request.unhandled_error"]
    assert errors
    assert errors[0]["request_id"] == "r-500"


async def test_the_request_session_commits_when_the_handler_succeeds(
    probe: Any, pg: psycopg.Connection[Any]
) -> None:
    response = await probe.post("/test/rows/kept")
    assert response.status_code == 201
    assert pg.execute("SELECT value FROM public.uow_probe").fetchall() == [("kept",)]


async def test_the_request_session_rolls_back_when_the_handler_fails(
    probe: Any, pg: psycopg.Connection[Any]
) -> None:
    response = await probe.post("/test/rows/fail-1")
    assert response.status_code == 500
    assert pg.execute("SELECT count(*) FROM public.uow_probe").fetchone() == (0,)


async def test_a_failing_commit_is_an_error_response_not_a_success(
    probe: Any, pg: psycopg.Connection[Any]
) -> None:
    pg.execute("INSERT INTO public.uow_probe VALUES ('taken')")
    response = await probe.post("/test/rows/taken")
    assert response.status_code >= 400
    assert response.headers["content-type"].startswith(PROBLEM)
    assert pg.execute("SELECT count(*) FROM public.uow_probe").fetchone() == (1,)


async def test_openapi_is_served_at_schema(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "SocialFlow API"
    assert "/ready" in document["paths"]


async def test_an_incoming_traceparent_is_continued_in_the_request_logs(
    client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await client.get("/health", headers={"traceparent": parent})
    completed = [e for e in _log_events(caplog) if e.get("event") == "request.completed"]
    assert completed[-1]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def _problem_statuses(operation: dict[str, Any]) -> set[int]:
    return {
        int(status)
        for status, answer in operation["responses"].items()
        if PROBLEM in answer.get("content", {})
    }


async def test_openapi_describes_the_problem_document(client: AsyncTestClient[Litestar]) -> None:
    schemas = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    problem = schemas["ProblemDocument"]
    assert set(problem["required"]) == {
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "request_id",
    }
    assert "errors" in problem["properties"]
    assert set(schemas["ProblemField"]["properties"]) == {"field", "source", "message"}


async def test_every_error_answer_in_openapi_is_a_problem_document(
    client: AsyncTestClient[Litestar],
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    for key, operation in _operations(document).items():
        for status, answer in operation["responses"].items():
            if int(status) >= 400:
                schema = answer["content"][PROBLEM]["schema"]
                assert list(answer["content"]) == [PROBLEM], (key, status)
                assert schema == {"$ref": "#/components/schemas/ProblemDocument"}, (key, status)


async def test_openapi_declares_the_statuses_each_route_can_answer(
    client: AsyncTestClient[Litestar],
) -> None:
    operations = _operations((await client.get("/schema/openapi.json")).json())

    def problems(method: str, path: str) -> set[int]:
        return _problem_statuses(operations[(method, path)])

    assert problems("GET", "/health") == set()
    assert problems("GET", "/ready") == {503}
    assert problems("GET", "/api/v1/me") == {401, 422, 429}
    assert problems("GET", "/api/v1/agencies") == {400, 401, 403, 422, 429}
    content = "/api/v1/tenants/{tenant}/audit-log"
    assert problems("GET", content) == {400, 401, 403, 404, 422, 429}
    assert problems("PUT", "/api/v1/tenants/{tenant}/settings") >= {413}
    # Idempotency-Key: still running (409), reused with another body (422), Redis down (503).
    assert problems("POST", "/api/v1/tenants/{tenant}/members") >= {409, 413, 422, 503}
    assert problems("POST", "/api/v1/invitations/accept") >= {404, 410}
    assert problems("DELETE", "/api/v1/tenants/{tenant}") >= {409}


async def test_openapi_declares_credentials_and_the_idempotency_key(
    client: AsyncTestClient[Litestar],
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    operations = _operations(document)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert operations[("GET", "/api/v1/me")]["security"] == [{"bearer": []}]
    assert "security" not in operations[("POST", "/api/v1/auth/token")]
    for (method, path), operation in operations.items():
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert ("Idempotency-Key" in headers) == (method == "POST"), (method, path)


async def test_a_validation_error_names_where_the_bad_value_was(
    client: AsyncTestClient[Litestar], platform: Platform
) -> None:
    operator = await platform.operator()
    response = await client.get("/api/v1/tenants?limit=many", headers=operator.headers)
    assert response.status_code == 400
    assert [(e["field"], e["source"]) for e in response.json()["errors"]] == [("limit", "query")]
