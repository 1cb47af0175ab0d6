"""HTTP benchmark: a tenant-scoped list of 20 rows through `socialflow api`, loaded by wrk.

Starts the API (`socialflow api --workers N`) on durable embedded servers (or DATABASE_URL /
REDIS_URL), seeds two tenants with 20 audit rows each, and loads `GET /api/v1/tenants/{t}/
audit-log?limit=20` with wrk (1 thread, 32 connections), the two tenants alternating, first with
each tenant's API key, then with each owner's JWT; `GET /health` is the ceiling. wrk's script
tags each request with its tenant (X-Request-ID, echoed by the API) and checks that every answer
is 200 and holds that tenant's rows and none of the other's: a wrong tenant counts as an error.
Rate limits are counted as in production, with limits high enough not to refuse the load.

Each row runs `--rounds` times (3), interleaved with the other rows, and reports the round with
the median rps next to the range: on this shared machine the CPU time per request of the very
same code varies by a third from one 20 s run to the next. Errors are those of every round.

    python bench/http.py [--json] [--processes 1,2] [--duration 20] [--connections 32] [--rounds 3]

Needs Debian's `wrk` (installed with apt-get when missing and running as root).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from _servers import (
    Servers,
    check,
    durable_servers,
    prepare_shared,
    print_settings,
    quiet_logging,
    server_settings,
    settings_lines,
)
from socialflow.db.engine import libpq_url
from socialflow.embedded import EmbeddedRedis

PASSWORD = "bench password 12345"
LIMIT = 10**9  # rate limits counted as in production, never refusing the load
TENANT_LIMIT = 10_000_000  # a plan's highest requests a minute: 500 times the load's
WRK_SCRIPT = r"""
local targets = {}
local n = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, bad, wrong = 0, 0, 0
  for i = 1, #args, 3 do
    table.insert(targets, {path = args[i], auth = args[i + 1], mark = args[i + 2]})
  end
end

function request()
  n = n + 1
  local t = targets[(n % #targets) + 1]
  return wrk.format("GET", t.path, {
    ["Authorization"] = t.auth, ["X-Request-ID"] = t.mark .. "." .. n,
  })
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 return end
  if #targets == 1 and targets[1].mark == "health" then ok = ok + 1 return end
  local rid = headers["X-Request-ID"] or headers["x-request-id"] or ""
  local mark = rid:match("^([^.]+)%.")
  local right = true
  for _, t in ipairs(targets) do
    local found = body:find('"target_id":"' .. t.mark .. '"', 1, true) ~= nil
    if (t.mark == mark) ~= found then right = false end
  end
  if right then ok = ok + 1 else wrong = wrong + 1 end
end

function done(summary, latency, requests)
  local o, b, w = 0, 0, 0
  for _, thread in ipairs(threads) do
    o = o + thread:get("ok"); b = b + thread:get("bad"); w = w + thread:get("wrong")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"ok":%d,"not_200":%d,"wrong_tenant":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, o, b, w,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99),
    latency.max))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench/http.py needs wrk: apt-get install wrk")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def api_environment(
    database_url: str, redis_url: str, cache_redis_url: str, data_dir: Path, port: int
) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CACHE_REDIS_URL": cache_redis_url,
        "DATA_DIR": str(data_dir),
        "PORT": str(port),
        "JWT_SIGNING_KEY": "bench-signing-key-" + "x" * 32,
        "LOG_FORMAT": "json",  # as production logs: one line per request
        "LOG_LEVEL": "INFO",
        "RATE_LIMIT_API_KEY_PER_MINUTE": str(LIMIT),
        "RATE_LIMIT_USER_PER_MINUTE": str(LIMIT),
        "SIGNIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE": str(LIMIT),
    }


@contextmanager
def cached_api_environment(servers: Servers) -> Iterator[dict[str, str]]:
    """The API's environment on `servers`, its caches on a Redis of their own as infra/ ships
    it (evicting, not persisted), stopped when the block ends; PUBLIC_BASE_URL its own."""
    assert servers.redis_url is not None
    cache = EmbeddedRedis(
        servers.data_dir / "cache-redis",
        throwaway=True,
        extra_args=("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"),
    )
    cache_url = cache.start()
    try:
        env = api_environment(
            servers.database_url,
            servers.redis_url,
            cache_url,
            servers.data_dir / "app",
            free_port(),
        )
        env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{env['PORT']}"
        yield env
    finally:
        cache.stop()


