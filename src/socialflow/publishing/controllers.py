"""HTTP for posts and their review."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.guards import requires
from socialflow.access.permissions import Permission
from socialflow.access.tenant_access import TenantAccess
from socialflow.lib.pagination import SortKey, page_request, page_response
from socialflow.publishing import services
from socialflow.publishing.bodies import (
    ApprovalIn,
    CommentList,
    CommentOut,
    DeliveryResolution,
    PostCreate,
    PostList,
    PostOut,
    PostPatch,
    ReviewComment,
)

NEWEST_FIRST = SortKey.of(created_at=datetime, id=uuid.UUID)


class PostController(Controller):
    path = "/api/v1/tenants/{tenant:str}/posts"
    tags = ["posts"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "",
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Write a post (a draft)",
        opt={"problems": (422,)},
    )
    async def create_post(
        self,
        data: JSONBody[PostCreate],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> PostOut:
        return await services.create_post(session, access, data)

    @get("", guards=[requires(Permission.CONTENT_READ)], summary="Posts, newest first")
    async def list_posts(
        self,
        request: Request[Any, Any, Any],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        *,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
    ) -> Response[PostList]:
        page = page_request(limit, cursor, NEWEST_FIRST)
        items = await services.list_posts(session, page, status=status)
        return page_response(request, items, page, NEWEST_FIRST, PostList)

    @get("/{post_id:uuid}", guards=[requires(Permission.CONTENT_READ)], summary="A post")
    async def get_post(
        self,
        post_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> PostOut:
        return await services.get_post(session, post_id)

    @patch(
        "/{post_id:uuid}",
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Edit a post (after approval: back to review)",
        opt={"problems": (409, 422)},
    )
    async def update_post(
        self,
        post_id: FromPath[uuid.UUID],
        data: JSONBody[PostPatch],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> PostOut:
        return await services.update_post(session, access, post_id, data)

    @post(
        "/{post_id:uuid}/submit",
        status_code=200,
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Submit for review (approved at once where the tenant reviews nothing)",
        opt={"problems": (409, 422)},
    )
    async def submit(
        self,
        post_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> PostOut:
        return await services.submit_post(session, access, post_id)

    @post(
        "/{post_id:uuid}/approve",
        status_code=200,
        guards=[requires(Permission.CONTENT_APPROVE)],
        summary="Approve the post as it is now (bound to its content's SHA-256)",
        opt={"problems": (409, 422)},
    )
    async def approve(
        self,
        post_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        data: JSONBody[ApprovalIn | None] = None,
    ) -> PostOut:
        return await services.approve_post(session, access, post_id, data or ApprovalIn())

    @post(
        "/{post_id:uuid}/request-changes",
        status_code=200,
        guards=[requires(Permission.CONTENT_APPROVE)],
        summary="Send the post back to its author with a comment",
        opt={"problems": (409,)},
    )
    async def request_changes(
        self,
        post_id: FromPath[uuid.UUID],
        data: JSONBody[ReviewComment],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> PostOut:
        return await services.request_changes(session, access, post_id, data)

    @get(
        "/{post_id:uuid}/comments",
        guards=[requires(Permission.CONTENT_READ)],
        summary="The post's review thread",
    )
    async def list_comments(
        self,
        post_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> CommentList:
        return CommentList(items=await services.list_comments(session, post_id))

    @post(
        "/{post_id:uuid}/comments",
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Comment on a post",
    )
    async def comment(
        self,
        post_id: FromPath[uuid.UUID],
        data: JSONBody[ReviewComment],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> CommentOut:
        return await services.comment_post(session, access, post_id, data)

    @post(
        "/{post_id:uuid}/schedule",
        status_code=200,
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Schedule an approved post at its approved time",
        opt={"problems": (409, 422)},
    )
    async def schedule(
        self,
        post_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> PostOut:
        return await services.schedule_post(session, access, post_id, now=False)

    @post(
        "/{post_id:uuid}/publish",
        status_code=200,
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Publish an approved post now",
        opt={"problems": (409, 422)},
    )
    async def publish_now(
        self,
        post_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> PostOut:
        return await services.schedule_post(session, access, post_id, now=True)

    @post(
        "/{post_id:uuid}/cancel",
        status_code=200,
        guards=[requires(Permission.CONTENT_WRITE)],
        summary="Cancel a post that is not publishing yet",
        opt={"problems": (409,)},
    )
    async def cancel(
        self,
        post_id: FromPath[uuid.UUID],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
    ) -> PostOut:
        return await services.cancel_post(session, access, post_id)

    @post(
        "/{post_id:uuid}/destinations/{destination_id:uuid}/resolve",
        status_code=200,
        guards=[requires(Permission.PUBLISH)],
        summary="Decide an unconfirmed delivery: published, not published, or send again",
        description=(
            "For a delivery whose outcome the platform never confirmed (`unconfirmed`): the "
            "person who looked there says what they found. `published` needs the post's `url` "
            "there; `send_again` makes one more attempt now (only if it is not there: it may "
            "post twice otherwise)."
        ),
        opt={"problems": (404, 409, 422)},
    )
    async def resolve(  # noqa: PLR0917 - the request's parts, each a dependency
        self,
        post_id: FromPath[uuid.UUID],
        destination_id: FromPath[uuid.UUID],
        data: JSONBody[DeliveryResolution],
        access: NamedDependency[TenantAccess],
        session: NamedDependency[AsyncSession],
        state: State,
    ) -> PostOut:
        return await services.resolve_delivery(
            session,
            access,
            post_id,
            destination_id,
            data,
            max_attempts=state.settings.publish_max_attempts,
        )
