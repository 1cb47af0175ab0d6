"""A relay process with the test routes, for crash tests.

`--hold-after-enqueue` makes it stop between Redis's acknowledgement and the commit of its
claim — the worst moment to die — and print HELD so the test knows when to kill it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import redis
from outbox_relay.messages import EncodedMessage
from outbox_relay.relay import OutboxRelay

from tests.integration.outbox.support import TEST_ROUTES


class HoldingRelay(OutboxRelay):
    async def enqueue(self, client: redis.Redis, encoded: list[EncodedMessage]) -> dict[str, str]:
        await super().enqueue(client, encoded)
        print("HELD", flush=True)
        await asyncio.Event().wait()
        return {}


async def serve(args: argparse.Namespace) -> None:
    relay_class = HoldingRelay if args.hold_after_enqueue else OutboxRelay
    relay = relay_class(
        database_url=args.database_url,
        redis_url=args.redis_url,
        routes=TEST_ROUTES,
        batch_size=args.batch_size,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("STARTED", flush=True)
    await relay.run(stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("redis_url")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--hold-after-enqueue", action="store_true")
    asyncio.run(serve(parser.parse_args(sys.argv[1:])))


if __name__ == "__main__":
    main()
