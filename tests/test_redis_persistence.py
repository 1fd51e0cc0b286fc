"""The embedded Redis that `make run` starts keeps its data across a restart (issue 12, item 6);
the tests' own Redis runs without an append-only file, for speed."""

from __future__ import annotations

import redis as redis_sync

from quota_gateway.embedded import RedisServer


def test_the_dev_stacks_redis_survives_a_restart(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        client = redis_sync.Redis.from_url(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.set("qg:{b1}:c:1", b"\x05")
        client.hset("qg:{b1}:pending", "1:20260101", 5)
        client.close()
        server.stop()  # Ctrl-C of `make run`
        server.start()
        client = redis_sync.Redis.from_url(server.url)
        assert client.get("qg:{b1}:c:1") == b"\x05" and client.hgetall("qg:{b1}:pending") == {b"1:20260101": b"5"}
        client.close()
    finally:
        server.stop()


def test_the_test_redis_runs_without_an_append_only_file(redis_server):
    assert redis_sync.Redis.from_url(redis_server.url).config_get("appendonly") == {"appendonly": "no"}