def loopback_worker_settings(servers: Servers, env: dict[str, str]) -> Any:
    """For benchmarks whose workers call servers of their own on loopback: `env` (the processes')
    and the returned Settings (this process's) both let tenants reach 127.0.0.1 over http and
    share one vault master key, made for the run."""
    from socialflow.settings import Settings

    master = base64.b64encode(secrets.token_bytes(32)).decode()
    env.update(
        OUTBOUND_ALLOWED_NETWORKS='["127.0.0.1/32"]',
        OUTBOUND_ALLOW_HTTP="true",
        VAULT_MASTER_KEYS=json.dumps({"bench-1": master}),
        VAULT_ACTIVE_KEY_ID="bench-1",
    )
    return Settings(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        cache_redis_url=env["CACHE_REDIS_URL"],
        data_dir=Path(env["DATA_DIR"]),
        public_base_url=env["PUBLIC_BASE_URL"],
        jwt_signing_key=env["JWT_SIGNING_KEY"],
        vault_master_keys={"bench-1": master},
        vault_active_key_id="bench-1",
        outbound_allowed_networks=("127.0.0.1/32",),
        outbound_allow_http=True,
        password_time_cost=1,
        password_memory_kib=1024,
        _env_file=None,
    )


class Api:
    """`socialflow api --workers N` as a process of its own, its log in a file."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{env['PORT']}"
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "socialflow", "api", "--workers", str(workers)],
            env=env,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            check(self.process.poll() is None, f"the API exited; see {log}")
            try:
                with urllib.request.urlopen(self.base + "/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"the API did not become ready; see {log}")

    def call(self, method: str, path: str, body: object = None, token: str = "") -> Any:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {token}"} if token else {}),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the API's processes (its process group), from /proc."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == self.process.pid:  # pgrp
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self._log.close()


def seed(api: Api, database_url: str) -> list[dict[str, str]]:
    """An operator, an agency, two tenants with an owner each (JWT) and an API key each, and
    20 audit rows per tenant marked with the tenant's slug."""
    import asyncio

    from socialflow.db.engine import create_engine, create_session_factory
    from socialflow.db.session import unit_of_work
    from socialflow.identity.services import create_user, ensure_operator
    from socialflow.settings import Settings

    settings = Settings(
        database_url=database_url,
        password_time_cost=1,
        password_memory_kib=1024,
        _env_file=None,  # type: ignore[call-arg]
    )
    run = str(int(time.time()))
    emails = {
        "op": f"op-{run}@bench.example",
        "a": f"a-{run}@bench.example",
        "b": f"b-{run}@bench.example",
    }

    async def accounts() -> None:
        engine = create_engine(settings)
        try:
            async with unit_of_work(create_session_factory(engine)) as session:
                await ensure_operator(session, settings, email=emails["op"], password=PASSWORD)
                for who in ("a", "b"):
                    await create_user(session, settings, email=emails[who], password=PASSWORD)
        finally:
            await engine.dispose()

    asyncio.run(accounts())

    def token(email: str) -> str:
        return str(
            api.call("POST", "/api/v1/auth/token", {"email": email, "password": PASSWORD})[
                "access_token"
            ]
        )

    operator = token(emails["op"])
    agency = f"bench-{run}"
    api.call("POST", "/api/v1/agencies", {"slug": agency, "name": agency}, operator)
    targets = []
    for who in ("a", "b"):
        slug = f"bench-{who}-{run}"
        api.call(
            "POST",
            "/api/v1/tenants",
            {
                "slug": slug,
                "name": slug,
                "agency": agency,
                "plan": "pro",
                "owner_email": emails[who],
            },
            operator,
        )
        jwt = token(emails[who])
        key = api.call(
            "POST", f"/api/v1/tenants/{slug}/api-keys", {"name": "bench", "role": "admin"}, jwt
        )["key"]
        targets.append({"slug": slug, "jwt": jwt, "key": key})
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        for target in targets:
            schema = "t_" + target["slug"].replace("-", "_")
            conn.execute(
                f'INSERT INTO "{schema}".audit_log (actor, action, target_type, target_id) '
                "SELECT 'bench', 'bench.read', 'bench', %s FROM generate_series(1, 20)",
                (target["slug"],),
            )
    return targets


