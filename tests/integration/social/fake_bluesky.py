"""A Bluesky PDS on loopback speaking the XRPC endpoints the adapter calls: sessions with
JWT-shaped tokens, handle resolution, blobs and post records. It checks records as strictly as
the real one (TID record keys, 300 graphemes) and more (facet ranges inside the text, blobs and
reply targets that exist), and misbehaves on demand (see MODES)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import regex  # no stubs published

POST = "app.bsky.feed.post"
SERVICE_DID = "did:web:pds.fake.test"
# What the next calls do, by `FakePds.mode`:
MODES = frozenset(
    {
        "ok",
        "rate_limited",  # 429 RateLimitExceeded with Bluesky's ratelimit-* headers
        "server_error",  # 500 InternalServerError
        "expired_token",  # an authenticated call answers 400 ExpiredToken
        "drop_after_accept",  # does the work (writes the record), closes without answering
        "slow",  # does the work, then waits `slow_s` before answering
    }
)
# How a createRecord for a key already taken is refused: as the reference PDS does today (a bare
# 500, bluesky-social/atproto#3718), or with an explicit error (as atproto#4728 proposes).
DUPLICATE_ANSWERS = frozenset({"internal_error", "already_exists"})
_TID = regex.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
_GRAPHEME = regex.compile(r"\X")
_AUTHENTICATED = frozenset(
    {
        "com.atproto.repo.uploadBlob",
        "com.atproto.repo.createRecord",
        "com.atproto.repo.deleteRecord",
    }
)


@dataclass(frozen=True)
class FakeAccount:
    did: str
    handle: str
    app_password: str


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.reply = _Reply(status, {"error": error, "message": message})


@dataclass
class FakePds:
    host: str
    port: int
    accounts: dict[str, FakeAccount] = field(default_factory=dict)  # by DID
    records: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    created: Counter[str] = field(default_factory=Counter)  # records written, by record key
    blobs: dict[str, bytes] = field(default_factory=dict)  # by CID
    calls: list[dict[str, Any]] = field(default_factory=list)
    access_ttl_s: float = 7200.0  # the reference PDS: two hours
    refresh_ttl_s: float = 90 * 86400.0
    max_blob_bytes: int = 50_000_000
    duplicate_answer: str = "internal_error"
    ratelimit_reset_in_s: int = 30
    slow_s: float = 3.0
    mode: str = "ok"
    mode_times: int | None = None
    mode_nsid: str | None = None  # the mode applies to this endpoint only
    mode_skip: int = 0  # calls the mode lets through first
    on_call: Callable[[str], None] | None = None  # with the NSID, mid-call, before answering
    _refresh_ids: dict[str, str] = field(default_factory=dict)  # live refresh token id -> DID
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_account(self, handle: str, app_password: str) -> FakeAccount:
        did = "did:plc:" + hashlib.sha256(handle.encode()).hexdigest()[:24]
        with self._lock:
            self.accounts[did] = FakeAccount(did, handle, app_password)
        return self.accounts[did]

    def set_mode(
        self, mode: str, times: int | None = None, *, nsid: str | None = None, skip: int = 0
    ) -> None:
        """Behave as `mode` for `times` calls (None: until changed) of `nsid` (None: any),
        after letting `skip` of them through."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {sorted(MODES)}")
        with self._lock:
            self.mode, self.mode_times, self.mode_nsid, self.mode_skip = mode, times, nsid, skip

    def session(self, did: str, *, access_ttl_s: float | None = None) -> dict[str, Any]:
        """A new session's answer (tokens included), as createSession gives it."""
        now = int(time.time())
        jti = secrets.token_urlsafe(16)
        ttl = self.access_ttl_s if access_ttl_s is None else access_ttl_s
        access: dict[str, Any] = {"scope": "com.atproto.appPass", "sub": did, "aud": SERVICE_DID}
        access |= {"iat": now, "exp": now + int(ttl)}
        refresh: dict[str, Any] = {"scope": "com.atproto.refresh", "sub": did, "jti": jti}
        refresh |= {"aud": SERVICE_DID, "iat": now, "exp": now + int(self.refresh_ttl_s)}
        with self._lock:
            self._refresh_ids[jti] = did
        account = self.accounts[did]
        return {
            "did": did,
            "handle": account.handle,
            "accessJwt": self._jwt("at+jwt", access),
            "refreshJwt": self._jwt("refresh+jwt", refresh),
            "active": True,
        }

    def revoke_sessions(self, did: str) -> None:
        """Revoke every refresh token of `did` (as revoking its app password does)."""
        with self._lock:
            for jti in [j for j, owner in self._refresh_ids.items() if owner == did]:
                del self._refresh_ids[jti]

    def record(self, did: str, rkey: str) -> dict[str, Any] | None:
        """The post record under `rkey` (its value), if there is one."""
        stored = self.records.get((did, POST, rkey))
        return None if stored is None else stored["value"]

    def calls_to(self, nsid: str) -> list[dict[str, Any]]:
        return [call for call in self.calls if call["nsid"] == nsid]

    def _take_mode(self, nsid: str, authenticated: bool) -> str:
        with self._lock:
            applies = self.mode != "ok" and self.mode_nsid in (None, nsid)
            if not applies or (self.mode == "expired_token" and not authenticated):
                return "ok"
            if self.mode_skip > 0:
                self.mode_skip -= 1
                return "ok"
            mode = self.mode
            if self.mode_times is not None:
                self.mode_times -= 1
                if self.mode_times <= 0:
                    self.mode, self.mode_times, self.mode_nsid = "ok", None, None
            return mode

    # --- tokens

    def _jwt(self, typ: str, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"typ": typ, "alg": "HS256"}).encode())
        payload = _b64(json.dumps(claims).encode())
        signature = hmac.new(self._secret, f"{header}.{payload}".encode(), "sha256").digest()
        return f"{header}.{payload}.{_b64(signature)}"

    def _verify(self, authorization: str | None, typ: str) -> dict[str, Any]:
        """The claims of the bearer token, refused as the reference PDS refuses them."""
        if not authorization or not authorization.startswith("Bearer "):
            raise _Refused(401, "AuthMissing", "Authentication Required")
        try:
            header, payload, signature = authorization.removeprefix("Bearer ").split(".")
            expected = hmac.new(self._secret, f"{header}.{payload}".encode(), "sha256").digest()
            if not hmac.compare_digest(_unb64(signature), expected):
                raise ValueError("bad signature")
            head, claims = json.loads(_unb64(header)), json.loads(_unb64(payload))
        except ValueError as exc:
            raise _Refused(400, "InvalidToken", "Token could not be verified") from exc
        if head.get("typ") != typ:
            raise _Refused(400, "InvalidToken", "Invalid token type")
        if claims["exp"] <= time.time():
            raise _Refused(400, "ExpiredToken", "Token has expired")
        if typ == "refresh+jwt" and claims["jti"] not in self._refresh_ids:
            raise _Refused(400, "ExpiredToken", "Token has been revoked")
        return dict(claims)

    # --- endpoints

    def answer(self, nsid: str, query: dict[str, str], body: Any, headers: Any) -> _Reply:
        authorization = headers.get("Authorization")
        if nsid == "com.atproto.server.createSession":
            return self._create_session(body)
        if nsid == "com.atproto.server.refreshSession":
            claims = self._verify(authorization, "refresh+jwt")
            with self._lock:  # rotated: the old refresh token is spent
                self._refresh_ids.pop(claims["jti"], None)
            return _Reply(200, self.session(claims["sub"]))
        if nsid == "com.atproto.identity.resolveHandle":
            handle = query.get("handle", "").lower()
            for account in self.accounts.values():
                if account.handle == handle:
                    return _Reply(200, {"did": account.did})
            raise _Refused(400, "InvalidRequest", "Unable to resolve handle")
        if nsid == "com.atproto.repo.getRecord":
            key = (query.get("repo", ""), query.get("collection", ""), query.get("rkey", ""))
            if key not in self.records:
                uri = "at://{}/{}/{}".format(*key)
                raise _Refused(400, "RecordNotFound", f"Could not locate record: {uri}")
            return _Reply(200, self.records[key])
        if nsid not in _AUTHENTICATED:
            raise _Refused(501, "MethodNotImplemented", "Method Not Implemented")
        did = self._verify(authorization, "at+jwt")["sub"]
        if nsid == "com.atproto.repo.uploadBlob":
            return self._upload_blob(body, headers.get("Content-Type", ""))
        if body.get("repo") != did:
            raise _Refused(401, "AuthenticationRequired", "Authentication Required")
        if nsid == "com.atproto.repo.deleteRecord":
            with self._lock:
                self.records.pop((did, body["collection"], body["rkey"]), None)
            return _Reply(200, {})
        return self._create_record(did, body)

    def _create_session(self, body: dict[str, Any]) -> _Reply:
        identifier = str(body.get("identifier", "")).lower()
        password = str(body.get("password", ""))
        for account in self.accounts.values():
            known = identifier in (account.handle, account.did)
            if known and hmac.compare_digest(password, account.app_password):
                return _Reply(200, self.session(account.did))
        raise _Refused(401, "AuthenticationRequired", "Invalid identifier or password")

    def _upload_blob(self, data: bytes, content_type: str) -> _Reply:
        if len(data) > self.max_blob_bytes:
            raise _Refused(400, "BlobTooLarge", "This file is too large")
        cid = _cid("bafkrei", data)
        with self._lock:
            self.blobs[cid] = data
        blob = {"$type": "blob", "ref": {"$link": cid}, "mimeType": content_type}
        return _Reply(200, {"blob": blob | {"size": len(data)}})

    def _create_record(self, did: str, body: dict[str, Any]) -> _Reply:
        collection, rkey, record = body.get("collection"), body.get("rkey"), body.get("record")
        if collection != POST or not isinstance(record, dict):
            raise _Refused(400, "InvalidRequest", "This fake PDS takes app.bsky.feed.post only")
        if not isinstance(rkey, str) or not _TID.fullmatch(rkey):
            raise _Refused(400, "InvalidRequest", f"Invalid TID: {rkey}")
        self._check_post(record)
        uri = f"at://{did}/{POST}/{rkey}"
        stored = {"uri": uri, "cid": _cid("bafyrei", json.dumps(record).encode()), "value": record}
        with self._lock:
            if (did, POST, rkey) in self.records:
                if self.duplicate_answer == "already_exists":
                    raise _Refused(409, "RecordAlreadyExists", f"Record already exists: {uri}")
                raise _Refused(500, "InternalServerError", "Internal Server Error")
            self.records[(did, POST, rkey)] = stored
            self.created[rkey] += 1
        commit = {"cid": _cid("bafyrei", uri.encode()), "rev": rkey}
        return _Reply(200, {"uri": uri, "cid": stored["cid"], "commit": commit})

    def _check_post(self, record: dict[str, Any]) -> None:
        text = record.get("text")
        if record.get("$type") != POST or not isinstance(text, str):
            raise _Refused(400, "InvalidRequest", "Invalid app.bsky.feed.post record")
        if len(_GRAPHEME.findall(text)) > 300 or len(text.encode()) > 3000:
            raise _Refused(
                400,
                "InvalidRequest",
                "Invalid app.bsky.feed.post record: Record/text must not be longer than 300 "
                "graphemes",
            )
        try:
            datetime.fromisoformat(record["createdAt"].replace("Z", "+00:00"))
        except (KeyError, AttributeError, ValueError) as exc:
            raise _Refused(400, "InvalidRequest", "Record/createdAt must be a datetime") from exc
        for facet in record.get("facets", []):
            _check_facet(text.encode(), facet)
        images = record.get("embed", {}).get("images", [])
        if len(images) > 4:
            raise _Refused(400, "InvalidRequest", "Record/embed/images must have at most 4")
        for image in images:
            blob = image["image"]
            if blob["ref"]["$link"] not in self.blobs or not isinstance(image.get("alt"), str):
                raise _Refused(400, "InvalidRequest", "Record/embed/images: blob or alt missing")
            if blob["size"] > 1_000_000:
                raise _Refused(400, "InvalidRequest", "BlobTooLarge: images take 1000000 bytes")
        for ref in record.get("reply", {}).values():
            target = ref["uri"].removeprefix("at://").split("/")
            found = self.records.get((target[0], target[1], target[2]))
            if found is None or found["cid"] != ref["cid"]:
                raise _Refused(400, "InvalidRequest", f"Reply target not found: {ref['uri']}")


