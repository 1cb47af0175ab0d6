"""Where media bytes live, behind one interface (STORAGE_BACKEND):

- `s3`: any S3-compatible store through boto3; clients upload and download with presigned
  URLs that go straight to the store.
- `local` (the embedded default): files under DATA_DIR/media, uploaded and downloaded through
  URLs the API itself serves, signed the way Rails' Active Storage disk service signs them:
  the signature binds the key, the method, the size, the content type and the expiry. A
  tampered or expired URL is refused, and an upload URL works once (the file is written once).

Keys are `tenants/<tenant id>/media/<media id>/<name>`; none comes from a client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote

from socialflow.settings import Settings

KEY_PATTERN = re.compile(r"tenants/[0-9a-f-]{36}/media/[0-9a-f-]{36}(/[a-z0-9_.-]{1,80})*")
# The route of the local backend's signed URLs (media/controllers.py serves it).
LOCAL_URL_PATH = "/api/v1/storage"


class StorageError(Exception):
    """The store refused or failed an operation."""


class InvalidSignedUrl(StorageError):
    """A local URL whose signature, method or expiry does not hold."""


def media_prefix(tenant_id: uuid.UUID, media_id: uuid.UUID) -> str:
    return f"tenants/{tenant_id}/media/{media_id}/"


def owner_of(key: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The tenant and media item a key belongs to."""
    parts = validate_key(key).split("/")
    return uuid.UUID(parts[1]), uuid.UUID(parts[3])


def validate_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key) or ".." in key:
        raise StorageError(f"not a media key: {key!r}")
    return key


@dataclass(frozen=True)
class UploadTarget:
    """Where and how the client sends the bytes."""

    url: str
    method: str
    headers: dict[str, str]


class Storage(Protocol):
    """What media needs of a store. Network and disk work runs off the event loop."""

    def upload_target(
        self, key: str, *, size: int, content_type: str, expires_s: int
    ) -> UploadTarget: ...

    def download_url(self, key: str, *, expires_s: int) -> str: ...

    async def size_of(self, key: str) -> int | None:
        """The object's size, None if there is none."""
        ...

    def open_read(self, key: str) -> IO[bytes]:
        """The object's bytes as a seekable file, read in bounded memory (blocking: call it
        from a worker thread)."""
        ...

    async def put(self, key: str, body: bytes, content_type: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; how many there were."""
        ...


# -- signed URLs of the local backend -------------------------------------------------------


@dataclass(frozen=True)
class SignedGrant:
    key: str
    method: str
    size: int | None
    content_type: str | None
    expires_at: int


class UrlSigner:
    """HMAC-SHA256 over a grant: `<payload>.<signature>`, both base64url."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def sign(self, grant: SignedGrant) -> str:
        payload = _b64(
            json.dumps(
                [grant.key, grant.method, grant.size, grant.content_type, grant.expires_at],
                separators=(",", ":"),
            ).encode()
        )
        return f"{payload}.{_b64(self._mac(payload))}"

    def verify(self, token: str, method: str, *, now: float | None = None) -> SignedGrant:
        payload, _, signature = token.partition(".")
        try:
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except ValueError as exc:
            raise InvalidSignedUrl("malformed signature") from exc
        if not hmac.compare_digest(given, self._mac(payload)):
            raise InvalidSignedUrl("signature does not match")
        key, signed_method, size, content_type, expires_at = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
        if signed_method != method:
            raise InvalidSignedUrl(f"signed for {signed_method}, not {method}")
        if expires_at <= (now if now is not None else time.time()):
            raise InvalidSignedUrl("expired")
        return SignedGrant(validate_key(key), method, size, content_type, expires_at)

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def url_signing_secret(settings: Settings) -> bytes:
    if settings.media_url_signing_key is not None:
        return settings.media_url_signing_key.get_secret_value().encode()
    # A key of its own derived from the JWT key: one secret to configure, two uses kept apart.
    return hmac.new(
        settings.signing_key().encode(), b"socialflow media url signing", hashlib.sha256
    ).digest()


class UploadRefused(StorageError):
    """What the client sent is not what the URL allows."""


class LocalStorage:
    def __init__(self, root: Path, signer: UrlSigner, base_url: str) -> None:
        self.root = root
        self.signer = signer
        self.base_url = base_url.rstrip("/")

    def path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _url(self, grant: SignedGrant) -> str:
        return f"{self.base_url}{LOCAL_URL_PATH}/{quote(self.signer.sign(grant))}"

    def upload_target(
        self, key: str, *, size: int, content_type: str, expires_s: int
    ) -> UploadTarget:
        grant = SignedGrant(
            validate_key(key), "PUT", size, content_type, int(time.time()) + expires_s
        )
        return UploadTarget(self._url(grant), "PUT", {"Content-Type": content_type})

    def download_url(self, key: str, *, expires_s: int) -> str:
        return self._url(
            SignedGrant(validate_key(key), "GET", None, None, int(time.time()) + expires_s)
        )

    async def size_of(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path(key).stat)).st_size
        except FileNotFoundError:
            return None

    def open_read(self, key: str) -> IO[bytes]:
        return self.path(key).open("rb")

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self.path(key), body)

    @staticmethod
    def _write(path: Path, body: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(body)
        os.replace(tmp.name, path)

    async def delete_prefix(self, prefix: str) -> int:
        folder = self.root / validate_key(prefix.rstrip("/"))

        def remove() -> int:
            if not folder.exists():
                return 0
            count = sum(1 for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder)
            return count

        return await asyncio.to_thread(remove)

    async def receive(
        self, grant: SignedGrant, content_type: str | None, chunks: AsyncIterator[bytes]
    ) -> None:
        """Write an upload sent to a signed URL (`grant`, verified): exactly the signed size
        and type, once."""
        if content_type != grant.content_type:
            raise UploadRefused(f"the URL is for Content-Type {grant.content_type}")
        path = self.path(grant.key)
        if path.exists():
            raise UploadRefused("this upload URL was used already")
        path.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            try:
                async for chunk in chunks:
                    received += len(chunk)
                    if grant.size is not None and received > grant.size:
                        raise UploadRefused(f"more than the {grant.size} bytes the URL allows")
                    await asyncio.to_thread(tmp.write, chunk)
                if received != grant.size:
                    raise UploadRefused(f"{received} bytes sent, the URL is for {grant.size}")
                tmp.flush()
                try:
                    os.link(tmp.name, path)  # fails if the file exists: written once
                except FileExistsError as exc:
                    raise UploadRefused("this upload URL was used already") from exc
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp.name)