def load(
    wrk: str, api: Api, script: Path, args: list[str], duration: float, connections: int
) -> dict[str, Any]:
    cpu_before = api.cpu_seconds()
    ran = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            api.base,
            "--",
            *args,
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    cpu = api.cpu_seconds() - cpu_before
    check(ran.returncode == 0, f"wrk failed: {ran.stdout}{ran.stderr}")
    out = ran.stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK_RESULT "))
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    errors = raw["not_200"] + raw["wrong_tenant"] + raw["socket_errors"]
    check(raw["ok"] + errors >= raw["requests"] - connections, f"answers unaccounted: {raw}")
    return {
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6)),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "errors": errors,
        "_cpu_ms": round(1000 * cpu / max(1, raw["requests"]), 3),
        "_raw": raw,
    }


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rps (its latencies with it), the range of rps over all
    rounds, and every round's errors: one clean round must not hide another's."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["errors"] = sum(r["errors"] for r in runs)
    chosen["_range"] = f"{ordered[0]['rps']:,}-{ordered[-1]['rps']:,}"
    return chosen


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = ensure_wrk()
    quiet_logging()
    results: dict[str, Any] = {}
    with durable_servers() as servers:
        assert servers.redis_url is not None
        # The tenants' plan allows the most requests a minute a plan may have.
        prepare_shared(servers.database_url, api_requests_per_minute=TENANT_LIMIT)
        script = servers.data_dir / "tenants.lua"
        script.write_text(WRK_SCRIPT)
        log = servers.data_dir / "api.log"
        # As infra/ ships it: caches on a Redis of their own, evicting and not persisted.
        cache = EmbeddedRedis(
            servers.data_dir / "cache-redis",
            throwaway=True,
            extra_args=("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"),
        )
        cache_url = cache.start()
        env = api_environment(
            servers.database_url,
            servers.redis_url,
            cache_url,
            servers.data_dir / "app",
            free_port(),
        )
        lines = settings_lines(servers, server_settings(servers))
        targets: list[dict[str, str]] = []
        for processes in args.processes:
            api = Api(env, processes, log)
            try:
                if not targets:
                    targets = seed(api, servers.database_url)

                def auth_args(kind: str, targets: list[dict[str, str]] = targets) -> list[str]:
                    return [
                        x
                        for t in targets
                        for x in (
                            f"/api/v1/tenants/{t['slug']}/audit-log?limit=20",
                            f"Bearer {t[kind]}",
                            t["slug"],
                        )
                    ]

                load(wrk, api, script, auth_args("key"), 2, args.connections)  # warm-up
                kinds = {
                    "api_key": auth_args("key"),
                    "jwt": auth_args("jwt"),
                    "health": ["/health", "", "health"],
                }
                rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
                for _ in range(args.rounds):  # interleaved: a slow spell hits every kind alike
                    for kind, wrk_args in kinds.items():
                        rounds[kind].append(
                            load(wrk, api, script, wrk_args, args.duration, args.connections)
                        )
                row = {kind: median_round(runs) for kind, runs in rounds.items()}
                results[str(processes)] = row
            finally:
                api.stop()
        cache.stop()
    return {
        "lines": lines,
        "run": {
            "API": "socialflow api --workers N (uvicorn), logging JSON at INFO to a file",
            "load": f"wrk 1 thread, {args.connections} connections, {args.duration:g} s per "
            "row, two tenants alternating; audit-log?limit=20 (20 rows each)",
            "rounds": f"{args.rounds}, interleaved (key, jwt, health, key, ...); each row is "
            "the round with the median rps, its range over the rounds beside it; errors: all "
            "rounds'",
            "rate limits": "counted as in production, limits set high (people and keys 10^9, "
            "the tenants' plan 10^7 a minute)",
            "caches": "a Redis of their own (CACHE_REDIS_URL), allkeys-lru, not persisted",
        },
        "results": results,
    }


def print_table(outcome: dict[str, Any], file: Any) -> None:
    print_settings(outcome["lines"], outcome["run"], file=file)
    print(
        f"{'processes':>9}  {'auth':<8} {'rps':>8} {'rps range':>13} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>7} {'API CPU ms/request':>19}",
        file=file,
    )
    for processes, row in outcome["results"].items():
        for kind in ("api_key", "jwt", "health"):
            r = row[kind]
            print(
                f"{processes:>9}  {kind:<8} {r['rps']:>8,} {r['_range']:>13} {r['p50_ms']:>8} "
                f"{r['p99_ms']:>8} {r['errors']:>7} {r['_cpu_ms']:>19}",
                file=file,
            )
    print(
        "targets (2 processes): >= 1,100 rps, p50 <= 30 ms, p99 <= 80 ms, 0 errors, with an "
        "API key and a JWT; >= 650 rps with 1 process",
        file=file,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="table to stderr, one JSON line")
    parser.add_argument("--processes", default="1,2", help="API process counts, e.g. 1,2")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per row")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per row; the median round is reported"
    )
    args = parser.parse_args()
    args.processes = [int(p) for p in args.processes.split(",")]
    with tempfile.TemporaryDirectory():
        outcome = run(args)
    print_table(outcome, sys.stderr if args.json else sys.stdout)
    if args.json:
        headline = outcome["results"].get("2") or next(iter(outcome["results"].values()))
        print(
            json.dumps(
                {
                    kind: {k: v for k, v in headline[kind].items() if not k.startswith("_")}
                    for kind in ("api_key", "jwt")
                }
            )
        )


if __name__ == "__main__":
    main()
