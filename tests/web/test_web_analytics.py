"""Analytics' series at each grain, against real PostgreSQL: buckets aligned to the grain (each
counted whole, the first one too), the number of buckets fixed per grain, activations and API units
on the same buckets, and only the tenant's own rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from web_helpers import activate_from, with_db

from conftest import make_product
from quota_gateway.web import analytics

# Wednesday 2027-03-03, noon: its week starts on Monday 03-01, its month on 03-01 too.
NOW = datetime(2027, 3, 3, 12, tzinfo=UTC)


def _epoch(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


async def _activate_at(app, client, tenant, clock, product: tuple[int, str], at: datetime, n: int) -> None:
    clock.set(at)
    key = (await client.post("/api/licenses", json={"productId": product[0], "email": f"c{n}@example.com"},
                             headers=tenant.headers)).json()["activationKey"]
    await activate_from(app, tenant, key, f"HW{n}", "1.1.1.1", f"c{n}@example.com", product=product[1])


@pytest.fixture
async def history(app, client, settings, tenant, other_tenant, clock):
    """Activations and API units of acme on chosen days (and one of globex's, which must not count)."""
    days = ["2026-03-15", "2026-09-07", "2026-09-08", "2027-02-10", "2027-03-01", "2027-03-03"]
    desk = (await make_product(client, tenant.headers, name="Desk App"), "Desk App")
    for n, day in enumerate(days):
        await _activate_at(app, client, tenant, clock, desk, datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC), n)
    globex = (await make_product(client, other_tenant.headers, name="Globex App"), "Globex App")
    await _activate_at(app, client, other_tenant, clock, globex, NOW - timedelta(hours=1), 99)
    product = await make_product(client, tenant.headers, name="Weather API")
    key_id = (await client.post("/api/apilicense", json={"productId": product, "maxApiCalls": 10_000},
                                headers=tenant.headers)).json()["id"]

    async def record(conn):   # the write-behind's daily record, on days of our choosing
        for day, units in (("2026-09-07", 40), ("2026-09-08", 2), ("2027-03-01", 5), ("2027-03-03", 7)):
            await conn.execute("INSERT INTO api_usage_daily (license_id, day, tenant_id, units) VALUES ($1, $2, $3, $4)",
                               key_id, datetime.fromisoformat(day).date(), tenant.id, units)
    await with_db(settings.database_url, record)
    return days


async def _series(settings, tenant, grain: str) -> tuple[dict, dict]:
    async def read(conn):
        return (await analytics.activations_over_time(conn, tenant.id, NOW, grain),
                await analytics.units_over_time(conn, tenant.id, NOW, grain))
    return await with_db(settings.database_url, read)


async def test_day_grain(history, settings, tenant):
    activations, units = await _series(settings, tenant, "day")
    assert len(activations["x"]) == 30 and activations["x"] == units["x"]
    assert activations["x"][0] == _epoch("2027-02-02") and activations["x"][-1] == _epoch("2027-03-03")
    assert sum(activations["y"]) == 3   # 02-10, 03-01, 03-03; not globex's
    assert activations["y"][-1] == 1 and units["series"]["Weather API"][-1] == 7
    assert sum(units["series"]["Weather API"]) == 12


async def test_week_grain_counts_the_first_week_whole(history, settings, tenant):
    activations, units = await _series(settings, tenant, "week")
    assert len(activations["x"]) == 26 and activations["x"] == units["x"]
    # 25 weeks before the week of 03-01 starts on Monday 2026-09-07: both its days count, 03-08 too.
    assert activations["x"][0] == _epoch("2026-09-07") and activations["x"][-1] == _epoch("2027-03-01")
    assert activations["y"][0] == 2 and units["series"]["Weather API"][0] == 42
    assert activations["y"][-1] == 2 and units["series"]["Weather API"][-1] == 12
    assert sum(activations["y"]) == 5


async def test_month_grain_has_twelve_months(history, settings, tenant):
    activations, units = await _series(settings, tenant, "month")
    assert len(activations["x"]) == 12 and activations["x"] == units["x"]
    assert activations["x"][0] == _epoch("2026-04-01") and activations["x"][-1] == _epoch("2027-03-01")
    assert sum(activations["y"]) == 5   # 2026-03-15 is before the first month
    assert activations["y"][5] == 2 and units["series"]["Weather API"][5] == 42   # September
    assert activations["y"][-1] == 2 and units["series"]["Weather API"][-1] == 12


async def test_the_page_offers_each_grain(app, client, settings, tenant, clock, history):
    from web_helpers import sign_in_admin

    clock.set(NOW)
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    for grain, total in (("day", 3), ("week", 5), ("month", 5)):
        page = await client.get(f"/admin/{tenant.slug}/analytics", params={"grain": grain})
        assert f"Activations per {grain}" in page.text and f"{total} activations in this period" in page.text
    page = await client.get(f"/admin/{tenant.slug}/analytics", params={"grain": "fortnight"})
    assert page.status_code == 200 and "Activations per day" in page.text
