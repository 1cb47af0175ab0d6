"""The Bluesky adapter: a post is an `app.bsky.feed.post` record in the account's AT Protocol
repository, written through its PDS's XRPC API with the session's tokens.

A resend can never post twice. Every delivery writes under a record key of its own, a TID made
of its first attempt's time and a hash of its idempotency key, and a repository holds one record
per key. The PDS refuses a second write of a key (today with a bare 500: bluesky-social/atproto
#3718; a dedicated error is proposed in #4728), so after any refusal that may mean "exists" the
record is read back, and if it is there it is the receipt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

from socialflow.lib.outbound import OutboundError, OutboundRefused
from socialflow.social.platforms.base import (
    Account,
    ConnectedIdentity,
    ConnectRefused,
    Credentials,
    FailureKind,
    OutcomeUnknown,
    OutgoingMedia,
    OutgoingPost,
    PublishError,
    Receipt,
    ReconnectNeeded,
)
from socialflow.social.platforms.bluesky_text import (
    MAX_GRAPHEMES,
    MAX_TEXT_BYTES,
    detect_facets,
    facet_json,
    graphemes,
)

POST_COLLECTION = "app.bsky.feed.post"
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 1_000_000  # app.bsky.embed.images#image: maxSize of the blob
TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TOKEN_ERRORS = frozenset({"ExpiredToken", "InvalidToken", "AuthMissing", "AuthenticationRequired"})
_GONE_ACCOUNT_ERRORS = frozenset({"AccountTakedown", "AccountDeactivated"})
# Failures before any byte left: nothing reached the PDS. The last three: not a URL we may call.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_NOT_CALLABLE = (OutboundRefused, httpx.InvalidURL, httpx.UnsupportedProtocol)


def tid(timestamp_us: int, clock_id: int) -> str:
    """The TID of a time (microseconds since the epoch) and a 10-bit clock id: 13 characters,
    sorting as the times do."""
    if not (0 <= timestamp_us < 1 << 53 and 0 <= clock_id < 1 << 10):
        raise ValueError("a TID holds 53 bits of microseconds and a 10-bit clock id")
    value = timestamp_us << 10 | clock_id
    return "".join(TID_ALPHABET[(value >> shift) & 31] for shift in range(60, -1, -5))


def record_key(created_at: datetime, idempotency_key: str, *, offset_us: int = 0) -> str:
    """The record key of a delivery: the same on every retry, as its inputs are."""
    at = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    micros = (at - _EPOCH) // timedelta(microseconds=1) + offset_us
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    return tid(micros, int.from_bytes(digest[:2], "big") & 0x3FF)


def comment_key(post: OutgoingPost) -> str:
    # One microsecond after the post: it sorts after it and can never take the post's key.
    return record_key(post.created_at, f"{post.idempotency_key}:comment", offset_us=1)


def token_expiry(jwt: str) -> datetime | None:
    """The `exp` of a JWT, read without verifying it (the PDS verifies; we only plan)."""
    try:
        return datetime.fromtimestamp(int(_claims(jwt)["exp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class _StrongRef:
    uri: str
    cid: str

    def as_json(self) -> dict[str, str]:
        return {"uri": self.uri, "cid": self.cid}


class _NoAnswer(Exception):
    """No answer came back. `sent`: the request may have reached the PDS."""

    def __init__(self, detail: str, *, sent: bool, refused: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.sent, self.refused = detail, sent, refused

    def as_failure(self) -> PublishError:
        """What this is when it cannot have published anything (blobs, reads, deletes)."""
        kind = FailureKind.DESTINATION_REFUSED if self.refused else FailureKind.RETRYABLE
        return PublishError(kind, self.detail)


@dataclass(frozen=True, slots=True)
class _Pds:
    """A PDS, called through the guarded client; `did`: the repository (account) it serves."""

    http: httpx.AsyncClient
    url: str
    did: str = ""

    async def call(
        self,
        method: str,
        nsid: str,
        *,
        token: str | None = None,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        url = f"{self.url.rstrip('/')}/xrpc/{nsid}"
        try:
            return await self.http.request(
                method, url, params=params, json=body, content=content, headers=headers
            )
        except _NOT_CALLABLE as exc:
            # The guard's words name the address a host resolved to: never shown to a tenant.
            raise _NoAnswer(
                f"{nsid}: the server's address is not allowed", sent=False, refused=True
            ) from exc
        except _UNSENT as exc:
            raise _NoAnswer(f"{nsid}: {type(exc).__name__}", sent=False) from exc
        except (httpx.TransportError, OutboundError) as exc:  # a timeout, a dropped connection
            raise _NoAnswer(f"{nsid}: {type(exc).__name__}", sent=True) from exc


class BlueskyAdapter:
    platform = "bluesky"
    idempotent_resend = True  # a record key exists once in a repository

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def validate(self, account: Account, post: OutgoingPost) -> list[str]:
        problems = _text_problems("The text", post.text)
        if post.first_comment is not None:
            problems += _text_problems("The first comment", post.first_comment)
        return problems + _media_problems(post.media)

    async def publish(self, account: Account, post: OutgoingPost) -> Receipt:
        if problems := _media_problems(post.media):
            raise PublishError(FailureKind.MEDIA_REFUSED, " ".join(problems))
        if problems := _text_problems("The text", post.text):
            raise PublishError(FailureKind.CONTENT_REJECTED, " ".join(problems))
        pds, token = self._pds(account), _access_token(account)
        record = await self._post_record(pds, post.text, post.created_at)
        if post.media:
            images = [await self._image(pds, token, media) for media in post.media]
            record["embed"] = {"$type": "app.bsky.embed.images", "images": images}
        rkey = record_key(post.created_at, post.idempotency_key)
        ref, created = await self._create(pds, token, rkey, record)
        extra: dict[str, Any] = {"uri": ref.uri, "cid": ref.cid, "rkey": rkey}
        if not created:
            extra["already_published"] = True
        if post.first_comment:
            extra |= await self._first_comment(pds, token, post, ref)
        return _receipt(account, rkey, ref, extra)

    async def lookup(self, account: Account, post: OutgoingPost) -> Receipt | None:
        pds, rkey = self._pds(account), record_key(post.created_at, post.idempotency_key)
        ref = await _get_record(pds, rkey)
        if ref is None:
            return None
        extra: dict[str, Any] = {"uri": ref.uri, "cid": ref.cid, "rkey": rkey}
        missing = False
        if post.first_comment:
            try:
                comment = await _get_record(pds, comment_key(post))
            except OutcomeUnknown as exc:
                extra["first_comment_error"] = str(exc)
            else:
                extra |= _comment_extra(comment)
                missing = comment is None
        return replace(_receipt(account, rkey, ref, extra), incomplete=missing)

    async def complete(self, account: Account, post: OutgoingPost, found: Receipt) -> Receipt:
        """The first comment `lookup` found missing, written as a reply to the found post (its
        record key makes a repeat harmless); what failed is told in the receipt."""
        if not found.incomplete or not post.first_comment:
            return found
        extra = {k: v for k, v in found.extra.items() if k != "first_comment_error"}
        parent = _StrongRef(str(found.extra["uri"]), str(found.extra["cid"]))
        try:
            token = _access_token(account)
        except PublishError as exc:
            extra["first_comment_error"] = f"{exc.kind}: {exc.detail}"
        else:
            extra |= await self._first_comment(self._pds(account), token, post, parent)
        return replace(found, extra=extra, incomplete="first_comment_uri" not in extra)

    async def delete(self, account: Account, receipt: Receipt) -> None:
        """Delete the post and its first comment (a reply left alone would dangle)."""
        pds, token = self._pds(account), _access_token(account)
        prefix = f"at://{account.account_ref}/{POST_COLLECTION}/"
        for uri in (receipt.extra.get("first_comment_uri"), receipt.platform_post_id):
            if not uri:
                continue
            if not isinstance(uri, str) or not uri.startswith(prefix):
                raise PublishError(FailureKind.DESTINATION_REFUSED, f"not this account's: {uri}")
            body = {"repo": account.account_ref, "collection": POST_COLLECTION}
            body["rkey"] = uri.removeprefix(prefix)
            try:
                answer = await pds.call(
                    "POST", "com.atproto.repo.deleteRecord", token=token, body=body
                )
            except _NoAnswer as exc:
                raise exc.as_failure() from exc  # deleting again is harmless
            if not answer.is_success:
                raise _failure(answer)

    async def refresh(self, account: Account) -> Credentials:
        refresh_jwt = account.credentials.refresh_token
        if not refresh_jwt:
            raise ReconnectNeeded("no Bluesky refresh token is stored for this account")
        try:
            answer = await self._pds(account).call(
                "POST", "com.atproto.server.refreshSession", token=refresh_jwt
            )
        except _NoAnswer as exc:
            raise exc.as_failure() from exc
        if answer.is_success:
            return _session(answer)[1]
        name, _ = _xrpc_error(answer)
        # The PDS answers a revoked or expired refresh token with 400 ExpiredToken.
        if answer.status_code == 401 or name in _TOKEN_ERRORS | _GONE_ACCOUNT_ERRORS:
            raise ReconnectNeeded(f"Bluesky no longer accepts this session ({name or 401})")
        raise _failure(answer)

    # --- the steps of a publish

    def _pds(self, account: Account) -> _Pds:
        return _Pds(self._http, account.server_url, account.account_ref)

    async def _post_record(self, pds: _Pds, text: str, created_at: datetime) -> dict[str, Any]:
        record: dict[str, Any] = {
            "$type": POST_COLLECTION,
            "text": text,
            "createdAt": _datetime(created_at),
        }
        facets = []
        dids: dict[str, str | None] = {}
        for span in detect_facets(text):
            if span.kind != "mention":
                facets.append(facet_json(span))
                continue
            handle = span.value.lower()
            if handle not in dids:
                dids[handle] = await _resolve_handle(pds, handle)
            if (did := dids[handle]) is not None:  # an unknown handle stays plain text
                facets.append(facet_json(span, did=did))
        if facets:
            record["facets"] = facets
        return record

    async def _image(self, pds: _Pds, token: str, media: OutgoingMedia) -> dict[str, Any]:
        try:
            answer = await pds.call(
                "POST",
                "com.atproto.repo.uploadBlob",
                token=token,
                content=media.data,
                content_type=media.content_type,
            )
        except _NoAnswer as exc:
            raise exc.as_failure() from exc  # a blob no record uses is dropped by the PDS
        if not answer.is_success:
            raise _failure(answer, media=True)
        blob = _json(answer).get("blob")
        if not isinstance(blob, dict):
            raise PublishError(FailureKind.RETRYABLE, "Bluesky's uploadBlob answer had no blob")
        image: dict[str, Any] = {"image": blob, "alt": media.alt_text or ""}
        if size := _image_size(media.data):
            image["aspectRatio"] = {"width": size[0], "height": size[1]}
        return image

    async def _create(
        self, pds: _Pds, token: str, rkey: str, record: dict[str, Any]
    ) -> tuple[_StrongRef, bool]:
        """The record under `rkey`, and whether this call wrote it (False: it was there)."""
        body = {"repo": pds.did, "collection": POST_COLLECTION, "rkey": rkey, "record": record}
        try:
            answer = await pds.call("POST", "com.atproto.repo.createRecord", token=token, body=body)
        except _NoAnswer as exc:
            if exc.sent:
                raise OutcomeUnknown(f"no answer to createRecord ({exc.detail})") from exc
            raise exc.as_failure() from exc
        if answer.is_success and (ref := _strong_ref(_json(answer))) is not None:
            return ref, True
        if answer.is_success or _may_exist(answer):
            if (existing := await _get_record(pds, rkey)) is not None:
                return existing, False
            if answer.is_success:
                raise OutcomeUnknown("createRecord answered without the record's uri and cid")
        raise _failure(answer)

    async def _first_comment(
        self, pds: _Pds, token: str, post: OutgoingPost, parent: _StrongRef
    ) -> dict[str, Any]:
        """The reply's refs, or why it failed: the post itself is published either way."""
        try:
            record = await self._post_record(pds, post.first_comment or "", post.created_at)
            record["reply"] = {"root": parent.as_json(), "parent": parent.as_json()}
            ref, _ = await self._create(pds, token, comment_key(post), record)
        except PublishError as exc:
            return {"first_comment_error": f"{exc.kind}: {exc.detail}"}
        except OutcomeUnknown as exc:
            return {"first_comment_error": f"unknown: {exc}"}
        return _comment_extra(ref)


