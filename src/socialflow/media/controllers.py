"""HTTP for the media library, and the local store's signed URLs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import File
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission
from socialflow.access.tenant_access import TenantAccess
from socialflow.lib.pagination import SortKey, page_request, page_response
from socialflow.lib.problems import Problem
from socialflow.media import services
from socialflow.media.bodies import (
    MediaList,
    MediaOut,
    MediaPatch,
    MediaUsageOut,
    UploadCreate,
    UploadOut,
    VariantOut,
)
from socialflow.media.storage import (
    LOCAL_URL_PATH,
    InvalidSignedUrl,
    LocalStorage,
    StorageError,
    UploadRefused,
    media_storage,
    owner_of,
)

NEWEST_FIRST = SortKey.of(created_at=datetime, id=uuid.UUID)


class MediaController(Controller):
    path = "/api/v1/tenants/{tenant:str}/media"
    tags = ["media"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "/uploads",
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Start an upload: a media item and where to send its bytes",
        opt={"problems": (409, 413, 415)},  # the plan's storage or items; too large; type
    )
    async def start_upload(
        self,
        data: JSONBody[UploadCreate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> Response[UploadOut]:
        settings = state.settings
        started, status = await services.create_upload(
            session, settings, media_storage(settings), access, data
        )
        return Response(started, status_code=status)

    @post(
        "/{media_id:uuid}/confirm",
        status_code=200,
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Confirm the upload: checked, counted against the plan, then processed",
        opt={"problems": (409, 413)},
    )
    async def confirm(
        self,
        media_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> MediaOut:
        settings = state.settings
        return await services.confirm_upload(
            session, settings, media_storage(settings), access, media_id
        )

    @get("", guards=[requires(Permission.CONTENT_READ)], summary="Media, newest first")
    async def list_media(
        self,
        request: Request[Any, Any, Any],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        kind: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        uploaded_by: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        created_from: FromQuery[datetime | None] = None,
        created_to: FromQuery[datetime | None] = None,
    ) -> Response[MediaList]:
        page = page_request(limit, cursor, NEWEST_FIRST)
        filters = {
            "kind": kind,
            "status": status,
            "uploaded_by": uploaded_by,
            "tag": tag,
            "created_from": created_from,
            "created_to": created_to,
        }
        items = await services.list_media(session, page, filters=filters)
        return page_response(request, items, page, NEWEST_FIRST, MediaList)

    @get(
        "/usage",
        guards=[requires(Permission.CONTENT_READ)],
        summary="The tenant's media against its plan: bytes and items",
    )
    async def usage(
        self, access: NamedDependency[TenantAccess], session: NamedDependency[AsyncSession]
    ) -> MediaUsageOut:
        return await services.media_usage(session, access)

    @get(
        "/{media_id:uuid}",
        guards=[requires(Permission.CONTENT_READ)],
        summary="One item, with short-lived download URLs of its files",
    )
    async def read(
        self,
        media_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> MediaOut:
        settings = state.settings
        return await services.get_media(session, settings, media_storage(settings), media_id)

    @get(
        "/{media_id:uuid}/variants/{profile:str}",
        guards=[requires(Permission.CONTENT_READ)],
        summary="The item cut for a platform (rendered on first use, around its focal point)",
        opt={"problems": (409,)},  # not ready
    )
    async def variant(
        self,
        media_id: FromPath[uuid.UUID],
        profile: FromPath[str],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> VariantOut:
        settings = state.settings
        return await services.variant(
            session,
            settings=settings,
            storage=media_storage(settings),
            access=access,
            media_id=media_id,
            profile=profile,
        )

    @patch(
        "/{media_id:uuid}",
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Title, alt text, tags, focal point",
    )
    async def update(
        self,
        media_id: FromPath[uuid.UUID],
        data: JSONBody[MediaPatch],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> MediaOut:
        return await services.update_media(session, access, media_id, data)

    @delete(
        "/{media_id:uuid}",
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Delete: hidden at once, its files removed after (others' media: admins)",
    )
    async def remove(
        self,
        media_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> None:
        await services.delete_media(session, access, media_id)


def _local(state: State) -> LocalStorage:
    storage = media_storage(state.settings)
    if not isinstance(storage, LocalStorage):
        raise Problem(404, "not-found", "This store serves no signed URLs.")
    return storage


class LocalStorageController(Controller):
    """The local store's signed URLs: the URL is the credential (no Authorization)."""

    path = LOCAL_URL_PATH
    tags = ["media"]  # noqa: RUF012 - Litestar reads this class attribute
    include_in_schema = False

    @put(
        "/{token:str}",
        status_code=204,
        request_max_body_size=None,  # the signed size bounds it, checked while it streams
    )
    async def upload(
        self,
        token: FromPath[str],
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> None:
        storage = _local(state)
        try:
            grant = storage.signer.verify(token, "PUT")  # before a byte of the body is read
        except (InvalidSignedUrl, StorageError, ValueError) as exc:
            raise Problem(403, "invalid-signature", "This URL is not valid.") from exc
        if not await services.accepts_upload(session, *owner_of(grant.key)):
            raise Problem(409, "upload-refused", "This item takes no upload (any more).")
        try:
            await storage.receive(grant, request.headers.get("content-type"), request.stream())
        except UploadRefused as exc:
            raise Problem(409, "upload-refused", f"{exc}.") from exc

    @get("/{token:str}")
    async def download(self, token: FromPath[str], state: State) -> File:
        storage = _local(state)
        try:
            grant = storage.signer.verify(token, "GET")
            path = storage.path(grant.key)
        except (InvalidSignedUrl, StorageError, ValueError) as exc:
            raise Problem(403, "invalid-signature", "This URL is not valid.") from exc
        if not path.is_file():
            raise Problem(404, "not-found", "No such file.")
        return File(path=path, filename=path.name, content_disposition_type="inline")
