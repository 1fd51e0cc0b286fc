"""Cold keys: every metadata miss of one loop tick is filled by one Postgres query and one script
call (one per bucket on a cluster; metadata and counters together), with the counters rebuilt exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

import redis as redis_sync

from conftest import db_connection, make_product, running_app
from quota_gateway import fastpath
from quota_gateway.apilicense import keyspace, missfill
from quota_gateway.apilicense.service import mask
from quota_gateway.autopipeline import AutoPipeline, ClusterAutoPipeline
from quota_gateway.formats.digests import sha256
from tcp_cut import postgres_behind_forwarder

VALIDATE = "/api/apilicense/validate"


async def _bulk_keys(settings, tenant, product: int, count: int, **columns) -> list[str]:
    """Keys written straight into Postgres, never seen by Redis (as a bulk load or a lost Redis leaves them)."""
    keys = [fastpath.generate_api_key(secrets.token_bytes(16)) for _ in range(count)]
    names = ["tenant_id", "product_id", "key_digest", "bucket", "key_hint", *columns]
    async with db_connection(settings.database_url) as conn:
        await conn.copy_records_to_table("api_licenses", columns=names, records=[
            (tenant.id, product, sha256(k), fastpath.api_key_bucket(k), mask(k), *columns.values()) for k in keys])
    return keys


async def test_misses_of_one_tick_share_one_fill(app, client, tenant, settings):
    product = await make_product(client, tenant.headers)
    keys = await _bulk_keys(settings, tenant, product, 60)
    misses = app.state.services.quota.misses
    before = misses.batches
    answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers) for k in keys))
    assert [r.status_code for r in answers] == [200] * 60
    assert misses.batches - before <= 10  # one per tick the misses arrived in (a few here), not one per key
    assert all(r.json()["quota"]["used"] == 1 for r in answers)


async def test_a_batch_of_misses_makes_one_query_and_one_script_call(tenant, settings, clock):
    """On a single Redis, the misses of a batch, whatever their buckets, are filled and validated by
    one script call: a first touch costs its miss call and a share of that one call (no second
    validate call per key, no fill call per bucket)."""
    async with running_app(dataclasses.replace(settings, flush_interval=3600.0), clock) as (app, client):
        product = await make_product(client, tenant.headers)
        keys = await _bulk_keys(settings, tenant, product, 40)
        assert len({fastpath.api_key_bucket(k) for k in keys}) > 30  # the batch spans many buckets
        misses = app.state.services.quota.misses
        before = misses.batches
        r_sync = redis_sync.Redis.from_url(settings.redis_url)
        r_sync.config_resetstat()
        answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers)
                                         for k in keys))
        assert [r.status_code for r in answers] == [200] * 40
        batches = misses.batches - before
        assert 1 <= batches <= 10  # one per tick the misses arrived in (a few here), not one per key
        calls = r_sync.info("commandstats")["cmdstat_evalsha"]["calls"]
        assert calls == 40 + batches  # 40 misses, then one fill call per batch
        answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers)
                                         for k in keys))
        assert all(r.json()["quota"]["used"] == 2 for r in answers)


class _HeldFills:
    """The real runner, with each fill call held until released: a batch caught filling Redis."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.spans_buckets = inner.spans_buckets
        self.fills = 0
        self.filling = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, script, keys, args):
        return await self.inner.run(script, keys, args)

    async def run_many(self, script, calls):
        if script is keyspace.FILL_BATCH:
            self.fills += 1
            self.filling.set()
            await self.release.wait()
        return await self.inner.run_many(script, calls)


async def test_the_next_batch_reads_postgres_while_one_fills_redis(app, client, tenant, settings):
    product = await make_product(client, tenant.headers)
    first, second = await _bulk_keys(settings, tenant, product, 10), await _bulk_keys(settings, tenant, product, 10)
    misses = app.state.services.quota.misses
    held = misses._runner = _HeldFills(misses._runner)
    try:
        early = [asyncio.create_task(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers))
                 for k in first]
        await asyncio.wait_for(held.filling.wait(), 10)
        before = misses.batches
        late = [asyncio.create_task(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers))
                for k in second]
        for _ in range(500):  # the second batch reads and reaches its fill while the first is held
            if held.fills >= 2 or all(t.done() for t in early):
                break
            await asyncio.sleep(0.01)
        assert misses.batches > before and held.fills >= 2
        assert not any(t.done() for t in early)
        held.release.set()
        answers = await asyncio.gather(*early, *late)
    finally:
        misses._runner = held.inner
    assert [r.status_code for r in answers] == [200] * 20
    assert all(r.json()["quota"]["used"] == 1 for r in answers)


