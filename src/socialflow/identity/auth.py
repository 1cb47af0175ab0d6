"""Litestar dependency: the authenticated caller from `Authorization: Bearer <token>`."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State

from socialflow.identity.tokens import Principal, read_access_token, unauthorized
from socialflow.lib.logging import bind_context


async def provide_principal(request: Request[Any, Any, Any], state: State) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Send an access token: Authorization: Bearer <token>.")
    principal = read_access_token(state.settings, token.strip())
    bind_context(actor=f"user:{principal.user_id}")
    return principal
