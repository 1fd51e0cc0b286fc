"""Log lines are JSON objects whose fields are fields (never JSON inside `msg`), and the access log
never writes a raw path (it may carry a key) or a credential."""

from __future__ import annotations

import io
import logging

import orjson

from conftest import make_api_key, make_product
from quota_gateway.logs import JsonFormatter


async def test_the_access_log_writes_route_status_and_time_as_fields(client, tenant):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("quota_gateway.access")
    level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        assert (await client.get(f"/api/apilicense/{key}/usage", headers=tenant.headers)).status_code == 200
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    lines = [orjson.loads(line) for line in written.getvalue().splitlines()]
    line = next(entry for entry in lines if entry.get("route") == "/api/apilicense/{api_key}/usage")
    assert (line["logger"], line["level"], line["method"], line["status"]) == ("quota_gateway.access", "info", "GET",
                                                                               200)
    assert line["msg"] == "GET /api/apilicense/{api_key}/usage 200"
    assert isinstance(line["ms"], float) and line["ms"] >= 0 and "client" in line
    assert key not in written.getvalue() and tenant.token not in written.getvalue()


def test_a_throttled_warning_writes_one_line_per_interval_and_counts_the_rest(caplog):
    import logging

    from quota_gateway import logs

    now = [100.0]
    throttled = logs.ThrottledWarning(logging.getLogger("qg.test.throttle"), every=5.0, monotonic=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="qg.test.throttle"):
        for _ in range(1000):  # a failover's worth of 503s within one interval
            throttled.warning("validate failed: %s", "ClusterUnavailable")
        now[0] += 5.0
        throttled.warning("validate failed: %s", "ClusterUnavailable")
    assert [r.getMessage() for r in caplog.records] == [
        "validate failed: ClusterUnavailable",
        "validate failed: ClusterUnavailable (and 999 more in the last 5 s)"]
