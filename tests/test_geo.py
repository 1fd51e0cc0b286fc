"""Client address -> country, offline (the registries' allocations shipped in the iptocc wheel), and
the promise that only the country is kept: after activations, validations and a portal sign-in from
public addresses, no table holds the addresses themselves."""

from __future__ import annotations

import httpx
import pytest

from conftest import db_connection, make_product
from quota_gateway.geo import country_of


@pytest.mark.parametrize(("address", "country"), [
    ("1.1.1.1", "AU"), ("85.214.0.1", "DE"), ("133.1.1.1", "JP"), ("2a01:4f8::1", "DE"), (" 1.1.1.1 ", "AU"),
    ("10.0.0.1", None), ("192.168.1.1", None), ("100.64.0.1", None), ("127.0.0.1", None), ("::1", None),
    ("fe80::1", None), ("not-an-address", None), ("", None), (None, None),
])
def test_country_of(address, country):
    assert country_of(address) == country


async def test_only_the_country_is_kept(app, client, settings, tenant):
    product = await make_product(client, tenant.headers, name="Desk App")
    key = (await client.post("/api/licenses", json={"productId": product, "email": "buyer@example.com",
                                                    "kind": "corporate", "maxSeats": 3},
                             headers=tenant.headers)).json()["activationKey"]
    addresses = ("85.214.0.1", "2a01:4f8::1")
    for n, address in enumerate(addresses):
        device = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 5000)),
                                   base_url="http://testserver")
        async with device:
            body = {"activationKey": key, "email": "buyer@example.com", "hardwareId": f"HW{n}",
                    "productName": "Desk App"}
            assert (await device.post("/api/license/activate", json=body, headers=tenant.headers)).status_code == 200
            assert (await device.post("/api/license/validate", json=body, headers=tenant.headers)).status_code == 200
            page = await device.get(f"/portal/{tenant.slug}/login")
            token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            await device.post(f"/portal/{tenant.slug}/login", data={"csrf_token": token, "email": "buyer@example.com"})
    async with db_connection(settings.database_url) as conn:
        assert [r["country"] for r in await conn.fetch("SELECT country FROM activations ORDER BY id")] == ["DE", "DE"]
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        holding = []
        for table in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{table}" t')
            holding += [table for r in rows if any(a in r["row"] for a in addresses)]
    assert holding == [], f"client addresses stored in {sorted(set(holding))}"
