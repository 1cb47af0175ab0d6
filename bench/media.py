"""Media benchmark: a 12-megapixel JPEG from confirm to `ready` with every derivative.

Starts `socialflow api`, `socialflow relay` and `socialflow worker --processes N` on durable
embedded servers (or DATABASE_URL / REDIS_URL) with the local store (the default of
`make run`), provisions a tenant, and through the API as a client would: starts uploads, sends
the bytes to the signed URLs, confirms, and watches the items turn `ready`.

- latency (1 worker process): one image at a time, confirm answered → `ready` seen (polled
  every 5 ms in the database), `--latency-images` times; p50 and p99;
- memory (1 worker process): 4 images confirmed at once, the worker process's resident set
  sampled every 10 ms while they are processed; the peak;
- throughput (2 worker processes): `--throughput-images` confirmed back to back, images per
  second from the first confirm to the last `ready`.

Every image is a distinct 4000x3000 JPEG with EXIF and GPS (distinct bytes: no dedup), and
the run checks that each item ended `ready` with its 8 derivatives in the store.

    python bench/media.py [--json] [--latency-images 30] [--throughput-images 40]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import psycopg
from PIL import ExifTags, Image

from _http_bench import Api, api_environment, free_port, seed
from _servers import (
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

WIDTH, HEIGHT = 4000, 3000
DERIVATIVES = 8


def base_photo() -> Image.Image:
    """A photo-like 12 MP frame: gradients and sensor noise (compresses like a photo)."""
    noise = Image.effect_noise((WIDTH, HEIGHT), 40)
    gradient = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    radial = Image.radial_gradient("L").resize((WIDTH, HEIGHT))
    return Image.merge("RGB", (gradient, radial, noise))


def photo_bytes(frame: Image.Image, n: int) -> bytes:
    """The frame with a mark of its own (distinct bytes), EXIF and a GPS position."""
    marked = frame.copy()
    marked.paste((n * 37 % 256, n * 11 % 256, n % 256), (0, 0, 64, 64))
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "BenchCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, float(n % 60))
    out = io.BytesIO()
    marked.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


class Process:
    """A `socialflow …` process of its own, in its own session, its log in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "socialflow", *args],
            env=env,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def tree_rss_mb(self) -> float:
        """The largest resident set among the process and its children (the worker)."""
        try:
            root = psutil.Process(self.popen.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        sizes = []
        for proc in procs:
            try:
                sizes.append(proc.memory_info().rss)
            except psutil.NoSuchProcess:
                continue
        return max(sizes, default=0) / 1024 / 1024

    def stop(self) -> None:
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()


class Client:
    def __init__(self, api: Api, tenant: str, token: str) -> None:
        self.api, self.tenant, self.token = api, tenant, token

    def start(self, data: bytes, n: int) -> str:
        started = self.api.call(
            "POST",
            f"/api/v1/tenants/{self.tenant}/media/uploads",
            {"filename": f"photo-{n}.jpg", "content_type": "image/jpeg", "size": len(data)},
            self.token,
        )
        upload = started["upload"]
        put = urllib.request.Request(
            upload["url"], data=data, method="PUT", headers=upload["headers"]
        )
        with urllib.request.urlopen(put, timeout=60) as answer:
            check(answer.status == 204, f"upload answered {answer.status}")
        return str(started["media_id"])

    def confirm(self, media_id: str) -> None:
        self.api.call(
            "POST", f"/api/v1/tenants/{self.tenant}/media/{media_id}/confirm", None, self.token
        )


def wait_ready(
    conn: psycopg.Connection[Any], schema: str, ids: list[str], timeout: float
) -> dict[str, float]:
    """When each item turned ready (monotonic), polled every 5 ms; fails on `failed`."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(ids):
        check(time.monotonic() < deadline, f"items not ready after {timeout} s")
        rows = conn.execute(
            f"SELECT id::text, status, failure_reason FROM {schema}.media_items "
            "WHERE id = ANY(%s::uuid[])",
            ([i for i in ids if i not in seen],),
        ).fetchall()
        now = time.monotonic()
        for media_id, status, reason in rows:
            check(status != "failed", f"{media_id} failed: {reason}")
            if status == "ready":
                seen[media_id] = now
        time.sleep(0.005)
    return seen


def verify(conn: psycopg.Connection[Any], schema: str, data_dir: Path, ids: list[str]) -> None:
    for media_id, derivatives in conn.execute(
        f"SELECT id::text, derivatives FROM {schema}.media_items WHERE id = ANY(%s::uuid[])",
        (ids,),
    ):
        check(len(derivatives) == DERIVATIVES, f"{media_id}: {len(derivatives)} derivatives")
        for derivative in derivatives.values():
            check(
                (data_dir / "media" / derivative["key"]).is_file(), f"{derivative['key']} missing"
            )


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logging()
    frame = base_photo()
    with durable_servers() as servers:
        assert servers.redis_url is not None
        prepare_shared(servers.database_url)
        cache = EmbeddedRedis(
            servers.data_dir / "cache-redis",
            throwaway=True,
            extra_args=("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"),
        )
        cache_url = cache.start()
        data_dir = servers.data_dir / "app"
        env = api_environment(
            servers.database_url, servers.redis_url, cache_url, data_dir, free_port()
        )
        env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{env['PORT']}"
        logs = servers.data_dir
        api = Api(env, 1, logs / "api.log")
        relay = Process(["relay"], env, logs / "relay.log")
        try:
            (target, *_) = seed(api, servers.database_url)
            client = Client(api, target["slug"], target["jwt"])
            schema = "t_" + target["slug"].replace("-", "_")
            outcome = measure(
                args, env, logs, client, schema, frame, servers.database_url, data_dir
            )
            outcome["_settings"] = settings_lines(servers, server_settings(servers))
        finally:
            relay.stop()
            api.stop()
            cache.stop()
    return outcome


def measure(
    args: argparse.Namespace,
    env: dict[str, str],
    logs: Path,
    client: Client,
    schema: str,
    frame: Image.Image,
    database_url: str,
    data_dir: Path,
) -> dict[str, Any]:
    counter = iter(range(10**6))
    size_mb = len(photo_bytes(frame, 0)) / 1024 / 1024
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        # 1 worker process: latency, then memory with 4 at once.
        worker = Process(["worker", "--processes", "1"], env, logs / "worker-1.log")
        try:
            warm = client.start(photo_bytes(frame, next(counter)), 0)
            client.confirm(warm)
            wait_ready(conn, schema, [warm], 120)
            latencies = []
            done = []
            for _ in range(args.latency_images):
                media_id = client.start(photo_bytes(frame, next(counter)), 0)
                client.confirm(media_id)
                confirmed = time.monotonic()
                ready = wait_ready(conn, schema, [media_id], 60)[media_id]
                latencies.append((ready - confirmed) * 1000)
                done.append(media_id)
            batch = [client.start(photo_bytes(frame, next(counter)), 0) for _ in range(4)]
            peak = [0.0]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    peak[0] = max(peak[0], worker.tree_rss_mb())
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            threads = [threading.Thread(target=client.confirm, args=(m,)) for m in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wait_ready(conn, schema, batch, 120)
            sampling.set()
            sampler.join()
            done += batch
        finally:
            worker.stop()
        # 2 worker processes: throughput.
        worker = Process(["worker", "--processes", "2"], env, logs / "worker-2.log")
        try:
            warm = [client.start(photo_bytes(frame, next(counter)), 0) for _ in range(2)]
            for media_id in warm:
                client.confirm(media_id)
            wait_ready(conn, schema, warm, 120)
            pending = [
                client.start(photo_bytes(frame, next(counter)), 0)
                for _ in range(args.throughput_images)
            ]
            first = time.monotonic()
            for media_id in pending:
                client.confirm(media_id)
            ready = wait_ready(conn, schema, pending, 600)
            elapsed = max(ready.values()) - first
            done += pending
        finally:
            worker.stop()
        verify(conn, schema, data_dir, done)
    ordered = sorted(latencies)
    return {
        "ready_p50_ms": round(statistics.median(ordered), 1),
        "ready_p99_ms": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 1),
        "peak_rss_mb": round(peak[0], 1),
        "images_per_s": round(len(pending) / elapsed, 2),
        "_image_mb": round(size_mb, 2),
        "_latency_images": len(latencies),
        "_throughput_images": len(pending),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--latency-images", type=int, default=30)
    parser.add_argument("--throughput-images", type=int, default=40)
    args = parser.parse_args()
    outcome = run(args)
    out = sys.stderr if args.json else sys.stdout
    print_settings(
        outcome["_settings"],
        {
            "image": f"{WIDTH}x{HEIGHT} JPEG q90 with EXIF/GPS, {outcome['_image_mb']} MB, "
            "distinct bytes each",
            "store": "local (DATA_DIR/media), uploads through the API's signed URLs",
            "worker": "socialflow worker (Dramatiq), 4 threads per process; Pillow, one "
            "decode at a time per process, renditions encoded on every core",
            "latency": f"{outcome['_latency_images']} images one at a time, confirm answered "
            "-> ready seen (5 ms polls)",
            "throughput": f"{outcome['_throughput_images']} images confirmed back to back, "
            "2 worker processes",
        },
        file=out,
    )
    print(f"{'metric':<16}{'value':>10}  target", file=out)
    print(f"{'ready p50 ms':<16}{outcome['ready_p50_ms']:>10}  <= 600", file=out)
    print(f"{'ready p99 ms':<16}{outcome['ready_p99_ms']:>10}  <= 1500", file=out)
    print(
        f"{'peak RSS MB':<16}{outcome['peak_rss_mb']:>10}  <= 400 (4 at once, 1 process)", file=out
    )
    print(f"{'images/s':<16}{outcome['images_per_s']:>10}  >= 3 (2 processes)", file=out)
    if args.json:
        print(json.dumps({k: v for k, v in outcome.items() if not k.startswith("_")}))


if __name__ == "__main__":
    main()
