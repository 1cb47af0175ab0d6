"""The whole pipeline across real processes: `socialflow api`, `relay` and `worker` with the real
actor registry, on the test servers. An invitation made over HTTP is mailed by the real
`send_invitation_email` actor; then each process is stopped while it has work in flight and
finishes that work (README: API 10 s grace, relay its current batch, worker its messages), and
a worker killed with SIGKILL mid-actor loses nothing and mails once.

Work is made "in flight" by real slowness, never by hooks in the code: a row lock the test
holds (API), a Redis paused with CLIENT PAUSE (relay), an SMTP server on loopback that delays
its answer (worker).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis as redis_lib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

from socialflow.db.engine import libpq_url
from socialflow.embedded import EmbeddedRedis
from socialflow.workers.broker import NAMESPACE
from tests.e2e.conftest import PIPELINE_DB, CommandRun, free_port, redis_database
from tests.e2e.otlp_collector import ReceivedSpan, otlp_collector

Start = Callable[..., CommandRun]
PASSWORD = "correct horse battery staple"
TOKEN = re.compile(r"sfi_[A-Za-z0-9_\-]+")
EMAIL_QUEUE = "email"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


# -- the stack: environment, an API process, an operator, an agency -----------------------


@dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    api: httpx.Client
    operator: dict[str, str]
    agency: str
    database_url: str

    def provision(self, owner_email: str) -> str:
        """A tenant whose new owner gets an invitation (tenant.created, member.invited)."""
        slug = unique("t")
        response = self.api.post(
            "/api/v1/tenants",
            json={
                "slug": slug,
                "name": f"Tenant {slug}",
                "agency": self.agency,
                "plan": "pro",
                "owner_email": owner_email,
            },
            headers=self.operator,
        )
        assert response.status_code == 201, response.text
        return slug

    def accept(self, token: str) -> httpx.Response:
        return self.api.post(
            "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD, "name": "N"}
        )

    def login(self, email: str) -> dict[str, str]:
        response = self.api.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


def start_api(start: Start) -> tuple[CommandRun, str]:
    port = free_port()
    run = start(["api"], PORT=str(port))
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if run.process.poll() is not None:
            raise AssertionError(f"api exited:\n{run.output}")
        try:
            return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, "api healthy", timeout_s=60)
    return run, base_url


@pytest.fixture(scope="module")
def stack(
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("pipeline")
    env = {
        "DATABASE_URL": database_url,
        # Its own database: the stack's workers must not take other tests' leftover messages.
        "REDIS_URL": redis_database(redis_url, PIPELINE_DB),
        "DATA_DIR": str(data_dir),  # the mail folder and the dev vault key ring, shared
        "EMAIL_BACKEND": "file",
        "JWT_SIGNING_KEY": "e2e-pipeline-" + "k" * 40,  # one key: tokens work on every API
        "LOG_FORMAT": "json",
        "PASSWORD_TIME_COST": "1",
        "PASSWORD_MEMORY_KIB": "1024",
        "WORKER_PROCESSES": "1",
        "WORKER_THREADS": "2",
    }
    runs: list[CommandRun] = []

    def start(args: list[str], **extra: str) -> CommandRun:
        run = CommandRun(args, {**_inherited(), **env, **extra}, PROJECT_ROOT)
        runs.append(run)
        return run

    try:
        email = f"{unique('op')}@example.com"
        created = start(["admin", "create-operator", "--email", email, "--password", PASSWORD])
        assert created.wait(timeout_s=60) == 0, created.output
        _, base_url = start_api(start)
        with httpx.Client(base_url=base_url, timeout=30) as api:
            token = api.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
            assert token.status_code == 200, token.text
            operator = {"Authorization": f"Bearer {token.json()['access_token']}"}
            agency = unique("agency")
            made = api.post(
                "/api/v1/agencies", json={"slug": agency, "name": agency}, headers=operator
            )
            assert made.status_code == 201, made.text
            yield Stack(env, data_dir, api, operator, agency, database_url)
    finally:
        for run in runs:
            run.kill()


def _inherited() -> dict[str, str]:
    # The suite's own settings must not reach the processes: they get the stack's.
    skip = {"DATABASE_URL", "DATABASE_DIRECT_URL", "REDIS_URL", "CACHE_REDIS_URL", "ENV"}
    return {k: v for k, v in os.environ.items() if k not in skip}


@pytest.fixture
def launch(stack: Stack) -> Iterator[Start]:
    """Start `socialflow …` processes with the stack's environment; killed after the test."""
    runs: list[CommandRun] = []

    def start(args: list[str], **extra: str) -> CommandRun:
        run = CommandRun(args, {**_inherited(), **stack.env, **extra}, PROJECT_ROOT)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


