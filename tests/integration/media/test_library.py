"""The library: list with filters, edit, delete (hidden at once, its objects removed by the
actor), roles, audit."""

from __future__ import annotations

import io
from typing import Any

import psycopg
from PIL import Image

from socialflow.settings import Settings
from tests.integration.media.support import Uploader, has_gps, photo
from tests.integration.media.test_bad_input import _objects
from tests.integration.tenancy_fixtures import Platform, World


async def test_edits_are_audited_and_the_list_filters(
    uploader: Uploader, pg: psycopg.Connection[Any]
) -> None:
    first = await uploader.upload(photo(500, 400), tags=["beach"])
    second = await uploader.upload(photo(520, 400))
    patched = await uploader.client.patch(
        f"{uploader.base}/{second['id']}",
        json={
            "title": "Dunes",
            "alt_text": "Sand dunes at dusk",
            "tags": ["beach", "dusk"],
            "focal_point": {"x": 0.25, "y": 0.75},
        },
        headers=uploader.who.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["focal_point"] == {"x": 0.25, "y": 0.75}
    bad = await uploader.client.patch(
        f"{uploader.base}/{second['id']}",
        json={"focal_point": {"x": 1.5, "y": 0}},
        headers=uploader.who.headers,
    )
    assert bad.status_code in (400, 422)

    listed = await uploader.client.get(f"{uploader.base}?tag=dusk", headers=uploader.who.headers)
    assert [i["id"] for i in listed.json()["items"]] == [second["id"]]
    everything = await uploader.client.get(f"{uploader.base}?limit=1", headers=uploader.who.headers)
    assert everything.json()["items"][0]["id"] == second["id"]  # newest first
    rest = await uploader.client.get(
        f"{uploader.base}?limit=1&cursor={everything.json()['next_cursor']}",
        headers=uploader.who.headers,
    )
    assert rest.json()["items"][0]["id"] == first["id"]
    schema = "t_" + uploader.tenant.replace("-", "_")
    audited = pg.execute(
        f"SELECT action, after FROM {schema}.audit_log WHERE target_id = %s ORDER BY id",
        (second["id"],),
    ).fetchall()
    assert [a[0] for a in audited] == ["media.upload_started", "media.uploaded", "media.updated"]
    assert audited[-1][1]["title"] == "Dunes"


async def test_delete_hides_at_once_and_the_actor_removes_every_object(
    uploader: Uploader, media_settings: Settings
) -> None:
    item = await uploader.upload(photo(600, 400))
    assert len(_objects(media_settings, uploader, item["id"])) == 9  # original + 8
    deleted = await uploader.client.delete(
        f"{uploader.base}/{item['id']}", headers=uploader.who.headers
    )
    assert deleted.status_code == 204, deleted.text
    gone = await uploader.client.get(f"{uploader.base}/{item['id']}", headers=uploader.who.headers)
    assert gone.status_code == 404
    await uploader.process()
    assert _objects(media_settings, uploader, item["id"]) == []


async def test_editors_delete_their_own_media_and_admins_anyones(
    uploader: Uploader, platform: Platform, world: World
) -> None:
    item = await uploader.upload(photo(610, 400))
    url = f"{uploader.base}/{item['id']}"
    other_editor = await platform.member(world.tenant_a, "editor")
    viewer = await platform.member(world.tenant_a, "viewer")
    assert (await uploader.client.delete(url, headers=viewer.headers)).status_code == 403
    refused = await uploader.client.delete(url, headers=other_editor.headers)
    assert refused.status_code == 403
    assert (await uploader.client.get(url, headers=viewer.headers)).status_code == 200
    admin = await platform.member(world.tenant_a, "admin")
    assert (await uploader.client.delete(url, headers=admin.headers)).status_code == 204


async def test_platform_variants_have_their_sizes_and_follow_the_focal_point(
    uploader: Uploader,
) -> None:
    item = await uploader.upload(photo(3000, 2000))
    sizes = {
        "instagram_portrait": (1080, 1350),
        "instagram_square": (1080, 1080),
        "x_landscape": (1600, 900),
        "linkedin": (1200, 627),
        "story": (1080, 1920),
    }
    url = f"{uploader.base}/{item['id']}/variants"
    for profile, (width, height) in sizes.items():
        answer = await uploader.client.get(f"{url}/{profile}", headers=uploader.who.headers)
        assert answer.status_code == 200, answer.text
        shown = answer.json()
        # From the 2048 x 1365 derivative: never upscaled, the profile's aspect ratio kept.
        scale = min(1.0, 2048 / width, 1365 / height)
        assert (shown["width"], shown["height"]) == (round(width * scale), round(height * scale))
        data = await uploader.download(shown["url"])
        assert Image.open(io.BytesIO(data)).size == (shown["width"], shown["height"])
        assert not has_gps(data)
    first = (await uploader.client.get(f"{url}/story", headers=uploader.who.headers)).json()
    centred = await uploader.download(first["url"])
    await uploader.client.patch(
        f"{uploader.base}/{item['id']}",
        json={"focal_point": {"x": 0.1, "y": 0.5}},
        headers=uploader.who.headers,
    )
    moved = (await uploader.client.get(f"{url}/story", headers=uploader.who.headers)).json()
    assert moved["focal_point"] == {"x": 0.1, "y": 0.5}
    assert await uploader.download(moved["url"]) != centred
    unknown = await uploader.client.get(f"{url}/myspace", headers=uploader.who.headers)
    assert unknown.status_code == 404
