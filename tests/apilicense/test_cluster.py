"""The key layout on a real three-master Redis Cluster started from the same redis-server binary."""

from __future__ import annotations

import asyncio

import pytest
import redis.cluster

from conftest import TEST_MASTER_KEY, db_connection, make_api_key, make_product, running_app
from quota_gateway.config import Settings
from quota_gateway.embedded import RedisCluster

pytestmark = pytest.mark.slow
VALIDATE = "/api/apilicense/validate"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = RedisCluster(tmp_path_factory.mktemp("cluster"), masters=3).start()
    yield nodes
    nodes.stop()


async def test_quota_engine_on_a_three_master_cluster(cluster, migrated_db, clean_state, tenant, clock):
    settings = Settings(redis_url=cluster.urls[0], redis_cluster=True, database_url=migrated_db,
                        master_key=TEST_MASTER_KEY, flush_interval=0.05)
    async with running_app(settings, clock) as (app, client):
        product = await make_product(client, tenant.headers, features=("api:rate:minute:1000",))
        keys = [await make_api_key(client, tenant.headers, product, maxApiCalls=30) for _ in range(12)]
        # exact under concurrency, on every key, across the cluster's shards
        results = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": k}, headers=tenant.headers)
                                         for k in keys for _ in range(40)))
        assert [r.status_code for r in results].count(200) == 30 * len(keys)
        assert {r.json()["errorCode"] for r in results if r.status_code != 200} == {"quota_exhausted"}
        # the keys really are spread over more than one master
        sync = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        owners = {sync.get_node_from_key(name).port for name in sync.scan_iter(match="qg:*:k:*")}
        sync.close()
        assert len(owners) >= 2
        # reset, revoke and write-behind work there too
        r = await client.post(f"/api/apilicense/{keys[0]}/reset", params={"periodType": "lifetime"},
                              headers=tenant.headers)
        assert r.status_code == 200
        assert (await client.post(VALIDATE, json={"apiKey": keys[0]}, headers=tenant.headers)).status_code == 200
        await client.delete(f"/api/apilicense/{keys[1]}", headers=tenant.headers)
        r = await client.post(VALIDATE, json={"apiKey": keys[1]}, headers=tenant.headers)
        assert r.json()["errorCode"] == "revoked"
        await app.state.services.usage_flusher.flush(range(1024))
    async with db_connection(migrated_db) as conn:
        total = await conn.fetchval("SELECT sum(used_total) FROM api_licenses")
    assert total == 30 * len(keys) + 1
