"""Licensing under concurrency and bad input (issue 12)."""

from __future__ import annotations

import asyncio

from conftest import make_product


async def test_renaming_a_plan_to_another_plans_name_is_409(client, tenant):
    made = []
    for name in ("Annual", "Monthly"):
        r = await client.post("/api/plan", json={"name": name, "durationDays": 30}, headers=tenant.headers)
        assert r.status_code == 201, r.text
        made.append(r.json())
    r = await client.post("/api/plan", json={**made[1], "name": "Annual"}, headers=tenant.headers)
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "plan_exists"
    names = [p["name"] for p in (await client.get("/api/plan", headers=tenant.headers)).json()["items"]]
    assert names == ["Annual", "Monthly"]
