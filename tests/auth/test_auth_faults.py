"""Access tokens under bad input and PostgreSQL outages (issue 12)."""

from __future__ import annotations

import pytest

EDGES = ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+10:00"]


@pytest.mark.parametrize("when", EDGES)
async def test_expiry_beyond_the_calendar_is_400(client, tenant, when):
    r = await client.post("/api/tokens", json={"name": "edge", "scopes": ["verify"], "expiresAt": when},
                          headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_field" and r.json()["field"] == "expiresAt"


async def test_expiry_at_the_calendars_last_second_is_fine(client, tenant):
    r = await client.post("/api/tokens", json={"name": "edge", "scopes": ["verify"],
                                               "expiresAt": "9999-12-31T23:59:59Z"}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    assert r.json()["expiresAt"] == "9999-12-31T23:59:59Z"