async def test_a_long_cold_wave_gives_every_connection_back(tenant, settings, clock):
    """Batches read two at a time and hand their connection to the batch forming behind them: when
    the wave is over, none is kept or lost."""
    async with running_app(dataclasses.replace(settings, flush_interval=3600.0), clock) as (app, client):
        product = await make_product(client, tenant.headers)
        keys = await _bulk_keys(settings, tenant, product, 400)
        misses, pool = app.state.services.quota.misses, app.state.services.pool
        before = misses.batches

        async def walk(share: list[str]) -> list[int]:
            return [(await client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers)).status_code
                    for k in share]

        statuses = await asyncio.gather(*(walk(keys[c::40]) for c in range(40)))
        assert [s for share in statuses for s in share] == [200] * 400
        assert misses.batches - before > 10  # many batches, some reading side by side
        assert misses._held is None and not misses._reading and not misses._batches
        assert pool.get_idle_size() == pool.get_size()


async def test_a_failed_read_does_not_stall_later_misses(settings, tenant, clock):
    async with postgres_behind_forwarder(settings) as (through, forwarder), running_app(through, clock) as (_, client):
        product = await make_product(client, tenant.headers)
        keys = await _bulk_keys(settings, tenant, product, 6)
        await forwarder.cut()
        down = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers)
                                      for k in keys[:3]))
        assert [r.status_code for r in down] == [503] * 3
        await forwarder.restore()
        up = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers)
                                    for k in keys))
        assert [r.status_code for r in up] == [200] * 6


def test_a_batch_is_one_call_on_a_single_redis_and_one_per_bucket_on_a_cluster(settings):
    keys = [fastpath.generate_api_key(secrets.token_bytes(16)) for _ in range(40)]
    by_bucket: dict[int, list] = {}
    for k in keys:
        by_bucket.setdefault(fastpath.api_key_bucket(k), []).append(k)
    groups = list(by_bucket.values())
    single = missfill.MissBatcher(None, AutoPipeline(settings.redis_url))  # type: ignore[arg-type]
    assert single._calls(groups) == [groups]
    clustered = missfill.MissBatcher(None, ClusterAutoPipeline(settings.redis_url))  # type: ignore[arg-type]
    assert clustered._calls(groups) == [[group] for group in groups]


async def test_a_wave_of_misses_goes_in_batches_of_bounded_size(tenant, settings, clock):
    """A hundred misses at once make batches of at most BATCH_KEYS keys (the longest waiting
    first), READS_AT_ONCE reading PostgreSQL side by side, not one batch of a hundred."""
    async with running_app(dataclasses.replace(settings, flush_interval=3600.0), clock) as (app, client):
        product = await make_product(client, tenant.headers)
        keys = await _bulk_keys(settings, tenant, product, 100)
        misses = app.state.services.quota.misses
        sizes: list[int] = []
        run = misses._run

        async def counted(batch):
            sizes.append(len(batch))
            await run(batch)

        misses._run = counted
        answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers)
                                         for k in keys))
        assert [r.status_code for r in answers] == [200] * 100
        assert sum(sizes) == 100 and max(sizes) <= missfill.BATCH_KEYS and len(sizes) >= 100 // missfill.BATCH_KEYS