# -- S3 -------------------------------------------------------------------------------------


class S3Storage:
    def __init__(self, client: Any, presigner: Any, bucket: str) -> None:
        self.client = client
        self.presigner = presigner  # a client whose endpoint is the one clients reach
        self.bucket = bucket

    def upload_target(
        self, key: str, *, size: int, content_type: str, expires_s: int
    ) -> UploadTarget:
        url = self.presigner.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": validate_key(key),
                "ContentType": content_type,
                "ContentLength": size,
                # A conditional write: the URL cannot replace what was uploaded (and checked).
                "IfNoneMatch": "*",
            },
            ExpiresIn=expires_s,
        )
        return UploadTarget(url, "PUT", {"Content-Type": content_type, "If-None-Match": "*"})

    def download_url(self, key: str, *, expires_s: int) -> str:
        url: str = self.presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": validate_key(key)},
            ExpiresIn=expires_s,
        )
        return url

    async def size_of(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = await asyncio.to_thread(
                self.client.head_object, Bucket=self.bucket, Key=validate_key(key)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(str(exc)) from exc
        return int(head["ContentLength"])

    def open_read(self, key: str) -> IO[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=validate_key(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                raise FileNotFoundError(key) from exc
            raise
        spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - returned
        for chunk in body.iter_chunks(1024 * 1024):
            spool.write(chunk)
        spool.seek(0)
        return spool

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        await asyncio.to_thread(
            self.client.put_object,
            Bucket=self.bucket,
            Key=validate_key(key),
            Body=body,
            ContentType=content_type,
        )

    async def delete_prefix(self, prefix: str) -> int:
        def remove() -> int:
            removed = 0
            paginator = self.client.get_paginator("list_objects_v2")
            checked = validate_key(prefix.rstrip("/")) + "/"  # never the whole bucket
            for page in paginator.paginate(Bucket=self.bucket, Prefix=checked):
                objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objects:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
                    removed += len(objects)
            return removed

        return await asyncio.to_thread(remove)


_STORES: dict[int, tuple[Settings, Storage]] = {}


def media_storage(settings: Settings) -> Storage:
    """The configured store, one per process and settings object."""
    kept = _STORES.get(id(settings))
    if kept is None or kept[0] is not settings:
        kept = _STORES[id(settings)] = (settings, _open_storage(settings))
    return kept[1]


def _open_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        import boto3
        from botocore.config import Config

        def client(endpoint: str | None) -> Any:
            return boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key_id,
                aws_secret_access_key=settings.s3_secret_access_key.get_secret_value()
                if settings.s3_secret_access_key
                else None,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )

        public = settings.s3_public_endpoint_url or settings.s3_endpoint_url
        return S3Storage(client(settings.s3_endpoint_url), client(public), settings.s3_bucket)
    return LocalStorage(
        settings.data_dir / "media",
        UrlSigner(url_signing_secret(settings)),
        settings.public_base_url,
    )