@pytest.fixture
def pg(database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


def member_invited_event(pg: psycopg.Connection[Any], email: str) -> uuid.UUID:
    row = pg.execute(
        "SELECT event_id FROM shared.outbox WHERE event_type = 'member.invited' "
        "AND payload->>'email' = %s",
        (email,),
    ).fetchone()
    assert row is not None, f"no member.invited for {email} in the outbox"
    event_id: uuid.UUID = row[0]
    return event_id


def times_applied(pg: psycopg.Connection[Any], event_id: uuid.UUID) -> int:
    row = pg.execute(
        "SELECT count(*) FROM shared.processed_event WHERE event_id = %s "
        "AND actor = 'send_invitation_email'",
        (event_id,),
    ).fetchone()
    assert row is not None
    count: int = row[0]
    return count


def start_relay_and_worker(launch: Start, **worker_env: str) -> tuple[CommandRun, CommandRun]:
    relay = launch(["relay"])
    worker = launch(["worker"], **worker_env)
    relay.wait_for_output("relay.started")
    worker.wait_for_output("Worker process is ready")
    return relay, worker


# -- 1. the pipeline ------------------------------------------------------------------------


def mailed_to(data_dir: Path, email: str) -> list[EmailMessage]:
    folder = data_dir / "mail"
    found = []
    for path in sorted(folder.glob("*.eml")) if folder.exists() else []:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        if message["To"] == email:
            found.append(message)
    return found


def token_in(message: EmailMessage) -> str:
    found = TOKEN.search(message.get_content())
    assert found is not None, message.get_content()
    return found.group(0)


def test_an_invitation_made_over_http_is_mailed_by_the_real_actor_through_relay_and_worker(
    launch: Start, stack: Stack
) -> None:
    owner_email = f"{unique('owner')}@example.com"
    slug = stack.provision(owner_email)
    start_relay_and_worker(launch)

    # Provisioning invited the new owner: the email job mailed them a token.
    wait_for(lambda: mailed_to(stack.data_dir, owner_email), "the owner's invitation email")
    (owner_mail,) = mailed_to(stack.data_dir, owner_email)
    assert stack.accept(token_in(owner_mail)).status_code == 200
    owner = stack.login(owner_email)

    # The owner invites a member over HTTP; the member's email arrives the same way.
    member_email = f"{unique('member')}@example.com"
    invited = stack.api.post(
        f"/api/v1/tenants/{slug}/members",
        json={"email": member_email, "role": "editor"},
        headers=owner,
    )
    assert invited.status_code == 201, invited.text
    wait_for(lambda: mailed_to(stack.data_dir, member_email), "the member's invitation email")
    (member_mail,) = mailed_to(stack.data_dir, member_email)
    assert slug in member_mail["Subject"]
    accepted = stack.accept(token_in(member_mail))
    assert accepted.status_code == 200, accepted.text

    members = stack.api.get(f"/api/v1/tenants/{slug}/members", headers=owner).json()["items"]
    assert {(m["email"], m["role"]) for m in members} >= {(member_email, "editor")}


# -- 2. API: SIGTERM finishes the request in flight ------------------------------------------


def test_the_api_finishes_a_request_in_flight_when_sigterm_arrives(
    launch: Start, stack: Stack, pg: psycopg.Connection[Any]
) -> None:
    slug = stack.provision(f"{unique('owner')}@example.com")
    api, base_url = start_api(launch)
    port = int(base_url.rsplit(":", 1)[1])
    new_name = f"Renamed during shutdown {uuid.uuid4().hex[:6]}"

    with (
        psycopg.connect(libpq_url(stack.database_url)) as holder,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        # The test holds the tenant's row: the rename waits on it inside the API.
        holder.execute("SELECT 1 FROM shared.tenants WHERE slug = %s FOR UPDATE", (slug,))
        request = pool.submit(
            httpx.patch,
            f"{base_url}/api/v1/tenants/{slug}",
            json={"name": new_name},
            headers=stack.operator,
            timeout=30,
        )
        wait_for(
            lambda: (
                pg.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE '%%tenants%%' AND pid <> %s",
                    (holder.info.backend_pid,),
                ).fetchone()
                != (0,)
            ),
            "the rename waiting on the row lock",
        )
        api.signal(signal.SIGTERM)
        wait_for(lambda: not _accepts_connections(port), "the API stopped accepting")
        # uvicorn's grace period has begun (its own words), with the rename still running.
        api.wait_for_output("Waiting for connections to close")
        assert not request.done()
        holder.rollback()  # the lock goes; the request in flight can finish

        response = request.result(timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == new_name
    # uvicorn re-raises the signal once its graceful shutdown is done: killed by SIGTERM, late.
    assert api.wait(timeout_s=30) in (0, -signal.SIGTERM), api.output
    # In its log: shutdown began, then the rename completed, then the process finished.
    lines = [json.loads(line) for line in api.lines if line.startswith("{")]
    said = [(line.get("event"), line.get("method")) for line in lines]
    began = said.index(("Shutting down", None))
    completed = said.index(("request.completed", "PATCH"))
    assert began < completed < said.index(("Application shutdown complete.", None))
    stored = pg.execute("SELECT name FROM shared.tenants WHERE slug = %s", (slug,)).fetchone()
    assert stored == (new_name,)


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


# -- 3. relay: SIGTERM finishes the batch it claimed -----------------------------------------


def queued_event_ids(client: redis_lib.Redis, queue: str) -> set[str]:
    """The event ids of the messages waiting on a Dramatiq queue."""
    ids = client.lrange(f"{NAMESPACE}:{queue}", 0, -1)
    raw = client.hmget(f"{NAMESPACE}:{queue}.msgs", ids) if ids else []
    return {json.loads(data)["args"][0]["event_id"] for data in raw if data is not None}


def test_the_relay_finishes_the_batch_it_claimed_when_sigterm_arrives(
    launch: Start, stack: Stack, pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # A Redis of the test's own, so that pausing it stops only this relay.
    server = EmbeddedRedis(tmp_path / "redis", throwaway=True)
    url = server.start()
    client = redis_lib.Redis.from_url(url)
    try:
        relay = launch(["relay"], REDIS_URL=url)
        relay.wait_for_output("relay.started")
        wait_for(
            lambda: (
                pg.execute(
                    "SELECT count(*) FROM shared.outbox WHERE available_at <= now()"
                ).fetchone()
                == (0,)
            ),
            "the relay idle (earlier events dispatched)",
        )
        # Redis answers no write for 3 s (under the relay's 5 s socket timeout): the relay's
        # next batch stays between its claim and its commit that long.
        client.client_pause(3000, all=False)  # writes only
        owner_email = f"{unique('owner')}@example.com"
        stack.provision(owner_email)
        invited = member_invited_event(pg, owner_email)
        # Claimed: still in the table (its deletion is not committed) but locked by the relay.
        wait_for(
            lambda: (
                not pg.execute(
                    "SELECT 1 FROM shared.outbox WHERE event_id = %s FOR UPDATE SKIP LOCKED",
                    (invited,),
                ).fetchall()
            ),
            "the relay's claim of the invitation event",
            timeout_s=2,
        )
        assert pg.execute(
            "SELECT count(*) FROM shared.outbox WHERE event_id = %s", (invited,)
        ).fetchone() == (1,)

        relay.signal(signal.SIGTERM)
        assert relay.wait(timeout_s=30) == 0, relay.output

        left = pg.execute(
            "SELECT count(*) FROM shared.outbox WHERE event_id = %s", (invited,)
        ).fetchone()
        assert left == (0,)  # the claim committed
        assert str(invited) in queued_event_ids(client, EMAIL_QUEUE)  # after being enqueued
        assert "relay.stopped" in relay.output
        assert "Traceback" not in relay.output
    finally:
        client.close()
        server.stop()


# -- 4. worker: SIGTERM finishes the message in flight; SIGKILL mid-actor loses nothing --------


class SlowMailServer:
    """An SMTP server on loopback that delays its answer to one recipient until released:
    the invitation job for that address is then mid-actor, its token minted, not committed."""

    def __init__(self, slow_for: str) -> None:
        self.slow_for = slow_for
        self.received: list[EmailMessage] = []
        self.holding = threading.Event()
        self._released = threading.Event()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address == self.slow_for and not self._released.is_set():
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self._released.wait)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.received.append(message_from_bytes(content, policy=policy.default))
        return "250 OK"

    def release(self) -> None:
        self._released.set()

    def to(self, email: str) -> list[EmailMessage]:
        return [m for m in self.received if m["To"] == email]


@pytest.fixture
def slow_mail() -> Iterator[tuple[SlowMailServer, dict[str, str]]]:
    server = SlowMailServer(f"{unique('owner')}@example.com")
    port = free_port()
    controller = Controller(server, hostname="127.0.0.1", port=port)
    controller.start()
    env = {
        "EMAIL_BACKEND": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_SECURITY": "none",
    }
    try:
        yield server, env
    finally:
        server.release()
        controller.stop()


def test_a_worker_finishes_the_message_in_flight_when_sigterm_arrives(
    launch: Start,
    stack: Stack,
    pg: psycopg.Connection[Any],
    slow_mail: tuple[SlowMailServer, dict[str, str]],
) -> None:
    mail, smtp = slow_mail
    stack.provision(mail.slow_for)
    event = member_invited_event(pg, mail.slow_for)
    _, worker = start_relay_and_worker(launch, **smtp)
    wait_for(mail.holding.is_set, "the invitation job talking to the SMTP server")

    worker.signal(signal.SIGTERM)
    worker.wait_for_output("Stopping worker process")
    assert times_applied(pg, event) == 0  # still in flight
    mail.release()

    assert worker.wait(timeout_s=30) == 0, worker.output
    assert times_applied(pg, event) == 1  # its effects committed before the worker stopped
    (sent,) = mail.to(mail.slow_for)
    assert stack.accept(token_in(sent)).status_code == 200  # the token it mailed is the stored one


def requeue_messages_of_dead_workers(redis_url: str, queue: str) -> None:
    """What every live Dramatiq worker does now and then: move the unacknowledged messages of
    workers whose heartbeat stopped back to their queue. Dramatiq waits 60 s for a heartbeat
    and runs this on about one broker command in a thousand; here it runs at once, after 1 s."""
    janitor = RedisBroker(  # type: ignore[no-untyped-call]
        url=redis_url,
        namespace=NAMESPACE,
        heartbeat_timeout=1_000,
        maintenance_chance=MAINTENANCE_SCALE,
        middleware=[],
    )
    try:
        janitor.do_qsize(queue)
    finally:
        janitor.close()


def test_a_worker_killed_mid_actor_loses_nothing_and_the_invitation_is_mailed_once(
    launch: Start,
    stack: Stack,
    pg: psycopg.Connection[Any],
    slow_mail: tuple[SlowMailServer, dict[str, str]],
) -> None:
    redis_url = stack.env["REDIS_URL"]
    mail, smtp = slow_mail
    stack.provision(mail.slow_for)
    event = member_invited_event(pg, mail.slow_for)
    _, worker = start_relay_and_worker(launch, **smtp)
    wait_for(mail.holding.is_set, "the invitation job talking to the SMTP server")

    worker.kill()  # SIGKILL to the worker and its processes, token minted, nothing committed
    assert times_applied(pg, event) == 0
    mail.release()  # answers a connection nobody holds any more
    client = redis_lib.Redis.from_url(redis_url)
    try:
        # No worker runs now, so no live worker can be taken for a dead one.
        def requeued() -> bool:
            requeue_messages_of_dead_workers(redis_url, EMAIL_QUEUE)
            return str(event) in queued_event_ids(client, EMAIL_QUEUE)

        wait_for(requeued, "the killed worker's message back on its queue")
    finally:
        client.close()

    restarted = launch(["worker"], **smtp)
    wait_for(lambda: times_applied(pg, event) == 1 and mail.to(mail.slow_for), "redelivered")
    assert times_applied(pg, event) == 1
    (sent,) = mail.to(mail.slow_for)  # the first attempt never got past its recipient
    assert stack.accept(token_in(sent)).status_code == 200
    restarted.signal(signal.SIGTERM)
    assert restarted.wait(timeout_s=30) == 0


# -- 5. media: a worker killed mid-processing ---------------------------------------------


def _big_photo(width: int, height: int) -> bytes:
    """A photo-like JPEG large enough that processing takes a while (noise does not
    compress, so decoding and resampling do real work)."""
    import io

    from PIL import Image

    noise = Image.effect_noise((width, height), 60)
    out = io.BytesIO()
    Image.merge("RGB", (noise, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise)).save(
        out, "JPEG", quality=85
    )
    return out.getvalue()


def _held_by_a_transaction(pg: psycopg.Connection[Any], schema: str, media_id: str) -> bool:
    """Whether the item's row is locked: process_media holds it while it processes."""
    try:
        with pg.transaction():
            pg.execute(
                f'SELECT 1 FROM "{schema}".media_items WHERE id = %s FOR UPDATE NOWAIT',
                (media_id,),
            )
    except psycopg.errors.LockNotAvailable:
        return True
    return False


def test_a_worker_killed_mid_processing_loses_nothing_and_the_item_is_processed_once(
    launch: Start, stack: Stack, pg: psycopg.Connection[Any]
) -> None:
    redis_url = stack.env["REDIS_URL"]
    email = f"{unique('owner')}@example.com"
    made = launch(["admin", "create-user", "--email", email, "--password", PASSWORD])
    assert made.wait(timeout_s=60) == 0, made.output
    slug = stack.provision(email)
    owner = stack.login(email)
    schema = "t_" + slug.replace("-", "_")
    data = _big_photo(8000, 6000)  # 48 megapixels: over a second of work
    media = f"/api/v1/tenants/{slug}/media"
    started = stack.api.post(
        f"{media}/uploads",
        json={"filename": "big.jpg", "content_type": "image/jpeg", "size": len(data)},
        headers=owner,
    )
    assert started.status_code == 201, started.text
    upload = started.json()["upload"]
    path = "/" + upload["url"].split("/", 3)[3]
    assert stack.api.put(path, content=data, headers=upload["headers"]).status_code == 204
    media_id = started.json()["media_id"]
    assert stack.api.post(f"{media}/{media_id}/confirm", headers=owner).status_code == 200
    event = pg.execute(
        "SELECT event_id FROM shared.outbox WHERE event_type = 'media.uploaded' "
        "AND aggregate_id = %s",
        (media_id,),
    ).fetchone()
    assert event is not None

    _, worker = start_relay_and_worker(launch)
    wait_for(lambda: _held_by_a_transaction(pg, schema, media_id), "processing under way")
    worker.kill()  # SIGKILL mid-processing: derivatives maybe written, nothing committed
    status = pg.execute(f'SELECT status FROM "{schema}".media_items WHERE id = %s', (media_id,))
    assert status.fetchone() == ("processing",)

    def applied() -> int:
        row = pg.execute(
            "SELECT count(*) FROM shared.processed_event WHERE event_id = %s "
            "AND actor = 'process_media'",
            (event[0],),
        ).fetchone()
        return int(row[0]) if row else 0

    assert applied() == 0
    client = redis_lib.Redis.from_url(redis_url)
    try:

        def requeued() -> bool:
            requeue_messages_of_dead_workers(redis_url, "media")
            return str(event[0]) in queued_event_ids(client, "media")

        wait_for(requeued, "the killed worker's message back on its queue")
    finally:
        client.close()

    restarted = launch(["worker"])

    def ready() -> bool:
        row = pg.execute(
            f'SELECT status FROM "{schema}".media_items WHERE id = %s',
            (media_id,),
        ).fetchone()
        return row == ("ready",)

    wait_for(ready, "processed after the redelivery", timeout_s=60)
    assert applied() == 1  # once: the killed attempt committed nothing
    item = stack.api.get(f"{media}/{media_id}", headers=owner).json()
    assert (item["width"], item["height"]) == (8000, 6000)
    assert len(item["derivatives"]) == 8
    restarted.signal(signal.SIGTERM)
    assert restarted.wait(timeout_s=60) == 0


# -- 6. one trace across the processes -------------------------------------------------------


def test_one_trace_crosses_the_api_relay_and_worker_processes_to_an_otlp_collector(
    launch: Start, stack: Stack
) -> None:
    with otlp_collector() as collector:
        # The standard variables only: OTLP over HTTP to the collector, exported every 200 ms.
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}

        def traced(args: list[str], **extra: str) -> CommandRun:
            return launch(args, **otel, **extra)

        _, base_url = start_api(traced)
        start_relay_and_worker(traced)
        owner_email = f"{unique('owner')}@example.com"
        with httpx.Client(base_url=base_url, timeout=30) as api:
            made = api.post(
                "/api/v1/tenants",
                json={
                    "slug": unique("t"),
                    "name": "Traced",
                    "agency": stack.agency,
                    "plan": "pro",
                    "owner_email": owner_email,
                },
                headers=stack.operator,
            )
        assert made.status_code == 201, made.text
        wait_for(lambda: mailed_to(stack.data_dir, owner_email), "the owner's invitation email")

        def request() -> ReceivedSpan | None:
            found = [
                s
                for s in collector.received()
                if s.service == "socialflow-api" and s.name == "POST /api/v1/tenants"
            ]
            return found[0] if found else None

        def mailer() -> ReceivedSpan | None:
            sent = request()
            found = [
                s
                for s in collector.received()
                if sent is not None
                and s.service == "socialflow-worker"
                and s.name == "send_invitation_email process"
                and s.trace_id == sent.trace_id
            ]
            return found[0] if found else None

        wait_for(mailer, "the actor's span at the collector")
        wait_for(
            lambda: any(s.service == "socialflow-relay" for s in collector.received()),
            "the relay's span at the collector",
        )
        spans = collector.received()

    sent, mailing = request(), mailer()
    assert sent is not None
    assert mailing is not None
    assert sent.kind == "SERVER"
    assert sent.attributes["http.route"] == "/api/v1/tenants"
    assert sent.attributes["http.response.status_code"] == 201
    # The request's own SQL, in its process, under it.
    assert any(s.parent_span_id == sent.span_id and "db.system" in s.attributes for s in spans)
    # In the worker, the actor's span is the request's child: the context the event carried.
    assert mailing.kind == "CONSUMER"
    assert mailing.parent_span_id == sent.span_id
    # Its statements ran on the worker's event loop (another thread) and are under it.
    assert any(
        s.service == "socialflow-worker"
        and s.parent_span_id == mailing.span_id
        and "db.system" in s.attributes
        for s in spans
    )
    # The relay's batch that carried the event is linked to the request.
    assert any(
        s.service == "socialflow-relay" and s.name == "outbox dispatch" and sent.span_id in s.links
        for s in spans
    )
