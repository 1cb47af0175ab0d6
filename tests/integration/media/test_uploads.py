"""Direct uploads on both stores, end to end: start → bytes to the store → confirm → the real
process_media actor → `ready` with derivatives that carry no metadata."""

from __future__ import annotations

import io
from typing import Any

import psycopg
from PIL import Image

from socialflow.settings import Settings
from tests.integration.media.support import (
    ROTATE_90_CW,
    Uploader,
    has_gps,
    mp4,
    photo,
    png,
    sha256,
)
from tests.integration.tenancy_fixtures import Platform, World

DERIVATIVES = {
    f"{size}_{fmt}" for size in ("thumb", "small", "medium", "large") for fmt in ("webp", "jpeg")
}


async def test_an_uploaded_photo_becomes_ready_with_every_derivative_and_no_gps(
    uploader: Uploader, pg: psycopg.Connection[Any]
) -> None:
    original = photo(3000, 2000)
    assert has_gps(original)

    item = await uploader.upload(original, title="Beach")

    assert item["status"] == "ready", item
    assert (item["width"], item["height"], item["detected_format"]) == (3000, 2000, "jpeg")
    assert item["sha256"] == sha256(original)
    assert item["dominant_color"].startswith("#")
    assert item["blurhash"]
    derivatives = {d["name"]: d for d in item["derivatives"]}
    assert set(derivatives) == DERIVATIVES
    assert (derivatives["large_webp"]["width"], derivatives["large_webp"]["height"]) == (2048, 1365)
    assert (derivatives["thumb_jpeg"]["width"], derivatives["thumb_jpeg"]["height"]) == (400, 400)
    assert derivatives["small_jpeg"]["width"] == 640
    for name, derivative in derivatives.items():
        data = await uploader.download(derivative["url"])
        rendered = Image.open(io.BytesIO(data))
        assert rendered.size == (derivative["width"], derivative["height"]), name
        assert not has_gps(data), name
        assert not rendered.getexif(), name  # no EXIF at all
        assert "icc_profile" not in rendered.info, name
        assert "xmp" not in rendered.info, name
    assert await uploader.download(item["original_url"]) == original
    events = [
        r[0]
        for r in pg.execute(
            "SELECT event_type FROM shared.outbox WHERE tenant = %s AND aggregate_id = %s "
            "ORDER BY id",
            (uploader.tenant, item["id"]),
        )
    ]
    assert events == ["media.upload_started", "media.uploaded", "media.processed"]


async def test_the_exif_orientation_is_applied_and_never_upscaled(uploader: Uploader) -> None:
    item = await uploader.upload(photo(600, 300, orientation=ROTATE_90_CW))
    assert (item["width"], item["height"]) == (300, 600)  # upright
    derivatives = {d["name"]: d for d in item["derivatives"]}
    assert (derivatives["large_jpeg"]["width"], derivatives["large_jpeg"]["height"]) == (300, 600)
    assert (derivatives["medium_jpeg"]["width"], derivatives["medium_jpeg"]["height"]) == (300, 600)
    assert derivatives["thumb_jpeg"]["width"] == 300  # a square of what there is
    upright = Image.open(io.BytesIO(await uploader.download(derivatives["large_jpeg"]["url"])))
    assert upright.size == (300, 600)


async def test_processing_the_same_event_twice_does_it_once(uploader: Uploader) -> None:
    item = await uploader.upload(photo(800, 600))
    assert item["status"] == "ready"
    assert await uploader.process() == 0  # redelivered: already applied


async def test_identical_bytes_are_stored_once(uploader: Uploader) -> None:
    data = photo(900, 600)
    first = await uploader.upload(data)
    # Declared at the start: nothing to upload, the existing item instead.
    again = await uploader.start(data, sha256=sha256(data))
    assert again.status_code == 200, again.text
    assert again.json()["duplicate_of"] == first["id"]
    assert again.json()["upload"] is None
    # Not declared: found by processing, which stores nothing of the copy.
    copy = await uploader.upload(data)
    assert copy["status"] == "failed"
    assert first["id"] in copy["failure_reason"]
    assert copy["derivatives"] == []


