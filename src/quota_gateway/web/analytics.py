"""Analytics for the admin UI: activations over time and by country, validations and refusals,
API units over time per product and per key, keys near their limits. All tenant-scoped reads;
series come back as parallel lists ready for the charts (x: unix seconds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

GRAINS = {"day": 30, "week": 26, "month": 12}   # buckets shown at each grain, the current one last
NEAR_LIMIT = 0.8


def _epoch(bucket: datetime) -> int:
    """Buckets are UTC wall times (timestamp without time zone)."""
    return int(bucket.replace(tzinfo=UTC).timestamp())


def _start(now: datetime, grain: str) -> datetime:
    """The start of the first bucket (UTC), aligned to the grain: every bucket, the first one too,
    counts a whole day, week (from Monday) or month, and a grain always shows GRAINS[grain] buckets."""
    back = GRAINS[grain] - 1
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "day":
        return day - timedelta(days=back)
    if grain == "week":
        return day - timedelta(days=day.weekday(), weeks=back)
    months = day.year * 12 + day.month - 1 - back
    return day.replace(year=months // 12, month=months % 12 + 1, day=1)


async def activations_over_time(conn: asyncpg.Connection, tenant_id: str, now: datetime, grain: str) -> dict:
    rows = await conn.fetch(
        """SELECT b.bucket, count(a.id) AS n
           FROM generate_series(date_trunc($3, $2::timestamptz AT TIME ZONE 'UTC'),
                                date_trunc($3, $4::timestamptz AT TIME ZONE 'UTC'), ('1 ' || $3)::interval) AS b(bucket)
           LEFT JOIN activations a ON a.tenant_id = $1
                AND date_trunc($3, a.activated_at AT TIME ZONE 'UTC') = b.bucket
           GROUP BY b.bucket ORDER BY b.bucket""", tenant_id, _start(now, grain), grain, now)
    return {"x": [_epoch(r["bucket"]) for r in rows], "y": [r["n"] for r in rows]}


async def activations_by_country(conn: asyncpg.Connection, tenant_id: str) -> dict[str, int]:
    rows = await conn.fetch("SELECT country, count(*) AS n FROM activations WHERE tenant_id = $1 AND country IS NOT NULL "
                            "GROUP BY country ORDER BY n DESC", tenant_id)
    return {r["country"]: r["n"] for r in rows}


async def license_refusals(conn: asyncpg.Connection, tenant_id: str) -> dict[str, int]:
    """Activation-key validations that failed, by status (from the events outbox)."""
    rows = await conn.fetch("SELECT data->>'status' AS status, count(*) AS n FROM events "
                            "WHERE tenant_id = $1 AND type = 'license.validation.failed' GROUP BY 1 ORDER BY 2 DESC",
                            tenant_id)
    return {r["status"] or "unknown": r["n"] for r in rows}


def api_validations(counts: dict[str, int]) -> dict[str, int]:
    """API-key validations of the tenant by outcome code, most frequent first."""
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


async def units_over_time(conn: asyncpg.Connection, tenant_id: str, now: datetime, grain: str) -> dict:
    """API units per product per bucket (from the write-behind daily record)."""
    rows = await conn.fetch(
        """SELECT date_trunc($3, u.day::timestamp) AS bucket, p.name, sum(u.units)::bigint AS units
           FROM api_usage_daily u JOIN api_licenses l ON l.id = u.license_id JOIN products p ON p.id = l.product_id
           WHERE u.tenant_id = $1 AND u.day >= $2 GROUP BY 1, 2 ORDER BY 1""",
        tenant_id, _start(now, grain).date(), grain)
    buckets = await conn.fetch(
        """SELECT b FROM generate_series(date_trunc($2, $1::timestamptz AT TIME ZONE 'UTC'),
                                         date_trunc($2, $3::timestamptz AT TIME ZONE 'UTC'), ('1 ' || $2)::interval) b""",
        _start(now, grain), grain, now)
    xs = [r["b"] for r in buckets]
    series: dict[str, list[int]] = {}
    for r in rows:
        values = series.setdefault(r["name"], [0] * len(xs))
        if r["bucket"] in xs:
            values[xs.index(r["bucket"])] += r["units"]
    return {"x": [_epoch(x) for x in xs], "series": series}


async def top_keys(conn: asyncpg.Connection, tenant_id: str, now: datetime, grain: str, limit: int = 10) -> list[dict]:
    rows = await conn.fetch(
        """SELECT l.id, l.key_hint, l.client_name, p.name AS product_name, sum(u.units)::bigint AS units
           FROM api_usage_daily u JOIN api_licenses l ON l.id = u.license_id JOIN products p ON p.id = l.product_id
           WHERE u.tenant_id = $1 AND u.day >= $2 GROUP BY l.id, p.name ORDER BY units DESC LIMIT $3""",
        tenant_id, _start(now, grain).date(), limit)
    return [dict(r) for r in rows]


async def keys_near_limits(conn: asyncpg.Connection, tenant_id: str, now: datetime) -> list[dict]:
    """Live API keys that used at least 80 % of their lifetime quota (as recorded)."""
    rows = await conn.fetch(
        """SELECT l.id, l.key_hint, l.client_name, p.name AS product_name, l.max_api_calls,
                  l.used_total - l.used_offset AS used
           FROM api_licenses l JOIN products p ON p.id = l.product_id
           WHERE l.tenant_id = $1 AND l.revoked_at IS NULL AND (l.expires_at IS NULL OR l.expires_at > $2)
             AND l.max_api_calls IS NOT NULL AND l.used_total - l.used_offset >= $3 * l.max_api_calls
           ORDER BY (l.used_total - l.used_offset)::float / l.max_api_calls DESC LIMIT 50""", tenant_id, now, NEAR_LIMIT)
    return [{**dict(r), "percent": round(100 * r["used"] / r["max_api_calls"])} for r in rows]


VALIDATIONS_FAMILY = "qg_apilicense_validations"  # counted as (tenant, product, outcome code) by the engine


def validation_counts(services: Any, engine: Any, tenant_id: str) -> dict[str, int]:
    """Outcome code -> this tenant's API-key validations answered by every worker process of this
    server since each started: this process's own counts plus the other workers' latest shared
    snapshots (`serve --workers N`, as /metrics adds them)."""
    totals = dict(engine.tenant_validation_counts(tenant_id))
    for key, count in services.metrics.peer_counts(VALIDATIONS_FAMILY):
        if len(key) == 3 and key[0] == tenant_id:
            totals[key[2]] = totals.get(key[2], 0) + count
    return totals


async def overview(conn: asyncpg.Connection, tenant_id: str, now: datetime, grain: str,
                   api_counts: dict[str, int]) -> dict[str, Any]:
    return {"activations": await activations_over_time(conn, tenant_id, now, grain),
            "countries": await activations_by_country(conn, tenant_id),
            "licenseRefusals": await license_refusals(conn, tenant_id),
            "apiValidations": api_validations(api_counts),
            "units": await units_over_time(conn, tenant_id, now, grain),
            "topKeys": await top_keys(conn, tenant_id, now, grain),
            "nearLimits": await keys_near_limits(conn, tenant_id, now)}
