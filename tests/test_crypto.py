"""Tenant signing keys: the active pair is re-read every few seconds, decrypted once per process."""

from __future__ import annotations

import asyncio

import asyncpg

from conftest import TEST_MASTER_KEY, make_tenant
from quota_gateway import crypto


async def test_an_unchanged_pair_is_not_decrypted_again(settings, monkeypatch):
    monkeypatch.setattr(crypto, "_CACHE_SECONDS", 0.0)  # every call re-reads the active pair
    tenant = await make_tenant(settings.database_url, "acme")
    crypto._signing_cache.pop(tenant.id, None)
    pool = await asyncpg.create_pool(settings.database_url, min_size=8, max_size=8)
    try:
        async def load() -> tuple:
            async with pool.acquire() as conn:
                return await crypto.signing_key(conn, tenant.id, TEST_MASTER_KEY)

        # Callers that all missed together share one decrypted key (the same object), and a
        # re-read that finds the same pair keeps it.
        first = await asyncio.gather(*(load() for _ in range(8)))
        again = await load()
        assert len({kid for kid, _ in first}) == 1 and len({id(key) for _, key in first}) == 1
        assert again[0] == first[0][0] and again[1] is first[0][1]

        # A rotation is a new pair: it is read and decrypted, and signs what the new public key verifies.
        async with pool.acquire() as conn:
            kid = await crypto.create_key_pair(conn, tenant.id, TEST_MASTER_KEY)
        rotated = await load()
        assert rotated[0] == kid != first[0][0] and rotated[1] is not first[0][1]
        assert rotated[1].public_key().public_numbers() != first[0][1].public_key().public_numbers()
    finally:
        await pool.close()
