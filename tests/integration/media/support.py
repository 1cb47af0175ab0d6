"""Test files (made here, with the metadata a phone writes) and the upload steps as a client
takes them."""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import ExifTags, Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.event_routing import ROUTES
from socialflow.workers.testing import apply_routed_events
from tests.integration.tenancy_fixtures import Account

ORIENTATION = 0x0112
ROTATE_90_CW = 6  # the camera was turned: display rotated 90° clockwise


def photo(
    width: int = 1200, height: int = 800, *, gps: bool = True, orientation: int | None = None
) -> bytes:
    """A JPEG with EXIF (camera make, a GPS position, optionally an orientation)."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    for x in range(0, width, 40):  # some structure, so hashes differ between sizes
        image.paste((30, 30, 200), (x, 0, x + 20, height // 2))
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if gps:
        location = exif.get_ifd(ExifTags.IFD.GPSInfo)
        location[ExifTags.GPS.GPSLatitudeRef] = "N"
        location[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
        location[ExifTags.GPS.GPSLongitudeRef] = "E"
        location[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 36.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=90)
    return out.getvalue()


def png(width: int = 300, height: int = 200) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (10, 200, 10, 128)).save(out, "PNG")
    return out.getvalue()


def mp4(path: Path, frames: int = 20) -> bytes:
    """A 320x240 H.264 clip of `frames` frames at 10 fps, written at `path`."""
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), (320, 240), fps=10, codec="libx264")
    writer.send(None)
    for n in range(frames):
        writer.send(bytes([n * 10 % 256]) * (320 * 240 * 3))
    writer.close()
    return path.read_bytes()


def has_gps(data: bytes) -> bool:
    exif = Image.open(io.BytesIO(data)).getexif()
    return bool(exif.get_ifd(ExifTags.IFD.GPSInfo))


@dataclass
class Uploader:
    """A tenant member uploading through the API, and the worker applying what follows."""

    client: AsyncTestClient[Litestar]
    factory: async_sessionmaker[AsyncSession]
    tenant: str
    tenant_id: uuid.UUID
    who: Account

    @property
    def base(self) -> str:
        return f"/api/v1/tenants/{self.tenant}/media"

    async def start(self, data: bytes, **body: Any) -> httpx.Response:
        fields = {
            "filename": "holiday.jpg",
            "content_type": "image/jpeg",
            "size": len(data),
            **body,
        }
        return await self.client.post(f"{self.base}/uploads", json=fields, headers=self.who.headers)

    async def send(self, upload: dict[str, Any], data: bytes) -> httpx.Response:
        """The bytes to the upload URL: the API itself (local), or the store (S3)."""
        url = upload["url"]
        if url.startswith("http://127.0.0.1:8000/"):  # the local store: this app
            path = urlsplit(url).path
            return await self.client.put(path, content=data, headers=upload["headers"])
        async with httpx.AsyncClient() as store:
            return await store.put(url, content=data, headers=upload["headers"])

    async def confirm(self, media_id: str) -> httpx.Response:
        return await self.client.post(f"{self.base}/{media_id}/confirm", headers=self.who.headers)

    async def process(self) -> int:
        return await apply_routed_events(
            self.factory, ROUTES, self.tenant_id, "media.uploaded", "media.failed", "media.deleted"
        )

    async def upload(self, data: bytes, **body: Any) -> dict[str, Any]:
        """Start, send, confirm and process; the item as the API then shows it."""
        started = await self.start(data, **body)
        assert started.status_code == 201, started.text
        sent = await self.send(started.json()["upload"], data)
        assert sent.status_code in (200, 204), sent.text
        confirmed = await self.confirm(started.json()["media_id"])
        assert confirmed.status_code == 200, confirmed.text
        await self.process()
        return await self.item(started.json()["media_id"])

    async def item(self, media_id: str) -> dict[str, Any]:
        found = await self.client.get(f"{self.base}/{media_id}", headers=self.who.headers)
        assert found.status_code == 200, found.text
        return found.json()  # type: ignore[no-any-return]

    async def download(self, url: str) -> bytes:
        if url.startswith("http://127.0.0.1:8000/"):
            answer = await self.client.get(urlsplit(url).path)
        else:
            async with httpx.AsyncClient() as store:
                answer = await store.get(url)
        assert answer.status_code == 200, answer.text
        return answer.content


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
