"""Reads of tables counted from PostgreSQL's own statistics (pg_stat_user_tables), for tests that
prove a lookup reached PostgreSQL once or not at all. A backend publishes its pending statistics
within a second of going idle, so every count waits for that first."""

from __future__ import annotations

import asyncio

from conftest import db_connection

_STATS_PUBLISHED = 1.3  # seconds: a backend's pending statistics are flushed within 1 s of idling
_SETTLED = 1.0  # seconds the count must hold still to be taken as final (a closing backend publishes late)


async def _scans(database_url: str, tables: tuple[str, ...]) -> int:
    async with db_connection(database_url) as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return await conn.fetchval("SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) "
                                   "FROM pg_stat_user_tables WHERE relname = ANY($1::text[])", list(tables))


async def table_reads(database_url: str, *tables: str, above: int | None = None) -> int:
    """Scans (sequential and index) of `tables` so far, once every backend published its own: the
    count must hold still over one more interval (a loaded machine delays the publishing); with
    `above`, waits (up to about 10 s) until it passes it."""
    await asyncio.sleep(_STATS_PUBLISHED)
    count = await _scans(database_url, tables)
    for _ in range(40):
        waiting = above is not None and count <= above
        await asyncio.sleep(0.25 if waiting else _SETTLED)
        again = await _scans(database_url, tables)
        if again == count and not waiting:
            break
        count = again
    return count
