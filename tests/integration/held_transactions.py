"""How many of the API's connections sit in an open transaction: asked from a fake server's
thread while it answers, it tells whether the request held one across the outbound call."""

from __future__ import annotations

import psycopg

from socialflow.db.engine import libpq_url


def open_api_transactions(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'socialflow' "
            "AND state LIKE 'idle in transaction%%'"
        ).fetchone()
        return int(row[0]) if row else -1