async def test_a_png_with_transparency_gets_white_behind_it(uploader: Uploader) -> None:
    item = await uploader.upload(png(), filename="logo.png", content_type="image/png")
    assert item["status"] == "ready", item
    assert item["detected_format"] == "png"


async def test_the_plans_storage_quota_is_taken_at_confirm(
    uploader: Uploader, platform: Platform, world: World, media_settings: Settings
) -> None:
    first = photo(700, 500)
    await uploader.upload(first)
    await platform.entitle(world.operator, world.tenant_a, storage_bytes=len(first) + 1000)
    second = photo(710, 500)
    started = await uploader.start(second)
    # The early check passes only while the bytes fit: this one does not.
    assert started.status_code == 409, started.text
    problem = started.json()
    assert problem["type"] == "/problems/quota-exceeded"
    assert (problem["resource"], problem["limit"], problem["used"]) == (
        "storage_bytes",
        len(first) + 1000,
        len(first),
    )
    usage = await platform.client.get(
        f"/api/v1/tenants/{world.tenant_a}/usage", headers=world.owner_a.headers
    )
    resources = {r["resource"]: r for r in usage.json()["resources"]}
    assert resources["media_items"]["used"] == 1
    assert resources["storage_bytes"]["used"] == len(first)


async def test_a_heic_photo_is_processed_like_any_other(uploader: Uploader) -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    out = io.BytesIO()
    Image.new("RGB", (800, 600), (20, 160, 90)).save(out, format="HEIF", quality=80)
    item = await uploader.upload(
        out.getvalue(), filename="IMG_0001.HEIC", content_type="image/heic"
    )
    assert item["status"] == "ready", item
    assert (item["detected_format"], item["width"], item["height"]) == ("heif", 800, 600)
    assert len(item["derivatives"]) == 8


async def test_a_video_gets_its_duration_codecs_and_a_poster_with_derivatives(
    uploader: Uploader, tmp_path: Any
) -> None:
    clip = mp4(tmp_path / "clip.mp4", frames=20)  # 2 s
    item = await uploader.upload(clip, filename="clip.mp4", content_type="video/mp4")
    assert item["status"] == "ready", item
    assert item["kind"] == "video"
    assert (item["detected_format"], item["width"], item["height"]) == ("mp4", 320, 240)
    assert item["codecs"].startswith("h264")
    assert 1.5 <= item["duration_s"] <= 2.5
    derivatives = {d["name"]: d for d in item["derivatives"]}
    assert derivatives["large_jpeg"]["width"] == 320  # the poster, never upscaled


async def test_near_duplicates_are_listed_as_similar(uploader: Uploader) -> None:
    first = await uploader.upload(photo(1200, 800))
    # The same picture re-encoded smaller: other bytes, nearly the same perceptual hash.
    out = io.BytesIO()
    Image.open(io.BytesIO(photo(1200, 800))).resize((900, 600)).save(out, "JPEG", quality=70)
    second = await uploader.upload(out.getvalue())
    other = await uploader.upload(png(640, 480), filename="other.png", content_type="image/png")
    assert second["status"] == "ready"
    assert second["similar"] == [first["id"]]
    assert first["similar"] == []  # read before the second existed
    assert (await uploader.item(first["id"]))["similar"] == [second["id"]]
    assert other["id"] not in (await uploader.item(first["id"]))["similar"]


async def test_media_usage_shows_bytes_and_counts_against_the_plan(uploader: Uploader) -> None:
    data = photo(700, 500)
    await uploader.upload(data)
    usage = await uploader.client.get(f"{uploader.base}/usage", headers=uploader.who.headers)
    assert usage.status_code == 200, usage.text
    shown = usage.json()
    assert shown["storage_bytes"]["used"] == len(data)
    assert shown["storage_bytes"]["limit"] == 250 * 1024**3  # pro
    assert shown["media_items"] == {"limit": 50_000, "used": 1, "remaining": 49_999}
    assert shown["by_status"] == {"ready": 1}
    assert shown["by_kind"] == {"image": 1}