async def sign_in(
    http: httpx.AsyncClient, service_url: str, *, identifier: str, app_password: str
) -> ConnectedIdentity:
    """Open a session with an app password (`com.atproto.server.createSession`). Only the
    session's tokens are kept: the app password is not stored anywhere."""
    body = {"identifier": identifier.strip().removeprefix("@"), "password": app_password}
    try:
        answer = await _Pds(http, service_url).call(
            "POST", "com.atproto.server.createSession", body=body
        )
    except _NoAnswer as exc:
        if exc.refused:
            raise ConnectRefused("this server address is not allowed") from exc
        raise ConnectRefused("the Bluesky server did not answer; try again later") from exc
    if answer.is_success:
        try:
            data, credentials = _session(answer)
        except PublishError as exc:
            raise ConnectRefused("the Bluesky server answered without a session") from exc
        scope = _claims(credentials.access_token or "").get("scope")
        return ConnectedIdentity(
            account_ref=data["did"],
            handle=str(data.get("handle") or ""),
            credentials=credentials,
            scopes=(scope,) if isinstance(scope, str) else ("atproto",),
        )
    name, _ = _xrpc_error(answer)
    if name == "AuthFactorTokenRequired":
        raise ConnectRefused("the account asks for an email code: use an app password instead")
    if name in _GONE_ACCOUNT_ERRORS:
        raise ConnectRefused("this Bluesky account is suspended or deactivated")
    if answer.status_code == 401:
        raise ConnectRefused("wrong handle or app password")
    if answer.status_code == 429:
        raise ConnectRefused("Bluesky refused too many sign-in attempts; try again later")
    raise ConnectRefused(f"the Bluesky server refused the sign-in ({answer.status_code})")


