"""A Mastodon instance on loopback speaking the API SocialFlow uses (apps, OAuth with PKCE,
instance, media, statuses), with switchable misbehaviour (see MODES) and every request recorded.

The person approving an app is `FakeMastodon.approve(authorization_url, account)`: it checks the
query as /oauth/authorize does and answers the redirect back, with a code bound to the PKCE
challenge. The endpoints themselves are in `fake_mastodon_api`, the JSON in
`fake_mastodon_shapes`."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from socialflow.lib.outbound_http import guarded_client
from socialflow.settings import Settings
from tests.integration.social.fake_mastodon_api import answer
from tests.integration.social.fake_mastodon_shapes import (
    SUPPORTED_MIME_TYPES,
    FakeAccount,
    FakeApp,
    FakeGrant,
    FakeMedia,
    FakeStatus,
    FakeToken,
    RecordedFile,
    RecordedRequest,
    Reply,
)

# What the instance does, by `FakeMastodon.mode`, to the calls each mode concerns:
MODES = frozenset(
    {
        "ok",
        "rate_limited",  # any /api call: 429 with X-RateLimit-Limit/-Remaining/-Reset
        "server_error",  # any /api call: 500 with an HTML page
        "unauthorized",  # any /api call: 401 {"error": "The access token is invalid"}
        "slow",  # any /api call: does the work, then waits `slow_s` before answering
        "reject",  # POST /api/v1/statuses: 422 with `reject_error`
        "media_reject",  # POST /api/v2/media: 422 with `media_reject_error`
        "drop_after_accept",  # POST /api/v1/statuses: creates it, closes without an answer
        "gateway_timeout",  # POST /api/v1/statuses: creates it, a proxy's 504 page
    }
)
IDEMPOTENCY_TTL_S = 3600.0  # Mastodon keeps a status's Idempotency-Key in Redis for an hour


@dataclass
class FakeMastodon:
    host: str
    port: int
    # What /api/v2/instance says, and what statuses and media are held to.
    max_characters: int = 500
    max_media: int = 4
    characters_per_url: int = 23
    supported_mime_types: tuple[str, ...] = SUPPORTED_MIME_TYPES
    processing_polls: int = 2  # a new upload answers 202, then this many GETs 206, then 200
    mode: str = "ok"
    mode_times: int | None = None
    retry_after_s: float = 90.0  # "rate_limited": X-RateLimit-Reset is this far ahead
    slow_s: float = 2.0
    refreshed_token_lifetime_s: int = 7200  # of a token issued by the refresh grant
    reject_error: str = "Validation failed: Text contains a word this server does not allow"
    media_reject_error: str = "Validation failed: File content type is invalid, File is invalid"
    statuses_created: int = 0  # statuses really created (an idempotent replay is not one)
    requests: list[RecordedRequest] = field(default_factory=list)
    apps: dict[str, FakeApp] = field(default_factory=dict)  # by client_id
    accounts: dict[str, FakeAccount] = field(default_factory=dict)
    tokens: dict[str, FakeToken] = field(default_factory=dict)  # by access token
    grants: dict[str, FakeGrant] = field(default_factory=dict)  # by code
    media: dict[str, FakeMedia] = field(default_factory=dict)
    statuses: dict[str, FakeStatus] = field(default_factory=dict)
    # (account id, Idempotency-Key) -> (status id, expiry as time.monotonic())
    idempotency: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    on_request: Callable[[RecordedRequest], None] | None = None  # mid-request, before answering
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- what tests set up

    def set_mode(self, mode: str, times: int | None = None) -> None:
        """Behave as `mode` for the next `times` calls it concerns (None: until changed)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {sorted(MODES)}")
        with self.lock:
            self.mode, self.mode_times = mode, times

    def add_account(self, username: str) -> FakeAccount:
        with self.lock:
            account = FakeAccount(self.next_id(), username, username.title())
            self.accounts[account.id] = account
            return account

    def add_app(self, scopes: tuple[str, ...] = ("read", "write")) -> FakeApp:
        with self.lock:
            app = FakeApp(
                id=self.next_id(),
                name="Test app",
                client_id=secrets.token_urlsafe(32),
                client_secret=secrets.token_urlsafe(32),
                redirect_uris=("urn:ietf:wg:oauth:2.0:oob",),
                scopes=scopes,
            )
            self.apps[app.client_id] = app
            return app

    def issue_token(
        self,
        account: FakeAccount,
        *,
        app: FakeApp | None = None,
        scopes: tuple[str, ...] = ("read", "write"),
        expires_in: int | None = None,
        refresh: bool = False,
    ) -> FakeToken:
        """A token as if the account had connected through `app` (created when needed)."""
        with self.lock:
            if app is None and refresh:
                app = self.add_app(scopes)
            return self.new_token(
                account.id, scopes, app.client_id if app else None, expires_in, refresh
            )

    def new_token(
        self,
        account_id: str,
        scopes: tuple[str, ...],
        client_id: str | None,
        expires_in: int | None,
        refresh: bool,
    ) -> FakeToken:
        token = FakeToken(
            access_token=secrets.token_urlsafe(32),
            account_id=account_id,
            scopes=scopes,
            client_id=client_id,
            expires_at=time.time() + expires_in if expires_in else None,
            refresh_token=secrets.token_urlsafe(32) if refresh else None,
        )
        with self.lock:
            self.tokens[token.access_token] = token
        return token

    def approve(self, authorization_url: str, account: FakeAccount) -> str:
        """The person signed in as `account` approves: the redirect URL with code and state.
        ValueError for a query /oauth/authorize would refuse."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorization_url).query).items()}
        with self.lock:
            app = self.apps.get(query.get("client_id", ""))
            if urlsplit(authorization_url).path != "/oauth/authorize" or app is None:
                raise ValueError("unknown client or not the authorize endpoint")
            if query.get("response_type") != "code":
                raise ValueError("unsupported_response_type")
            if query.get("redirect_uri") not in app.redirect_uris:
                raise ValueError("invalid_redirect_uri")
            scopes = tuple(query.get("scope", "read").split())
            if not set(scopes) <= set(app.scopes):
                raise ValueError("invalid_scope")
            method = query.get("code_challenge_method")
            if query.get("code_challenge") and method not in ("S256", "plain"):
                raise ValueError("invalid_request: code_challenge_method")
            grant = FakeGrant(
                code=secrets.token_urlsafe(32),
                client_id=app.client_id,
                account_id=account.id,
                redirect_uri=query["redirect_uri"],
                scopes=scopes,
                code_challenge=query.get("code_challenge"),
                code_challenge_method=method,
                expires_at=time.time() + 600,
            )
            self.grants[grant.code] = grant
        back = {"code": grant.code} | ({"state": query["state"]} if "state" in query else {})
        return f"{grant.redirect_uri}?{urlencode(back)}"

    def revoke_refresh_token(self, refresh_token: str) -> None:
        with self.lock:
            for token in self.tokens.values():
                if token.refresh_token == refresh_token:
                    token.revoked = True

    def add_status(
        self, account: FakeAccount, text: str, created_at: datetime | None = None
    ) -> FakeStatus:
        """A status the account posted (at `created_at`) outside SocialFlow."""
        with self.lock:
            return self.create_status(account.id, text, created_at=created_at)

    def statuses_of(self, account: FakeAccount) -> list[FakeStatus]:
        """The account's statuses not deleted, newest first."""
        with self.lock:
            own = [s for s in self.statuses.values() if s.account_id == account.id]
        return sorted((s for s in own if not s.deleted), key=lambda s: -int(s.id))

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        with self.lock:
            return [
                r for r in self.requests if r.method == method and r.path.startswith(path_prefix)
            ]

    # --- what the endpoints use (under `lock`)

    def next_id(self) -> str:
        return str(next(self._ids))

    def take_mode(self, concerns: frozenset[str]) -> str:
        """This call's mode when it concerns the call (counting it against `mode_times`)."""
        with self.lock:
            if self.mode == "ok" or self.mode not in concerns:
                return "ok"
            mode = self.mode
            if self.mode_times is not None:
                self.mode_times -= 1
                if self.mode_times <= 0:
                    self.mode, self.mode_times = "ok", None
            return mode

    def create_status(
        self,
        account_id: str,
        text: str,
        *,
        created_at: datetime | None = None,
        media_ids: tuple[str, ...] = (),
        in_reply_to: FakeStatus | None = None,
        visibility: str = "public",
        idempotency_key: str | None = None,
    ) -> FakeStatus:
        moment = created_at or datetime.now(UTC)
        # Mastodon's ids are snowflakes: the creation time in milliseconds, then a sequence.
        snowflake = (int(moment.timestamp() * 1000) << 16) | (int(self.next_id()) & 0xFFFF)
        status = FakeStatus(
            id=str(snowflake),
            account_id=account_id,
            text=text,
            created_at=moment,
            visibility=visibility,
            media_ids=media_ids,
            in_reply_to_id=in_reply_to.id if in_reply_to else None,
            in_reply_to_account_id=in_reply_to.account_id if in_reply_to else None,
            idempotency_key=idempotency_key,
        )
        self.statuses[status.id] = status
        for media_id in media_ids:
            self.media[media_id].status_id = status.id
        if idempotency_key is not None:
            expiry = time.monotonic() + IDEMPOTENCY_TTL_S
            self.idempotency[(account_id, idempotency_key)] = (status.id, expiry)
        self.statuses_created += 1
        return status


