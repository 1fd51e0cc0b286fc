"""Licensing under concurrency and bad input (issue 12)."""

from __future__ import annotations

import asyncio


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


async def test_concurrent_first_sightings_of_a_device_agree(client, tenant):
    r = await client.post("/api/product", json={"name": "Desktop App", "trialDays": 14}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    for round_ in range(5):  # a few new devices: the race is between the insert and the read of a sighting
        body = {"activationKey": "", "hardwareId": f"HW-NEW-{round_}", "productName": "Desktop App"}
        answers = await asyncio.gather(*(client.post("/api/license/validate", json=body, headers=tenant.headers)
                                         for _ in range(16)))
        assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers if a.status_code != 200]
        assert {a.json()["status"] for a in answers} == {"trial"}
        assert len({a.json()["expirationDate"] for a in answers}) == 1