async def _resolve_handle(pds: _Pds, handle: str) -> str | None:
    try:
        answer = await pds.call(
            "GET", "com.atproto.identity.resolveHandle", params={"handle": handle}
        )
    except _NoAnswer as exc:
        raise exc.as_failure() from exc
    if answer.status_code == 400:  # "Unable to resolve handle"
        return None
    if not answer.is_success:
        raise _failure(answer)  # a mention is not dropped because the PDS was busy
    did = _json(answer).get("did")
    return did if isinstance(did, str) and did.startswith("did:") else None


async def _get_record(pds: _Pds, rkey: str) -> _StrongRef | None:
    """The post under `rkey`; None when the PDS says there is none; OutcomeUnknown when it
    cannot tell."""
    params = {"repo": pds.did, "collection": POST_COLLECTION, "rkey": rkey}
    try:
        answer = await pds.call("GET", "com.atproto.repo.getRecord", params=params)
    except _NoAnswer as exc:
        raise OutcomeUnknown(f"getRecord failed ({exc.detail})") from exc
    if answer.is_success and (ref := _strong_ref(_json(answer))) is not None:
        return ref
    if _xrpc_error(answer)[0] == "RecordNotFound":
        return None
    raise OutcomeUnknown(f"getRecord answered {answer.status_code}")