# --- the HTTP server


class _Server(ThreadingHTTPServer):
    fake: FakeMastodon
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as a real instance behind nginx
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        recorded = self._parse()
        with fake.lock:
            fake.requests.append(recorded)
        if fake.on_request is not None:
            fake.on_request(recorded)
        reply = answer(fake, recorded)
        if reply.drop:
            # The work is done; the connection closes before any answer (a crash, a proxy
            # restart): the client cannot know what happened.
            self.close_connection = True
            return
        if reply.delay_s > 0:
            time.sleep(reply.delay_s)
        try:
            self._send(reply)
        except OSError:
            self.close_connection = True  # the client gave up waiting

    def _parse(self) -> RecordedRequest:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ctype = self.headers.get("Content-Type", "")
        form: dict[str, Any] = {}
        files: list[RecordedFile] = []
        if ctype.startswith("application/json") and raw:
            parsed = json.loads(raw)
            form = parsed if isinstance(parsed, dict) else {}
        elif ctype.startswith("application/x-www-form-urlencoded"):
            form = _fields(parse_qs(raw.decode(), keep_blank_values=True))
        elif ctype.startswith("multipart/form-data"):
            form, files = _multipart(ctype, raw)
        return RecordedRequest(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            form=form,
            files=files,
        )

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.payload, str):
            data, ctype = reply.payload.encode(), "text/html; charset=utf-8"
        else:
            data, ctype = json.dumps(reply.payload).encode(), "application/json; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _fields(parsed: dict[str, list[str]]) -> dict[str, Any]:
    """Rails' reading of form fields: `name[]` is a list, any other name its last value."""
    return {k.removesuffix("[]"): v if k.endswith("[]") else v[-1] for k, v in parsed.items()}


def _multipart(ctype: str, raw: bytes) -> tuple[dict[str, Any], list[RecordedFile]]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
    form: dict[str, Any] = {}
    files: list[RecordedFile] = []
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition") or "")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            form[name] = data.decode()
        else:
            files.append(RecordedFile(name, filename, part.get_content_type(), len(data)))
    return form, files


def loopback_client(settings: Settings, timeout: httpx.Timeout | float = 5.0) -> httpx.AsyncClient:
    """The guarded client as production builds it, with loopback (where the fake listens) and
    plain http allowed: a redirect is never followed."""
    reachable = settings.model_copy(
        update={"outbound_allowed_networks": ("127.0.0.1/32",), "outbound_allow_http": True}
    )
    return guarded_client(reachable, max_redirects=0, timeout=timeout)


@contextmanager
def fake_mastodon(host: str = "127.0.0.1") -> Iterator[FakeMastodon]:
    """A fake Mastodon instance listening on `host` on a free port."""
    server = _Server((host, 0), _Handler)
    server.fake = FakeMastodon(host, server.server_address[1])
    # A short poll interval: shutting down waits for it, once per test.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.fake
    finally:
        server.shutdown()
        server.server_close()
