"""AI pipeline benchmark: 500 captions through the outbox with a provider that takes 300 ms.

Starts `socialflow api`, `socialflow relay`, `socialflow worker --exclude-queues ai` and ONE
`socialflow worker --queues ai` process (WORKER_AI_THREADS threads, the default 64) on durable
embedded servers (or DATABASE_URL / REDIS_URL), and an OpenAI-compatible provider on loopback
(tests/integration/ai/fake_openai.py: chat completions with image content and embeddings,
usage in every answer) that answers every call after 300 ms. A tenant stores its own OpenAI
key pointing at it (BYOK: the guarded outbound client, as for a customer).

One photo is uploaded and processed through the API; the benchmark's items are copies of it in
the tenant's schema (their own ids and hashes, `ready`, the same 640 px JPEG to send). Then, as
clients would, `POST …/media/{id}/captions` for each of `--captions` items (8 client threads);
the caption actor makes one vision call per item (the image as a data URL, structured output),
and each new caption is embedded (one more provider call per item, on the same worker).

- captions_total_s: first request sent → the last caption committed (the worker's clock);
- overhead_p50_ms: per caption, the actor's time from its first transaction (the budget's
  reservation) to the caption committed, less the provider's 300 ms: the platform's own cost
  per call (database steps, litellm, the image read and encoding, the settlement);
- max_in_flight: the most calls the provider saw at once.

The run verifies its result: every item `generated` by the model, one settled ledger row per
caption with a cost, nothing left reserved.

    python bench/ai_pipeline.py [--json] [--captions 500] [--provider-latency-ms 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the fake provider (tests/)

from tests.integration.ai.fake_openai import GOOD_KEY, fake_provider
from tests.integration.media.support import photo

from _http_bench import Api, cached_api_environment, seed
from _servers import (
    check,
    durable_servers,
    prepare_shared,
    print_settings,
    quiet_logging,
    server_settings,
    settings_lines,
)
from media import Process
from socialflow.db.engine import libpq_url

PROVIDER_LATENCY_MS = 300  # the figure; --provider-latency-ms for a slower provider
CLIENT_THREADS = 8
WARM_UP = 64
# The tenant's limits must not be what is measured: the operator's per-tenant AI rate limits
# (AI_RATE_LIMITS_PER_MINUTE) are raised above what the run asks.
RATE_LIMITS = {"caption": 100_000, "embed": 100_000, "embed_query": 100_000}

# Every stored column (not the generated search_doc), as copies of the seed item.
CLONE_SQL = """
INSERT INTO {schema}.media_items ({columns})
SELECT {columns} FROM (
    SELECT (jsonb_populate_record(NULL::{schema}.media_items, to_jsonb(m) || jsonb_build_object(
        'id', gen_random_uuid(),
        'sha256', encode(sha256(convert_to(g::text || clock_timestamp()::text, 'UTF8')), 'hex'),
        'title', 'Bench item ' || g,
        'caption_state', NULL, 'caption', NULL, 'embedding_state', NULL
    ))).*
    FROM {schema}.media_items m, generate_series(1, %s) g WHERE m.id = %s
) copied
RETURNING id::text
"""
STORED_COLUMNS_SQL = """
SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
"""


def stored_columns(conn: psycopg.Connection[Any], schema: str) -> str:
    row = conn.execute(STORED_COLUMNS_SQL, (f"{schema}.media_items",)).fetchone()
    check(row is not None and bool(row[0]), "media_items has no columns")
    return str(row[0])


class Tenant:
    def __init__(self, api: Api, slug: str, token: str) -> None:
        self.api, self.slug, self.token = api, slug, token
        self.base = f"/api/v1/tenants/{slug}"

    def upload(self, data: bytes) -> str:
        started = self.api.call(
            "POST",
            f"{self.base}/media/uploads",
            {"filename": "seed.jpg", "content_type": "image/jpeg", "size": len(data)},
            self.token,
        )
        upload = started["upload"]
        put = urllib.request.Request(
            upload["url"], data=data, method="PUT", headers=upload["headers"]
        )
        with urllib.request.urlopen(put, timeout=60) as answer:
            check(answer.status == 204, f"upload answered {answer.status}")
        media_id = str(started["media_id"])
        self.api.call("POST", f"{self.base}/media/{media_id}/confirm", None, self.token)
        return media_id

    def ask_caption(self, media_id: str) -> None:
        answer = self.api.call("POST", f"{self.base}/media/{media_id}/captions", {}, self.token)
        check(answer["state"] == "pending", f"{media_id}: {answer}")


def wait_captioned(
    conn: psycopg.Connection[Any], schema: str, ids: list[str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = conn.execute(
            f"SELECT caption_state, count(*) FROM {schema}.media_items "
            "WHERE id = ANY(%s::uuid[]) GROUP BY 1",
            (ids,),
        ).fetchall()
        states = dict(rows)
        bad = {s: n for s, n in states.items() if s not in (None, "pending", "generated")}
        check(not bad, f"captions ended otherwise: {bad}")
        if states.get("generated", 0) == len(ids):
            return
        check(time.monotonic() < deadline, f"not captioned after {timeout} s: {states}")
        # The run is timed by the worker's clock (captioned_at): this poll only waits, and
        # must not take the CPU it measures.
        time.sleep(0.25)


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logging()
    with durable_servers() as servers, fake_provider() as provider:
        assert servers.redis_url is not None
        provider.latency_s = args.provider_latency_ms / 1000
        prepare_shared(servers.database_url)
        with cached_api_environment(servers) as env:
            env.update(
                OUTBOUND_ALLOWED_NETWORKS='["127.0.0.1/32"]',  # the provider is on loopback
                OUTBOUND_ALLOW_HTTP="true",
                AI_RATE_LIMITS_PER_MINUTE=json.dumps(RATE_LIMITS),
            )
            logs = servers.data_dir
            api = Api(env, 1, logs / "api.log")
            processes = [
                Process(["relay"], env, logs / "relay.log"),
                Process(["worker", "--exclude-queues", "ai"], env, logs / "worker.log"),
                Process(["worker", "--queues", "ai", "--processes", "1"], env, logs / "ai.log"),
            ]
            try:
                (target, *_) = seed(api, servers.database_url)
                tenant = Tenant(api, target["slug"], target["jwt"])
                api.call(
                    "PUT",
                    f"{tenant.base}/ai/keys/openai",
                    {"api_key": GOOD_KEY, "base_url": provider.base_url},
                    tenant.token,
                )
                schema = "t_" + target["slug"].replace("-", "_")
                outcome = measure(args, tenant, schema, servers.database_url, provider)
                outcome["_settings"] = settings_lines(servers, server_settings(servers))
            finally:
                for process in processes:
                    process.stop()
                api.stop()
    return outcome


def measure(
    args: argparse.Namespace, tenant: Tenant, schema: str, database_url: str, provider: Any
) -> dict[str, Any]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        seed_id = tenant.upload(photo(1600, 1200))
        wait_captioned(conn, schema, [seed_id], 120)  # processed, captioned: warm
        clones = [
            row[0]
            for row in conn.execute(
                CLONE_SQL.format(schema=schema, columns=stored_columns(conn, schema)),
                (WARM_UP + args.captions, seed_id),
            ).fetchall()
        ]
        warm, measured = clones[:WARM_UP], clones[WARM_UP:]
        with ThreadPoolExecutor(CLIENT_THREADS) as clients:
            list(clients.map(tenant.ask_caption, warm))
            wait_captioned(conn, schema, warm, 120)
            time.sleep(2)  # their embeddings
            provider.reset()
            started = time.time()
            list(clients.map(tenant.ask_caption, measured))
        asked_s = time.time() - started
        wait_captioned(conn, schema, measured, 300)
        rows = conn.execute(
            f"SELECT extract(epoch FROM i.captioned_at), extract(epoch FROM u.created_at), "
            f"u.cost_usd, u.settled_at IS NOT NULL, u.outcome "
            f"FROM {schema}.media_items i JOIN {schema}.ai_usage u "
            "ON u.media_id = i.id AND u.operation = 'caption' "
            "WHERE i.id = ANY(%s::uuid[])",
            (measured,),
        ).fetchall()
        in_flight = provider.max_in_flight
        deadline = time.monotonic() + 120  # the last embeddings settle
        while True:
            reserved = conn.execute(
                f"SELECT count(*) FROM {schema}.ai_usage WHERE settled_at IS NULL"
            ).fetchone()
            if reserved is None or reserved[0] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    check(len(rows) == len(measured), f"{len(rows)} caption ledger rows for {len(measured)}")
    check(all(r[4] == "ok" and r[3] and r[2] > 0 for r in rows), "a caption call not settled ok")
    check(reserved is not None and reserved[0] == 0, f"{reserved} reservations left")
    captions = [c for c in provider.calls if str(c["path"]).endswith("/chat/completions")]
    check(len(captions) == len(measured), f"{len(captions)} caption calls")
    check(all(c["has_image"] for c in captions), "a caption call without its image")
    last = max(float(r[0]) for r in rows)
    latency_s = args.provider_latency_ms / 1000
    overheads = sorted((float(r[0]) - float(r[1]) - latency_s) * 1000 for r in rows)
    return {
        "captions_total_s": round(last - started, 2),
        "overhead_p50_ms": round(statistics.median(overheads), 1),
        "max_in_flight": in_flight,
        "_overhead_p90_ms": round(overheads[int(0.9 * (len(overheads) - 1))], 1),
        "_asked_s": round(asked_s, 2),
        "_captions": len(measured),
        "_calls": len(provider.calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--captions", type=int, default=500)
    parser.add_argument("--provider-latency-ms", type=int, default=PROVIDER_LATENCY_MS)
    args = parser.parse_args()
    outcome = run(args)
    out = sys.stderr if args.json else sys.stdout
    print_settings(
        outcome["_settings"],
        {
            "provider": f"OpenAI-compatible on loopback, every answer after "
            f"{args.provider_latency_ms} ms; BYOK key, guarded outbound client",
            "worker": "1 process `socialflow worker --queues ai`, WORKER_AI_THREADS (64), "
            "WORKER_STEP_CONCURRENCY (4)",
            "captions": f"{outcome['_captions']} POST …/captions by {CLIENT_THREADS} client "
            f"threads ({outcome['_asked_s']} s to send), after {WARM_UP} warm-up captions",
            "calls": f"{outcome['_calls']} provider calls (captions and their embeddings)",
            "rate limits": f"AI_RATE_LIMITS_PER_MINUTE={json.dumps(RATE_LIMITS)}",
        },
        file=out,
    )
    print(f"{'metric':<20}{'value':>10}  target", file=out)
    print(f"{'captions total s':<20}{outcome['captions_total_s']:>10}  <= 15", file=out)
    print(f"{'overhead p50 ms':<20}{outcome['overhead_p50_ms']:>10}  <= 15", file=out)
    print(f"{'overhead p90 ms':<20}{outcome['_overhead_p90_ms']:>10}", file=out)
    print(f"{'max in flight':<20}{outcome['max_in_flight']:>10}  >= 50", file=out)
    if args.json:
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))


if __name__ == "__main__":
    main()
