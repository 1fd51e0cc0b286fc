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
