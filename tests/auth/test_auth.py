"""Access tokens: format, digest storage, 401 vs 403, revocation across processes, isolation."""

from __future__ import annotations

import asyncio

import pytest

from conftest import db_connection, running_app
from quota_gateway.auth.service import digest
from quota_gateway.principal import Principal


async def test_created_token_is_shown_once_and_stored_as_digest(client, tenant, settings):
    r = await client.post("/api/tokens", json={"name": "ci", "scopes": ["verify", "generate"]}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    made = r.json()
    token = made["token"]
    assert token.startswith("exo_at_") and len(token) == 7 + 12 + 1 + 32
    assert made["scopes"] == ["generate", "verify"]
    async with db_connection(settings.database_url) as conn:
        row = await conn.fetchrow("SELECT * FROM access_tokens WHERE public_id = $1", made["publicId"])
    secret = token.rsplit("_", 1)[1]
    assert bytes(row["secret_digest"]) == digest(secret)
    assert secret not in str(dict(row))
    listed = (await client.get("/api/tokens", headers=tenant.headers)).json()["items"]
    assert all(secret not in str(item) for item in listed)
    assert any(item["token"].endswith("********") for item in listed)


@pytest.mark.parametrize("header", [
    None,
    "",
    "Bearer abc",
    "ExisOneApi ",
    "ExisOneApi exo_at_short_secret",
    "ExisOneApi exo_at_abcdefghijkl_" + "x" * 31,
    "ExisOneApi exo_at_abcdefghijkl_" + "x" * 32,  # well-formed, unknown
    "ExisOneApi exo_at_abcdefghij!l_" + "x" * 32,
], ids=["none", "empty", "bearer", "blank-token", "short", "bad-length", "unknown", "bad-char"])
async def test_unusable_token_is_401_json(client, tenant, header):
    headers = {} if header is None else {"Authorization": header}
    r = await client.get("/api/tokens", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized" and r.json()["message"]


async def test_wrong_secret_for_known_public_id_is_401(client, tenant):
    public = tenant.token.split("_")[2]
    r = await client.get("/api/tokens", headers={"Authorization": f"ExisOneApi exo_at_{public}_{'Z' * 32}"})
    assert r.status_code == 401
    # the real token still works afterwards (a bad guess must not poison the cache)
    assert (await client.get("/api/tokens", headers=tenant.headers)).status_code == 200


async def test_token_without_permission_is_403(client, tenant, settings):
    verify_only = await tenant.token_with(settings.database_url, ["verify"])
    r = await client.get("/api/tokens", headers=verify_only)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    assert (await client.get("/api/tenant", headers=verify_only)).status_code == 200


def test_admin_scope_implies_every_permission():
    admin = Principal("t", 1, "p", frozenset({"admin"}))
    assert all(admin.allows(s) for s in ("verify", "generate", "email", "manage"))
    assert not Principal("t", 1, "p", frozenset({"verify"})).allows("manage")


async def test_expired_token_is_refused(client, tenant, clock):
    r = await client.post("/api/tokens", json={"name": "short", "scopes": ["verify"], "expiresAt": "2027-01-15T00:00:00Z"},
                          headers=tenant.headers)
    headers = {"Authorization": f"ExisOneApi {r.json()['token']}"}
    clock.set(1_800_000_000 - 86400 * 365 * 2)  # well before expiry
    assert (await client.get("/api/tenant", headers=headers)).status_code == 200
    clock.set(1_800_000_000 + 86400 * 365)  # after
    assert (await client.get("/api/tenant", headers=headers)).status_code == 401


async def test_revocation_reaches_a_second_app_instance(settings, tenant, clock):
    async with running_app(settings, clock) as (_, first), running_app(settings, clock) as (_, second):
        made = (await first.post("/api/tokens", json={"name": "x", "scopes": ["verify"]}, headers=tenant.headers)).json()
        headers = {"Authorization": f"ExisOneApi {made['token']}"}
        assert (await second.get("/api/tenant", headers=headers)).status_code == 200  # now cached in `second`
        r = await first.delete(f"/api/tokens/{made['publicId']}", headers=tenant.headers)
        assert r.status_code == 200
        for _ in range(40):  # pub/sub delivery: well inside the 2 s bound
            if (await second.get("/api/tenant", headers=headers)).status_code == 401:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("revoked token still accepted by the second instance after 2 s")
        assert (await first.get("/api/tenant", headers=headers)).status_code == 401


async def test_revoking_unknown_token_is_404(client, tenant):
    r = await client.delete("/api/tokens/nosuchtokenx", headers=tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_tenant_isolation_for_tokens(client, tenant, other_tenant):
    mine = (await client.get("/api/tokens", headers=tenant.headers)).json()["items"]
    theirs = (await client.get("/api/tokens", headers=other_tenant.headers)).json()["items"]
    assert {t["publicId"] for t in mine}.isdisjoint({t["publicId"] for t in theirs})
    # tenant B cannot revoke tenant A's token
    r = await client.delete(f"/api/tokens/{mine[0]['publicId']}", headers=other_tenant.headers)
    assert r.status_code == 404
    assert (await client.get("/api/tokens", headers=tenant.headers)).status_code == 200
    me = (await client.get("/api/tenant", headers=other_tenant.headers)).json()
    assert me["slug"] == "globex"
