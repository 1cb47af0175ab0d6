"""HTTP for identity: tokens and the caller's profile."""

from __future__ import annotations

import msgspec
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.db.session import unit_of_work
from socialflow.identity import services
from socialflow.identity.invitations import accept_invitation
from socialflow.identity.schemas import (
    InvitationAccept,
    InvitationAccepted,
    Me,
    RefreshRequest,
    TokenRequest,
    TokenResponse,
)
from socialflow.identity.services import RefreshOutcome, TokenPair
from socialflow.identity.tokens import Principal, unauthorized


def _token_response(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
    )


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]  # noqa: RUF012 - Litestar reads this class attribute

    @post("/token", status_code=200, summary="Sign in with email and password")
    async def token(
        self, data: JSONBody[TokenRequest], session: NamedDependency[AsyncSession], state: State
    ) -> TokenResponse:
        pair = await services.sign_in(session, state.settings, data.email, data.password)
        return _token_response(pair)

    @post("/refresh", status_code=200, summary="Rotate a refresh token for a new pair")
    async def refresh(
        self, data: JSONBody[RefreshRequest], session: NamedDependency[AsyncSession], state: State
    ) -> TokenResponse:
        outcome, result = await services.rotate_refresh_token(
            session, state.settings, data.refresh_token
        )
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


class InvitationController(Controller):
    path = "/api/v1/invitations"
    tags = ["auth"]  # noqa: RUF012 - Litestar reads this class attribute

    @post("/accept", status_code=200, summary="Accept an invitation (sets a new password)")
    async def accept(
        self,
        data: JSONBody[InvitationAccept],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> InvitationAccepted:
        accepted = await accept_invitation(
            session, state.settings, token=data.token, name=data.name, password=data.password
        )
        return InvitationAccepted(str(accepted.user_id), accepted.tenant, accepted.role)


class MeController(Controller):
    path = "/api/v1/me"
    tags = ["auth"]  # noqa: RUF012 - Litestar reads this class attribute

    @get("", summary="The caller, their memberships and agency roles")
    async def me(
        self, principal: NamedDependency[Principal], session: NamedDependency[AsyncSession]
    ) -> Me:
        return msgspec.convert(await services.profile(session, principal), Me)