def _text_problems(label: str, text: str) -> list[str]:
    if (length := graphemes(text)) > MAX_GRAPHEMES:
        return [f"{label} has {length} characters; Bluesky allows {MAX_GRAPHEMES}."]
    if (size := len(text.encode())) > MAX_TEXT_BYTES:
        return [f"{label} takes {size} bytes; Bluesky allows {MAX_TEXT_BYTES}."]
    return []


def _media_problems(media: Sequence[OutgoingMedia]) -> list[str]:
    problems = []
    if len(media) > MAX_IMAGES:
        problems.append(f"Bluesky takes at most {MAX_IMAGES} images; this post has {len(media)}.")
    for item in media:
        if not item.content_type.startswith("image/"):
            problems.append(f"{item.filename}: Bluesky posts here take images only.")
        elif len(item.data) > MAX_IMAGE_BYTES:
            problems.append(
                f"{item.filename} is {len(item.data)} bytes; Bluesky takes images of at most "
                f"{MAX_IMAGE_BYTES} bytes."
            )
    return problems


def _access_token(account: Account) -> str:
    if not account.credentials.access_token:
        raise PublishError(FailureKind.AUTH_REVOKED, "no Bluesky session is stored")
    return account.credentials.access_token


def _session(answer: httpx.Response) -> tuple[dict[str, Any], Credentials]:
    data = _json(answer)
    access, refresh, did = data.get("accessJwt"), data.get("refreshJwt"), data.get("did")
    if not (isinstance(access, str) and isinstance(refresh, str) and isinstance(did, str)):
        raise PublishError(FailureKind.RETRYABLE, "Bluesky's session answer had no tokens")
    return data, Credentials(
        access_token=access, refresh_token=refresh, expires_at=token_expiry(access)
    )


