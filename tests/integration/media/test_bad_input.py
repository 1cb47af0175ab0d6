"""Bad input: each gets a clear problem, or a `failed` item with its reason, and leaves no
object, no half-written row, no item stuck in `processing`."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
import pytest

from socialflow.media.storage import LOCAL_URL_PATH, LocalStorage, SignedGrant, media_storage
from socialflow.settings import Settings
from tests.integration.media.support import Uploader, photo, png


def _objects(settings: Settings, uploader: Uploader, media_id: str) -> list[str]:
    """The names of what the store holds for the item."""
    storage = media_storage(settings)
    prefix = f"tenants/{uploader.tenant_id}/media/{media_id}/"
    if isinstance(storage, LocalStorage):
        folder = storage.root / prefix
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)  # type: ignore[attr-defined]
    return sorted(o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", []))


async def _uploaded_then_processed(uploader: Uploader, data: bytes, **body: Any) -> dict[str, Any]:
    started = await uploader.start(data, **body)
    assert started.status_code == 201, started.text
    sent = await uploader.send(started.json()["upload"], data)
    assert sent.is_success, sent.text
    assert (await uploader.confirm(started.json()["media_id"])).status_code == 200
    await uploader.process()
    return await uploader.item(started.json()["media_id"])


async def test_bytes_that_are_not_what_they_claim_fail_with_the_reason_and_leave_nothing(
    uploader: Uploader, media_settings: Settings
) -> None:
    item = await _uploaded_then_processed(uploader, png(), filename="x.jpg")  # a PNG as JPEG
    assert item["status"] == "failed"
    assert item["failure_reason"] == "the bytes are PNG, not the declared image/jpeg"
    assert _objects(media_settings, uploader, item["id"]) == []

    text = b"#!/bin/sh\necho not a picture\n"
    item = await _uploaded_then_processed(uploader, text, filename="run.jpg")
    assert item["status"] == "failed"
    assert "not a JPEG, PNG, WebP, GIF, HEIC/HEIF, MP4, MOV or WebM" in item["failure_reason"]


async def test_a_truncated_image_fails_as_undecodable(
    uploader: Uploader, media_settings: Settings
) -> None:
    whole = photo(1000, 800)
    item = await _uploaded_then_processed(uploader, whole[: len(whole) // 3])
    assert item["status"] == "failed"
    assert item["failure_reason"].startswith("the image cannot be decoded")
    assert _objects(media_settings, uploader, item["id"]) == []


async def test_a_decompression_bomb_is_refused_before_it_is_decoded(
    uploader: Uploader, worker_settings: Settings
) -> None:
    limit = worker_settings.media_max_image_pixels
    from socialflow.workers.actors import WorkerResources

    WorkerResources.configure(worker_settings.model_copy(update={"media_max_image_pixels": 10_000}))
    WorkerResources._resources = None
    try:
        item = await _uploaded_then_processed(uploader, photo(200, 100))
    finally:
        WorkerResources.configure(worker_settings)
    assert limit > 10_000
    assert item["status"] == "failed"
    assert item["failure_reason"] == "200x100 is 20000 pixels, over the 10000 allowed"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"size": 0}, 400),  # an empty file
        ({"filename": "../../etc/passwd"}, 400),
        ({"filename": "a\\b.jpg"}, 400),
        ({"filename": "bell\x07.jpg"}, 400),
        ({"content_type": "application/x-sh"}, 415),
        ({"size": 60 * 1024 * 1024}, 413),  # over the 50 MB of an image
    ],
)
async def test_bad_upload_requests_are_refused_and_create_nothing(
    uploader: Uploader, pg: psycopg.Connection[Any], body: dict[str, Any], status: int
) -> None:
    before = pg.execute(
        f"SELECT count(*) FROM t_{uploader.tenant.replace('-', '_')}.media_items"
    ).fetchone()
    started = await uploader.start(b"x" * 10, **body)
    assert started.status_code in ({status, 422} if status == 400 else {status}), started.text
    assert started.headers["content-type"].startswith("application/problem+json")
    after = pg.execute(
        f"SELECT count(*) FROM t_{uploader.tenant.replace('-', '_')}.media_items"
    ).fetchone()
    assert after == before


async def test_confirming_before_the_upload_or_twice_is_a_conflict(uploader: Uploader) -> None:
    data = photo(500, 400)
    started = await uploader.start(data)
    media_id = started.json()["media_id"]
    early = await uploader.confirm(media_id)
    assert early.status_code == 409
    assert early.json()["type"] == "/problems/not-uploaded"
    await uploader.send(started.json()["upload"], data)
    assert (await uploader.confirm(media_id)).status_code == 200
    twice = await uploader.confirm(media_id)
    assert twice.status_code == 409
    assert twice.json()["type"] == "/problems/invalid-state"


@pytest.mark.parametrize("media_settings", ["local"], indirect=True)  # the API's own URLs
async def test_a_tampered_replayed_or_expired_local_url_is_refused(
    uploader: Uploader, media_settings: Settings
) -> None:
    local_only = media_storage(media_settings)
    assert isinstance(local_only, LocalStorage)
    data = photo(400, 300)
    started = (await uploader.start(data)).json()
    upload = started["upload"]
    path = urlsplit(upload["url"]).path
    payload, signature = path.rsplit("/", 1)[1].split(".")
    forged = f"{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{signature}"
    tampered = await uploader.client.put(
        f"{LOCAL_URL_PATH}/{forged}", content=data, headers=upload["headers"]
    )
    assert tampered.status_code == 403
    wrong_size = await uploader.client.put(path, content=data + b"x", headers=upload["headers"])
    assert wrong_size.status_code == 409
    wrong_type = await uploader.client.put(
        path, content=data, headers={"Content-Type": "image/png"}
    )
    assert wrong_type.status_code == 409
    assert (
        await uploader.client.put(path, content=data, headers=upload["headers"])
    ).status_code == 204
    replayed = await uploader.client.put(path, content=data, headers=upload["headers"])
    assert replayed.status_code == 409
    assert replayed.json()["type"] == "/problems/upload-refused"

    expired = local_only.signer.sign(
        SignedGrant(
            f"tenants/{uploader.tenant_id}/media/{started['media_id']}/other",
            "PUT",
            len(data),
            "image/jpeg",
            int(time.time()) - 1,
        )
    )
    late = await uploader.client.put(
        f"{LOCAL_URL_PATH}/{quote(expired)}", content=data, headers=upload["headers"]
    )
    assert late.status_code == 403
    # A download URL does not upload, an upload URL does not download.
    assert (await uploader.client.get(path)).status_code == 403


async def test_another_tenants_media_is_out_of_reach(
    uploader: Uploader, platform: Any, world: Any
) -> None:
    item = await uploader.upload(photo(500, 300))
    mine = f"/api/v1/tenants/{world.tenant_a}/media/{item['id']}"
    theirs = f"/api/v1/tenants/{world.tenant_b}/media/{item['id']}"
    assert (await platform.client.get(mine, headers=world.owner_b.headers)).status_code == 404
    # Tenant B's owner, under B's own path, cannot reach A's item either: B's schema lacks it.
    assert (await platform.client.get(theirs, headers=world.owner_b.headers)).status_code == 404
    patched = await platform.client.patch(
        theirs, json={"title": "x"}, headers=world.owner_b.headers
    )
    assert patched.status_code == 404


async def test_an_upload_never_confirmed_holds_its_quota_then_expires_with_its_objects(
    uploader: Uploader, media_settings: Settings, pg: psycopg.Connection[Any]
) -> None:
    from datetime import UTC, datetime, timedelta

    from socialflow.db.session import unit_of_work
    from socialflow.db.tenancy import enter_tenant_schema
    from socialflow.media.services import expire_pending_uploads

    data = photo(450, 300)
    started = (await uploader.start(data)).json()
    await uploader.send(started["upload"], data)
    usage = await uploader.client.get(
        f"/api/v1/tenants/{uploader.tenant}/usage", headers=uploader.who.headers
    )
    held = {r["resource"]: r["used"] for r in usage.json()["resources"]}
    assert (held["media_items"], held["storage_bytes"]) == (1, len(data))  # held while pending
    assert _objects(media_settings, uploader, started["media_id"]) == ["original"]

    schema = "t_" + uploader.tenant.replace("-", "_")
    async with unit_of_work(uploader.factory) as session:
        await enter_tenant_schema(session, schema)
        now = datetime.now(UTC)
        assert await expire_pending_uploads(session, media_settings, uploader.tenant, now=now) == 0
        later = now + timedelta(hours=media_settings.media_pending_expiry_hours, minutes=1)
        assert (
            await expire_pending_uploads(session, media_settings, uploader.tenant, now=later) == 1
        )
    await uploader.process()
    assert _objects(media_settings, uploader, started["media_id"]) == []
    gone = await uploader.confirm(started["media_id"])
    assert gone.status_code == 404
    usage = await uploader.client.get(
        f"/api/v1/tenants/{uploader.tenant}/usage", headers=uploader.who.headers
    )
    freed = {r["resource"]: r["used"] for r in usage.json()["resources"]}
    assert (freed["media_items"], freed["storage_bytes"]) == (0, 0)


@pytest.mark.parametrize("media_settings", ["local"], indirect=True)
async def test_a_local_upload_url_of_a_deleted_item_writes_nothing(
    uploader: Uploader, media_settings: Settings
) -> None:
    data = photo(460, 300)
    started = (await uploader.start(data)).json()
    deleted = await uploader.client.delete(
        f"{uploader.base}/{started['media_id']}", headers=uploader.who.headers
    )
    assert deleted.status_code == 204
    sent = await uploader.send(started["upload"], data)
    assert sent.status_code == 409, sent.text
    assert _objects(media_settings, uploader, started["media_id"]) == []


async def test_comments_in_the_original_reach_no_derivative(uploader: Uploader) -> None:
    import io as bytes_io

    from PIL import Image

    image = Image.new("RGB", (500, 400), (10, 120, 200))
    out = bytes_io.BytesIO()
    image.save(out, "JPEG", comment=b"taken at 12 Secret Street")
    assert b"Secret Street" in out.getvalue()
    item = await uploader.upload(out.getvalue())
    for derivative in item["derivatives"]:
        data = await uploader.download(derivative["url"])
        assert b"Secret Street" not in data, derivative["name"]
