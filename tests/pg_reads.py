"""Reads of tables counted from PostgreSQL's own statistics (pg_stat_user_tables), for tests that
prove a lookup reached PostgreSQL once or not at all. A backend publishes its pending statistics
within a second of going idle, so every count waits for that first."""

from __future__ import annotations

import asyncio

from conftest import db_connection

_STATS_PUBLISHED = 1.3  # seconds: a backend's pending statistics are flushed within 1 s of idling


async def _scans(database_url: str, tables: tuple[str, ...]) -> int:
    async with db_connection(database_url) as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return await conn.fetchval("SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) "
                                   "FROM pg_stat_user_tables WHERE relname = ANY($1::text[])", list(tables))


async def table_reads(database_url: str, *tables: str, above: int | None = None) -> int:
    """Scans (sequential and index) of `tables` so far, once every backend published its own;
    with `above`, waits (up to 10 s, a loaded machine delays the publishing) until they pass it."""
    await asyncio.sleep(_STATS_PUBLISHED)
    count = await _scans(database_url, tables)
    for _ in range(40):
        if above is None or count > above:
            break
        await asyncio.sleep(0.25)
        count = await _scans(database_url, tables)
    return count