def _claims(jwt: str) -> dict[str, Any]:
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def _receipt(account: Account, rkey: str, ref: _StrongRef, extra: dict[str, Any]) -> Receipt:
    profile = account.handle or account.account_ref
    url = f"https://bsky.app/profile/{profile}/post/{rkey}"
    return Receipt(platform_post_id=ref.uri, url=url, extra=extra)


def _comment_extra(ref: _StrongRef | None) -> dict[str, Any]:
    if ref is None:
        return {"first_comment_error": "the first comment is not published"}
    return {"first_comment_uri": ref.uri, "first_comment_cid": ref.cid}


def _failure(answer: httpx.Response, *, media: bool = False) -> PublishError:
    status = answer.status_code
    name, message = _xrpc_error(answer)
    detail = f"Bluesky answered {status} {name}".rstrip() + (f": {message}" if message else "")
    if status == 401 or name in _TOKEN_ERRORS | _GONE_ACCOUNT_ERRORS:
        if name == "ExpiredToken":
            detail += " (the access token expired: retry after refreshing the session)"
        return PublishError(FailureKind.AUTH_REVOKED, detail, status=status)
    if status in (408, 429) or status >= 500 or name == "ConcurrentWrites":
        retry_after = _retry_after(answer)
        return PublishError(FailureKind.RETRYABLE, detail, status=status, retry_after_s=retry_after)
    if status in (400, 413):
        kind = FailureKind.MEDIA_REFUSED if media else FailureKind.CONTENT_REJECTED
        return PublishError(kind, detail, status=status)
    return PublishError(FailureKind.DESTINATION_REFUSED, detail, status=status)


def _may_exist(answer: httpx.Response) -> bool:
    """Whether a refused createRecord may mean the key is taken (a 500 today, see above)."""
    name, message = _xrpc_error(answer)
    status = answer.status_code
    return status == 409 or status >= 500 or "exist" in f"{name} {message}".lower()


def _retry_after(answer: httpx.Response) -> float | None:
    now = time.time()
    reset = answer.headers.get("ratelimit-reset", "").strip()
    if reset.isdigit():
        # Bluesky sends the reset as unix seconds; the IETF draft as seconds from now.
        value = int(reset)
        return float(max(0, value - now if value > 1_000_000_000 else value))
    retry_after = answer.headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    try:
        return max(0.0, parsedate_to_datetime(retry_after).timestamp() - now)
    except (TypeError, ValueError):  # absent or not a date
        return None


def _xrpc_error(answer: httpx.Response) -> tuple[str, str]:
    """The XRPC error's name and message (`{"error": ..., "message": ...}`), trimmed."""
    data = _json(answer)
    name, message = data.get("error"), data.get("message")
    return (
        name[:100] if isinstance(name, str) else "",
        message[:200] if isinstance(message, str) else "",
    )


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        data = answer.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _strong_ref(data: dict[str, Any]) -> _StrongRef | None:
    uri, cid = data.get("uri"), data.get("cid")
    if isinstance(uri, str) and isinstance(cid, str) and uri and cid:
        return _StrongRef(uri, cid)
    return None


def _datetime(at: datetime) -> str:
    """As Bluesky's clients write `createdAt`: UTC, milliseconds, "Z"."""
    utc = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image's header, for the `aspectRatio` clients lay out with."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return (width, height) if width > 0 and height > 0 else None