async def test_counters_rebuilt_from_postgres_with_unflushed_usage(app, client, tenant, settings):
    product = await make_product(client, tenant.headers)
    [key] = await _bulk_keys(settings, tenant, product, 1, used_total=7, max_api_calls=10)
    r = await client.post(VALIDATE, json={"apiKey": key, "units": 2}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["quota"] == {"limit": 10, "used": 9, "remaining": 1}
    # metadata lost (evicted, or Redis restarted with only the counters kept): refilled, counters untouched
    r_sync = redis_sync.Redis.from_url(settings.redis_url)
    for entry in r_sync.scan_iter("qg:*:k:*"):
        r_sync.hdel(entry, "m")
    r = await client.post(VALIDATE, json={"apiKey": key, "units": 2}, headers=tenant.headers)
    assert r.status_code == 429 and r.json()["errorCode"] == "quota_exhausted"
    r = await client.post(VALIDATE, json={"apiKey": key, "units": 1}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["quota"]["used"] == 10


async def test_unflushed_usage_is_found_in_a_large_pending_hash(tenant, settings, clock):
    """The rebuild sums the license's own pending fields (every day of them) however large the
    bucket's pending hash has grown (a backlog: many scan pages), and nobody else's."""
    async with running_app(dataclasses.replace(settings, flush_interval=3600.0), clock) as (_, client):
        product = await make_product(client, tenant.headers)
        [key] = await _bulk_keys(settings, tenant, product, 1, used_total=7)
        r = await client.post(VALIDATE, json={"apiKey": key, "units": 5}, headers=tenant.headers)
        assert r.status_code == 200 and r.json()["quota"]["used"] == 12
        async with db_connection(settings.database_url) as conn:
            license_id = await conn.fetchval("SELECT id FROM api_licenses WHERE key_digest = $1", sha256(key))
        ref = keyspace.LicenseRef(key)
        r_sync = redis_sync.Redis.from_url(settings.redis_url)
        others = {f"{license_id}{n}:20261207": 1000 for n in range(3000)}  # ids sharing its digits, other licenses
        r_sync.hset(ref.validate_keys[1], mapping={**others, f"{license_id}:20261207": 4})
        assert r_sync.object("encoding", ref.validate_keys[1]) == b"hashtable"
        r_sync.hdel(ref.entry, "c", "m")  # the counters lost, the pending usage kept
        r = await client.post(VALIDATE, json={"apiKey": key, "units": 1}, headers=tenant.headers)
        assert r.status_code == 200 and r.json()["quota"]["used"] == 7 + 5 + 4 + 1
        r_sync.hdel(ref.validate_keys[1], *others)


async def test_unknown_and_other_tenants_keys_in_one_batch(client, tenant, other_tenant, settings):
    product = await make_product(client, tenant.headers)
    mine = await _bulk_keys(settings, tenant, product, 5)
    unknown = [fastpath.generate_api_key(secrets.token_bytes(16)) for _ in range(5)]
    answers = await asyncio.gather(
        *(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers) for k in mine + unknown),
        *(client.post(VALIDATE, json={"apiKey": k}, headers=other_tenant.headers) for k in mine))
    assert [r.status_code for r in answers] == [200] * 5 + [404] * 10


async def test_metadata_is_kept_until_invalidated(app, client, tenant, settings):
    product = await make_product(client, tenant.headers)
    [key] = await _bulk_keys(settings, tenant, product, 1)
    unknown = fastpath.generate_api_key(secrets.token_bytes(16))
    for k in (key, unknown):
        await client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers)
    r_sync = redis_sync.Redis.from_url(settings.redis_url)
    ttls = {r_sync.ttl(m) for m in r_sync.scan_iter("qg:*:k:*")}
    assert -1 in ttls  # the found key: no expiry, so no wave of refills
    assert any(0 < t <= keyspace.NEGATIVE_TTL for t in ttls)  # the unknown one: briefly
    # a product rename reaches the cached metadata at once (the product is what validations are counted by)
    r = await client.post("/api/product", json={"id": product, "name": "Renamed API"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert (await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)).status_code == 200
    assert ("Renamed API", "allowed", "ok") in app.state.services.quota.validation_counts()


async def test_a_warm_key_owns_one_hash_and_shares_its_products_metadata_per_bucket(app, client, tenant, settings):
    product = await make_product(client, tenant.headers, features=("api:rate:minute:100", "api:tier:gold"))
    keys = await _bulk_keys(settings, tenant, product, 40)
    answers = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers) for k in keys))
    assert [r.status_code for r in answers] == [200] * 40
    r_sync = redis_sync.Redis.from_url(settings.redis_url)
    entries = set(r_sync.scan_iter("qg:*:k:*"))
    assert entries == {keyspace.LicenseRef(k).entry.encode() for k in keys}
    assert all(set(r_sync.hkeys(e)) == {b"m", b"c"} for e in entries)  # no generation until a change
    buckets = {fastpath.api_key_bucket(k) for k in keys}
    filled = {name for name in r_sync.scan_iter("qg:*:p:*") if r_sync.hexists(name, "m")}
    assert filled == {keyspace.product_key(b, product).encode() for b in buckets}  # (the others: markers of
    # the features' additions, which expire)
    per_key = {name.split(b":")[2] for name in r_sync.scan_iter("qg:*") if b"}:k:" not in name}
    # nothing else per key (no backup copy, no counters key): the rest is the buckets' write-behind
    assert per_key <= {b"p", b"pending", b"flushing", b"fstate", b"applied"}


