"""Tenants: `/api/tenant` answers the calling token's own tenant; slugs are checked and unique."""

from __future__ import annotations

import pytest

from conftest import TEST_MASTER_KEY, db_connection
from quota_gateway.errors import ApiError
from quota_gateway.tenants import create_tenant, get_tenant, list_tenants, slug_of


async def test_each_token_sees_its_own_tenant_only(client, tenant, other_tenant):
    mine = (await client.get("/api/tenant", headers=tenant.headers)).json()
    theirs = (await client.get("/api/tenant", headers=other_tenant.headers)).json()
    assert (mine["id"], mine["slug"], mine["name"]) == (tenant.id, "acme", "Acme")
    assert (theirs["id"], theirs["slug"]) == (other_tenant.id, "globex")
    assert mine["createdAt"].endswith("Z")
    assert (await client.get("/api/tenant")).status_code == 401


async def test_found_by_id_or_slug_and_listed_in_creation_order(settings, tenant, other_tenant):
    async with db_connection(settings.database_url) as conn:
        assert (await get_tenant(conn, tenant.id))["slug"] == "acme"
        assert (await get_tenant(conn, "globex"))["id"] == other_tenant.id
        assert await get_tenant(conn, "initech") is None
        assert await slug_of(conn, other_tenant.id) == "globex"
        assert [t["slug"] for t in await list_tenants(conn)] == ["acme", "globex"]


@pytest.mark.parametrize("slug", ["", "Acme", "-acme", "acme corp", "a" * 64, "acmé"])
async def test_a_malformed_slug_is_a_400_naming_the_field(settings, slug):
    async with db_connection(settings.database_url) as conn:
        with pytest.raises(ApiError) as refused:
            await create_tenant(conn, slug, "Name", master_key=TEST_MASTER_KEY)
    assert (refused.value.status, refused.value.code) == (400, "invalid_field")


async def test_a_taken_slug_is_a_409_and_leaves_nothing_behind(settings, tenant):
    async with db_connection(settings.database_url) as conn:
        with pytest.raises(ApiError) as refused:
            await create_tenant(conn, "acme", "Acme again", master_key=TEST_MASTER_KEY)
        assert (refused.value.status, refused.value.code) == (409, "tenant_exists")
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 1
        assert await conn.fetchval("SELECT count(*) FROM tenant_keys") == 1