def _check_facet(text: bytes, facet: dict[str, Any]) -> None:
    start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
    if not 0 <= start < end <= len(text):
        raise _Refused(400, "InvalidRequest", f"Facet range {start}-{end} is outside the text")
    try:
        text[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(400, "InvalidRequest", "Facet range splits a character") from exc
    for feature in facet["features"]:
        if feature["$type"].endswith("#mention") and not feature["did"].startswith("did:"):
            raise _Refused(400, "InvalidRequest", "Mention facet without a DID")


class _Server(ThreadingHTTPServer):
    pds: FakePds
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        pds = self.server.pds
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        url = urlsplit(self.path)
        nsid = url.path.removeprefix("/xrpc/")
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        is_json = self.headers.get("Content-Type", "").startswith("application/json")
        body = json.loads(raw or b"{}") if is_json else raw
        if pds.on_call is not None:
            pds.on_call(nsid)
        mode = pds._take_mode(nsid, nsid in _AUTHENTICATED)
        pds.calls.append(
            {
                "nsid": nsid,
                "method": self.command,
                "mode": mode,
                "query": query,
                "body": body if is_json else None,
                "content_type": self.headers.get("Content-Type"),
                "size": len(raw),
                "authorized": "Authorization" in self.headers,
            }
        )
        reply = _mode_reply(pds, mode)
        if reply is None:
            try:
                reply = pds.answer(nsid, query, body, self.headers)
            except _Refused as refused:
                reply = refused.reply
        if mode == "drop_after_accept":
            self.close_connection = True  # the work is done; the answer never leaves
            return
        if mode == "slow":
            time.sleep(pds.slow_s)
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        data = json.dumps(reply.payload).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client stopped waiting (a slow answer)


def _mode_reply(pds: FakePds, mode: str) -> _Reply | None:
    if mode == "rate_limited":
        reset = int(time.time()) + pds.ratelimit_reset_in_s
        reply = _Reply(429, {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"})
        reply.headers = {
            "ratelimit-limit": "5000",
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(reset),
            "ratelimit-policy": "5000;w=3600",
        }
        return reply
    if mode == "server_error":
        return _Reply(500, {"error": "InternalServerError", "message": "Internal Server Error"})
    if mode == "expired_token":
        return _Reply(400, {"error": "ExpiredToken", "message": "Token has expired"})
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cid(prefix: str, data: bytes) -> str:
    digest = base64.b32encode(hashlib.sha256(data).digest()).decode().lower().rstrip("=")
    return prefix + digest


@contextmanager
def fake_pds(host: str = "127.0.0.1") -> Iterator[FakePds]:
    """A fake PDS listening on `host` on a free port."""
    server = _Server((host, 0), _Handler)
    server.pds = FakePds(host, server.server_address[1])
    # A short poll interval: shutting down waits for one.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.pds
    finally:
        server.shutdown()
        server.server_close()
