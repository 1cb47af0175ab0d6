"""Operator commands on the embedded servers of DATA_DIR, alone and beside `socialflow dev`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from socialflow.tenancy.fleet.ddl import tenant_head
from tests.e2e.conftest import CommandRun, free_port

# Whatever the suite itself runs against must not leak into the commands: they find their
# servers through DATA_DIR alone.
NOT_INHERITED = (
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
    "REDIS_URL",
    "CACHE_REDIS_URL",
    "ENV",
    "JWT_SIGNING_KEY",
    "VAULT_MASTER_KEYS",
    "VAULT_ACTIVE_KEY_ID",
    "VAULT_KMS_KEY_ID",
)
PASSWORD = "correct-horse-battery-staple"
Run = Callable[..., str]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: another pytest run resets that tree's mode to 0700, which
    # locks out the `pgserver` user that PostgreSQL runs as when the suite runs as root.
    path = Path(tempfile.mkdtemp(prefix="socialflow-operator-")) / "data"
    yield path
    for server in _servers_of(path):  # whatever a failed test left running
        server.kill()
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(
        DATA_DIR=str(data_dir),
        LOG_FORMAT="console",
        PASSWORD_TIME_COST="1",
        PASSWORD_MEMORY_KIB="1024",
    )
    return env


@pytest.fixture
def socialflow(environment: dict[str, str], project_root: Path) -> Run:
    """Run `socialflow ARGS…` to its end; return its stdout, failing on a non-zero exit."""

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "socialflow", *args],
            env=environment,
            cwd=project_root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    return run


@pytest.fixture
def background(environment: dict[str, str], project_root: Path) -> Iterator[Any]:
    runs: list[CommandRun] = []

    def start(args: list[str], **env: str) -> CommandRun:
        run = CommandRun(args, {**environment, **env}, project_root)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def _servers_of(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL and Redis of `data_dir` (their command lines name it)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if any(str(data_dir) in part for part in command) and "socialflow" not in command:
            found.append(process)
    return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _user_id(output: str) -> str:
    match = re.search(r"\(([0-9a-f-]{36})\)", output)
    assert match, output
    return match.group(1)


@pytest.mark.timeout(300)  # every command starts and stops PostgreSQL
def test_operator_commands_start_the_embedded_servers_of_data_dir_and_stop_them_after(
    socialflow: Run, data_dir: Path
) -> None:
    assert "shared schema at head" in socialflow("migrate")
    assert not _servers_of(data_dir)

    created = _user_id(
        socialflow("admin", "create-user", "--email", "ann@example.com", "--password", PASSWORD)
    )
    # A second command finds the account the first one created: the same database.
    promoted = _user_id(
        socialflow("admin", "create-operator", "--email", "ann@example.com", "--password", PASSWORD)
    )
    assert promoted == created

    assert "tenant schemas" in socialflow("tenants", "status")
    assert "all tenant schemas at" in socialflow("tenants", "migrate", "--check")
    assert json.loads(socialflow("outbox", "status", "--json")) == {
        "due": 0,
        "deferred": 0,
        "oldest_due_age_s": None,
        "dead_letters": 0,
    }
    assert "no data keys yet" in socialflow("vault", "status")
    assert not _servers_of(data_dir)


def _api(base: str, method: str, path: str, body: object, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers=headers, method=method
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _token(base: str, email: str) -> str:
    answer = _api(base, "POST", "/api/v1/auth/token", {"email": email, "password": PASSWORD})
    token: str = answer["access_token"]
    return token


@pytest.mark.timeout(300)  # `socialflow dev` takes a while to be ready
def test_operator_commands_attach_to_a_running_socialflow_dev_and_leave_it_running(
    socialflow: Run, background: Any, data_dir: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dev = background(["dev"], PORT=str(port))
    dev.wait_for_output("SocialFlow is ready at", timeout_s=120)
    servers = {p.pid for p in _servers_of(data_dir)}
    assert len(servers) == 2  # its PostgreSQL and Redis

    socialflow("admin", "create-operator", "--email", "op@example.com", "--password", PASSWORD)
    socialflow("admin", "create-user", "--email", "owner@example.com", "--password", PASSWORD)
    # The API of `socialflow dev` sees the accounts the commands created, and the reverse.
    operator = _token(base, "op@example.com")
    _api(base, "POST", "/api/v1/agencies", {"slug": "acme", "name": "Acme"}, operator)
    tenant = {
        "slug": "shop",
        "name": "Shop",
        "agency": "acme",
        "plan": "pro",
        "owner_email": "owner@example.com",
    }
    _api(base, "POST", "/api/v1/tenants", tenant, operator)
    owner = _token(base, "owner@example.com")
    _api(base, "PUT", "/api/v1/tenants/shop/ai/keys/openai", {"api_key": "sk-" + "k" * 40}, owner)

    # The commands use the dev key ring of DATA_DIR, the one that sealed that key.
    (dev_key,) = json.loads((data_dir / "vault-dev-keyring.json").read_text())["keys"]
    assert f"{dev_key} (active): 1 data key(s)" in socialflow("vault", "status")
    # Re-encrypting the secret opens what dev's API sealed: the same master key.
    rotated = socialflow("vault", "rotate-tenant-key", "shop")
    assert "new_version=2" in rotated
    assert "reencrypted=1" in rotated
    assert tenant_head() in socialflow("tenants", "status")
    socialflow("tenants", "migrate")
    socialflow("tenants", "migrate", "--check")
    assert json.loads(socialflow("outbox", "status", "--json"))["dead_letters"] == 0

    # Each command let go of the servers without stopping them.
    assert {p.pid for p in _servers_of(data_dir)} == servers
    with urllib.request.urlopen(base + "/ready", timeout=5) as response:
        assert response.status == 200
    assert dev.process.poll() is None

    dev.signal(signal.SIGHUP)  # its terminal closed
    assert dev.wait(timeout_s=60) == 0
    assert not _servers_of(data_dir)  # dev, their last holder, stopped them


HOLD_SERVERS = """
import sys, time
from pathlib import Path
from socialflow import embedded
with embedded.services(None, None, Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_commands_stop_the_servers_a_killed_holder_left_running(
    socialflow: Run, background: Any, environment: dict[str, str], data_dir: Path
) -> None:
    # What `socialflow dev` does with the servers, minus its processes; then killed outright.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SERVERS, str(data_dir)],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert "holding" in (line.strip() for line in holder.stdout)  # ends at "holding"
    finally:
        holder.kill()  # no cleanup runs: both servers stay up, their holder list names it
        holder.wait()
    assert len(_servers_of(data_dir)) == 2

    socialflow("migrate")  # attaches to the orphaned PostgreSQL, and as its last holder stops it
    assert [p.name() for p in _servers_of(data_dir)] == ["redis-server"]

    relay = background(["relay"])  # attaches to the orphaned Redis too
    relay.wait_for_output("relay.started")
    relay.signal(signal.SIGTERM)
    assert relay.wait() == 0
    assert not _servers_of(data_dir)
    # The embedded Redis of `socialflow dev` fsyncs every write, as a broker must.
    assert "relay.redis_not_durable" not in relay.output


def test_the_relay_warns_at_start_when_the_broker_redis_may_lose_events(
    run_command: Callable[..., CommandRun], database_url: str, redis_url: str
) -> None:
    # The suite's throwaway Redis keeps nothing on disk.
    relay = run_command(
        ["relay"], DATABASE_URL=database_url, REDIS_URL=redis_url, RELAY_REDIS_MIN_REPLICAS="0"
    )
    relay.wait_for_output("relay.started")
    relay.signal(signal.SIGTERM)
    assert relay.wait() == 0
    assert "relay.redis_not_durable" in relay.output