async def test_a_fill_that_read_a_product_before_it_changed_is_refused(app, client, tenant, settings):
    product = await make_product(client, tenant.headers, features=("api:rate:minute:100",))
    [key] = await _bulk_keys(settings, tenant, product, 1)
    assert (await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)).status_code == 200
    ref = keyspace.LicenseRef(key)
    async with app.state.services.pool.acquire() as conn:  # a fill's read, before the change ...
        rows = await conn.fetch(missfill._ROWS, [ref.digest])
    r = await client.post(f"/api/product/{product}/features", json={"name": "api:rate:minute:1"},
                          headers=tenant.headers)
    assert r.status_code in (200, 201), r.text
    r_sync = redis_sync.Redis.from_url(settings.redis_url)
    product_hash = keyspace.product_key(ref.bucket, product)
    assert r_sync.hget(product_hash, "m") is None  # dropped by the change, in every bucket
    assert len(list(r_sync.scan_iter("qg:*:p:*"))) == fastpath.BUCKETS
    r_sync.hdel(ref.entry, "m")
    # ... lands after it: its product metadata is older than the change's version, so refused
    runner = app.state.services.runner
    await runner.run(keyspace.FILL_BATCH, *keyspace.fill_batch_call([[(ref, "0", rows[0], [])]], {}))
    assert r_sync.hget(product_hash, "m") is None
    r = await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)  # refilled: the new rule holds
    assert r.status_code == 429 and r.json()["errorCode"] == "rate_limit_minute"
    assert r_sync.ttl(product_hash) == -1


async def test_metadata_packed_by_the_gateway_is_what_the_script_would_pack(settings):
    """The fill sends each key's and product's metadata packed (one argument, not one per field):
    byte for byte what Redis's cmsgpack.pack makes of the same values, the smallest encoding of
    each (so a warm key's bytes stay as they were)."""
    r_sync = redis_sync.Redis.from_url(settings.redis_url)
    samples = [["6", "1", "123", "7", "0", 0, -1, 0, ""],
               ["6", "1", "99999", "12", "1", 1893456000, 10**12, 2**40, "2030-01-01T00:00:00Z"],
               ["6", "0"],
               ["6", "tenant-" + "x" * 40, "é" * 200, '["api:rate:minute:100"]' * 4000, 100, 0, 70000, 2**31, 0, 0,
                -33, -129]]
    for values in samples:
        ints = [i + 1 for i, v in enumerate(values) if isinstance(v, int)]
        lua = ("local v = {} for i = 1, #ARGV do v[i] = ARGV[i] end "
               "for _, i in ipairs(cjson.decode(KEYS[1])) do v[i] = tonumber(v[i]) end "
               "return cmsgpack.pack(unpack(v))")
        expected = r_sync.eval(lua, 1, str(ints) if ints else "{}", *values)
        assert keyspace.packed_values(values) == expected
    for value in (0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53, -1, -32, -33, -128, -129,
                  -32768, -32769, -2**31, -2**31 - 1, -2**53):
        assert keyspace.packed_values([value]) == r_sync.eval("return cmsgpack.pack(tonumber(ARGV[1]))", 0, value)


def test_a_keys_metadata_packed_by_the_written_out_packer_is_the_generic_packing():
    from datetime import UTC, datetime

    base = {"id": 123, "product_id": 7, "revoked_at": None, "expires_at": None, "max_api_calls": None,
            "used_offset": 0}
    rows = [base, {**base, "id": 10**12, "product_id": 2**31, "revoked_at": datetime.now(UTC),
                   "expires_at": datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC), "max_api_calls": 10**12,
                   "used_offset": 2**40},
            {**base, "max_api_calls": 0, "used_offset": 127}, {**base, "max_api_calls": 5, "used_offset": 128}]
    for row in rows:
        assert keyspace.packed_key(row) == keyspace.packed_values(keyspace.key_fields(row))
