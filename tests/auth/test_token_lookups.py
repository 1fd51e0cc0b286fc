"""An access token the in-process cache misses is probed once and read from PostgreSQL once, on
the hot route and on every other route; requests missing the same token at the same time share
that one read. Counted at the app's own cache, against the real PostgreSQL: every probe, and
every read (the cache's one query of access_tokens)."""

from __future__ import annotations

import asyncio

from conftest import make_api_key, make_product, running_app

VALIDATE = "/api/apilicense/validate"
UNKNOWN = {"Authorization": "ExisOneApi exo_at_abcdefghijkl_" + "x" * 32}


def _counted(app) -> tuple[list, list]:
    """(probes, reads) of the app's token cache from now on: the headers probed, the public ids read
    (the cache itself still answers and reads)."""
    tokens = app.state.services.tokens
    probes: list = []
    reads: list = []
    probe, load = tokens.probe, tokens._load

    def counted_probe(header):
        probes.append(header)
        return probe(header)

    async def counted_load(public, secret):
        reads.append(public)
        return await load(public, secret)

    tokens.probe, tokens._load = counted_probe, counted_load
    return probes, reads


async def test_a_miss_is_one_probe_and_one_read_however_many_ask_at_once(settings, tenant, clock):
    async with running_app(settings, clock) as (app, client):
        key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
        verify = await tenant.token_with(settings.database_url, ["verify"])  # this process never saw it
        public = verify["Authorization"].split("_")[2]
        probes, reads = _counted(app)
        answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key}, headers=verify)
                                         for _ in range(8)))
        assert [r.status_code for r in answers] == [200] * 8
        assert (len(probes), reads) == (8, [public])
        for _ in range(4):  # cached now: probes only
            assert (await client.post(VALIDATE, json={"apiKey": key}, headers=verify)).status_code == 200
        assert (len(probes), reads) == (12, [public])
        # an unknown token: one read for the requests asking together, then the short negative entry
        answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key}, headers=UNKNOWN)
                                         for _ in range(4)))
        assert [r.status_code for r in answers] == [401] * 4
        assert (await client.get("/api/tenant", headers=UNKNOWN)).status_code == 401
        assert (len(probes), reads) == (17, [public, "abcdefghijkl"])


async def test_a_miss_on_a_guarded_route_is_one_probe_and_one_read(settings, tenant, clock):
    """With the per-address failed-lookup window on (a Redis script before the read), a miss still
    probes and reads once, and so does the re-check of a token past the cache's TTL."""
    async with running_app(settings.with_(client_failures_per_minute=5), clock) as (app, client):
        fresh = await tenant.token_with(settings.database_url, ["verify"])
        probes, reads = _counted(app)
        assert (await client.get("/api/tenant", headers=fresh)).status_code == 200
        assert (len(probes), len(reads)) == (1, 1)
        assert (await client.get("/api/tenant", headers=fresh)).status_code == 200
        assert (len(probes), len(reads)) == (2, 1)
        clock.advance(3600)
        assert (await client.get("/api/tenant", headers=fresh)).status_code == 200
        assert (len(probes), len(reads)) == (3, 2)
        assert (await client.get("/api/tenant", headers=UNKNOWN)).status_code == 401
        assert (len(probes), len(reads)) == (4, 3)
