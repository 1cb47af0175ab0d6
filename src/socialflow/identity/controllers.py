"""HTTP for identity: tokens, the caller's profile and external identities.

The sign-in endpoints run inside `sign_in_attempt`, which throttles them per client address and
per account before any password is checked.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import authenticated
from socialflow.access.principal import Principal, unauthorized
from socialflow.db.session import unit_of_work
from socialflow.identity import services
from socialflow.identity.bodies import (
    IdentityLink,
    LinkedIdentity,
    Me,
    RefreshRequest,
    TokenRequest,
    TokenResponse,
)
from socialflow.identity.oidc import link_identity
from socialflow.identity.services import RefreshOutcome, TokenPair
from socialflow.identity.throttling import sign_in_attempt
from socialflow.identity.tokens import hash_token


def _token_response(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
    )


async def _rotate(refresh_token: str, session: AsyncSession, state: State) -> TokenResponse:
    outcome, result = await services.rotate_refresh_token(session, state.settings, refresh_token)
    if outcome is RefreshOutcome.REUSED:
        assert not isinstance(result, TokenPair)
        # Reuse means the token leaked: revoke its whole family, and keep the revocation
        # although this request fails. Release this request's row lock first, then revoke
        # in a transaction of its own that commits.
        await session.rollback()
        async with unit_of_work(state.session_factory) as revoking:
            await services.revoke_token_family(revoking, result)
        raise unauthorized("This refresh token was already used; its session is revoked.")
    assert isinstance(result, TokenPair)
    return _token_response(result)


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "/token",
        status_code=200,
        summary="Sign in with email and password",
        opt={"problems": (401, 429, 503)},
    )
    async def token(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[TokenRequest],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TokenResponse:
        account = data.email.strip().lower()
        async with sign_in_attempt(request, state, endpoint="token", account=account):
            pair = await services.sign_in(session, state.settings, data.email, data.password)
        return _token_response(pair)

    @post(
        "/refresh",
        status_code=200,
        summary="Rotate a refresh token for a new pair",
        opt={"problems": (401, 429)},
    )
    async def refresh(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RefreshRequest],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> TokenResponse:
        account = hash_token(data.refresh_token)
        async with sign_in_attempt(request, state, endpoint="refresh", account=account):
            return await _rotate(data.refresh_token, session, state)


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["auth"]  # noqa: RUF012 - Litestar reads this class attribute
    guards = [authenticated]  # noqa: RUF012

    @get("", summary="The caller, their memberships and agency roles")
    async def me(
        self, principal: NamedDependency[Principal], session: NamedDependency[AsyncSession]
    ) -> Me:
        return await services.profile(session, principal)

    @post(
        "/identities",
        status_code=201,
        summary="Link an external (OIDC) identity to the caller: 201 linked, 200 already linked",
        opt={"problems": (403, 409, 422)},
        responses={
            200: ResponseSpec(
                data_container=LinkedIdentity, description="Already linked to the caller"
            )
        },
    )
    async def link(
        self,
        data: JSONBody[IdentityLink],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> Response[LinkedIdentity]:
        link, created = await link_identity(session, state.settings, principal, data.id_token)
        return Response(
            LinkedIdentity(issuer=link["issuer"], subject=link["subject"]),
            status_code=201 if created else 200,
        )
