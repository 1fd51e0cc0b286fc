"""An access token the in-process cache misses is probed once and read from PostgreSQL once, on
the hot route and on every other route; requests missing the same token at the same time share
that one read. Reads counted from PostgreSQL's statistics (pg_reads), probes by a counting wrapper
around the app's own cache."""

from __future__ import annotations

import asyncio

from conftest import make_api_key, make_product, running_app
from pg_reads import table_reads

VALIDATE = "/api/apilicense/validate"
UNKNOWN = {"Authorization": "ExisOneApi exo_at_abcdefghijkl_" + "x" * 32}


def _count_probes(app) -> list:
    """The headers every probe of the app's token cache was asked about (the cache itself answers)."""
    tokens = app.state.services.tokens
    probed: list = []
    probe = tokens.probe

    def counted(header):
        probed.append(header)
        return probe(header)

    tokens.probe = counted
    return probed


async def test_a_miss_is_one_probe_and_one_read_however_many_ask_at_once(settings, tenant, clock):
    async with running_app(settings, clock) as (app, client):
        key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
        verify = await tenant.token_with(settings.database_url, ["verify"])  # this process never saw it
        probed = _count_probes(app)
        before = await table_reads(settings.database_url, "access_tokens")
        answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key}, headers=verify)
                                         for _ in range(8)))
        assert [r.status_code for r in answers] == [200] * 8
        read = await table_reads(settings.database_url, "access_tokens", above=before)
        assert read == before + 1
        assert len(probed) == 8
        for _ in range(4):  # cached now: probes only
            assert (await client.post(VALIDATE, json={"apiKey": key}, headers=verify)).status_code == 200
        assert len(probed) == 12
        # an unknown token: one read for the requests asking together, then the short negative entry
        answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key}, headers=UNKNOWN)
                                         for _ in range(4)))
        assert [r.status_code for r in answers] == [401] * 4
        assert (await client.get("/api/tenant", headers=UNKNOWN)).status_code == 401
        assert await table_reads(settings.database_url, "access_tokens", above=read) == read + 1
        assert len(probed) == 17


async def test_a_miss_on_a_guarded_route_is_one_probe_and_one_read(settings, tenant, clock):
    """With the per-address failed-lookup window on, a miss still reads once (the window is Redis)."""
    async with running_app(settings.with_(client_failures_per_minute=5), clock) as (app, client):
        fresh = await tenant.token_with(settings.database_url, ["verify"])
        probed = _count_probes(app)
        before = await table_reads(settings.database_url, "access_tokens")
        assert (await client.get("/api/tenant", headers=fresh)).status_code == 200
        assert await table_reads(settings.database_url, "access_tokens", above=before) == before + 1
        assert len(probed) == 1
        clock.advance(3600)  # past the cache's TTL: a re-check is one probe and one read too
        read = before + 1
        assert (await client.get("/api/tenant", headers=fresh)).status_code == 200
        assert await table_reads(settings.database_url, "access_tokens", above=read) == read + 1
        assert len(probed) == 2
