"""HTTP for captions: ask for a new one (202, made by the caption actor), edit one by hand."""

from __future__ import annotations

import uuid

from litestar import Controller, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission
from socialflow.access.tenant_access import TenantAccess
from socialflow.captions import services
from socialflow.captions.bodies import CaptionPatch, CaptionRequest
from socialflow.media.bodies import CaptionOut


class CaptionsController(Controller):
    path = "/api/v1/tenants/{tenant:str}/media/{media_id:uuid}"
    tags = ["media"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "/captions",
        status_code=202,
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Generate a new caption (optionally with instructions or another model)",
        opt={"problems": (409,)},  # the item is not processed (ready)
    )
    async def request_caption(
        self,
        media_id: FromPath[uuid.UUID],
        data: JSONBody[CaptionRequest],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> CaptionOut:
        return await services.request_caption(session, access, media_id, data)

    @patch(
        "/caption",
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Edit the caption by hand (its state becomes `edited`)",
        opt={"problems": (409,)},
    )
    async def edit_caption(
        self,
        media_id: FromPath[uuid.UUID],
        data: JSONBody[CaptionPatch],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> CaptionOut:
        return await services.edit_caption(session, access, media_id, data)
