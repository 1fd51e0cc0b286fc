"""/openapi.json documents every answer (issue 18): each success body has a schema, each operation
that needs Redis or PostgreSQL documents 503 with Retry-After, each one that can be limited
documents 429. Checked on the document itself, and against real answers with the stores cut and
with the limits reached (every answer here also passes the suite-wide check of doc_conformance.py:
a documented status, a body matching its schema)."""

from __future__ import annotations

from collections import Counter

from conftest import make_api_key, make_product, running_app
from doc_conformance import DocumentCheck
from quota_gateway.abuse.clientlimit import UNAUTHENTICATED_PREFIXES
from tcp_cut import postgres_behind_forwarder, redis_behind_forwarder
from test_fuzz_openapi import _valid_example


def _operations(document: dict):
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            yield method.upper(), path, op


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


async def test_every_operation_documents_its_success_body_and_store_failures(client):
    document = (await client.get("/openapi.json")).json()
    operations = list(_operations(document))
    assert len(operations) > 90
    for method, path, op in operations:
        where = f"{method} {path}"
        successes = {code: answer for code, answer in op["responses"].items() if code.startswith("2")}
        assert successes, where
        for code, answer in successes.items():
            content = answer.get("content")
            assert content and all("schema" in media for media in content.values()), f"{where} {code}: no body schema"
        # a token is looked up in PostgreSQL; the open routes count addresses in Redis
        token = any("ExisOneApi" in scheme for scheme in op.get("security", ()))
        if token or path.startswith(UNAUTHENTICATED_PREFIXES):
            unavailable = op["responses"].get("503")
            assert unavailable is not None, f"{where}: 503 not documented"
            assert "Retry-After" in unavailable.get("headers", {}), f"{where}: 503 without Retry-After"
        if path.startswith(UNAUTHENTICATED_PREFIXES):
            limited = op["responses"].get("429")
            assert limited is not None and "Retry-After" in limited.get("headers", {}), f"{where}: 429"
    components = document["components"]["schemas"]
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref


async def test_validate_denials_are_documented_as_answered(client, tenant):
    """A refused validation is {isValid: false, errorCode, ...}, not {error, message}."""
    document = (await client.get("/openapi.json")).json()
    denial = {"$ref": "#/components/schemas/ApiKeyDenial"}
    for path, method in (("/api/apilicense/validate", "post"), ("/api/apilicense/validate/{api_key}", "get")):
        responses = document["paths"][path][method]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ApiKeyValid"}
        assert responses["404"]["content"]["application/json"]["schema"] == denial
        for status in ("403", "429"):  # or the token's own refusal (no 'verify'; too many failed lookups)
            assert denial in responses[status]["content"]["application/json"]["schema"]["anyOf"]
    shape = document["components"]["schemas"]["ApiKeyDenial"]
    assert shape["required"] == ["isValid", "errorCode", "errorMessage"]
    assert shape["properties"]["isValid"] == {"const": False}

    check = DocumentCheck(document)
    product = await make_product(client, tenant.headers, features=("api:rate:minute:1",))
    key = await make_api_key(client, tenant.headers, product)
    answers = [await client.post("/api/apilicense/validate", json={"apiKey": key}, headers=tenant.headers)
               for _ in range(2)]
    answers.append(await client.post("/api/apilicense/validate", json={"apiKey": "qg_" + "A" * 30},
                                     headers=tenant.headers))
    await client.delete(f"/api/apilicense/{key}", headers=tenant.headers)
    answers.append(await client.get(f"/api/apilicense/validate/{key}", headers=tenant.headers))
    assert [r.status_code for r in answers] == [200, 429, 404, 403]
    for r in answers:
        path = r.request.url.path
        assert check.problem(r.request.method, path, r.status_code, r.headers["content-type"], r.content) is None
        assert r.json()["isValid"] is (r.status_code == 200)
    # and a body of the wrong shape is caught
    assert check.problem("POST", "/api/apilicense/validate", 404, "application/json",
                         b'{"error": "not_found", "message": "no such API key"}') is not None


async def test_a_product_and_its_features_answer_as_documented(client, tenant):
    """The catalogue's reads and the feature removal, which the other tests reach only through the
    web UI (their bodies are held against the document by doc_conformance)."""
    product = await make_product(client, tenant.headers, features=("reports",))
    shown = (await client.get(f"/api/product/{product}", headers=tenant.headers)).json()
    assert [f["name"] for f in shown["features"]] == ["reports"]
    r = await client.get(f"/api/product/{product}/features", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["items"] == shown["features"]
    feature = shown["features"][0]["id"]
    r = await client.delete(f"/api/product/{product}/features/{feature}", headers=tenant.headers)
    assert r.status_code == 200 and r.json() == {"deleted": True, "id": feature}


def _request(method: str, path: str, op: dict) -> dict:
    """A plausible request for the operation: path values, required query values, a body of the
    right shape (values that pass validation where the schema says how)."""
    concrete = path
    for name in [p["name"] for p in op.get("parameters", ()) if p["in"] == "path"]:
        concrete = concrete.replace("{" + name + "}", "1")
    params = {p["name"]: str(_valid_example(p["schema"])) for p in op.get("parameters", ())
              if p["in"] == "query" and p["required"]}
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    kwargs: dict = {"params": params}
    if body is not None:
        kwargs["json"] = _valid_example(body)
    elif method == "POST":
        kwargs["content"] = b"{}"
    return {"method": method, "url": concrete, **kwargs}


async def test_with_the_stores_down_every_operation_answers_as_documented(settings, tenant, clock):
    """Redis and PostgreSQL cut under a running gateway (the token verified before): every
    operation answers a documented status, a 503 with Retry-After rather than a 500."""
    opened = settings.with_(client_requests_per_minute=600, client_failures_per_minute=30)
    statuses: Counter = Counter()
    async with postgres_behind_forwarder(opened) as (through_pg, postgres), \
            redis_behind_forwarder(through_pg) as (through, redis), running_app(through, clock) as (_, client):
        document = (await client.get("/openapi.json")).json()
        assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 200
        await postgres.cut()
        await redis.cut()
        try:
            for method, path, op in _operations(document):
                r = await client.request(**_request(method, path, op), headers=tenant.headers)
                statuses[r.status_code] += 1
                assert r.status_code != 500, f"{method} {path}: {r.text[:300]}"
                if r.status_code == 503 and path != "/readyz":
                    assert r.headers["retry-after"] and r.json()["error"] == "unavailable", (method, path)
        finally:
            await postgres.restore()
            await redis.restore()
    assert statuses[503] > 70, statuses  # the others answer before needing a store (400 for the sample values, 200 /healthz)


async def test_limited_answers_are_documented(settings, tenant, clock):
    """Past the per-address limits (the open routes) and the per-token failure limit, every
    operation's answer is one its document lists."""
    limited = settings.with_(client_requests_per_minute=1, client_failures_per_minute=1, token_failures_per_minute=1)
    async with running_app(limited, clock) as (_, client):
        document = (await client.get("/openapi.json")).json()
        r = await client.post("/api/apilicense/validate", json={"apiKey": "qg_" + "A" * 30}, headers=tenant.headers)
        assert r.status_code == 404  # the token's one failed lookup this minute
        statuses: Counter = Counter()
        for _ in range(2):
            for method, path, op in _operations(document):
                r = await client.request(**_request(method, path, op), headers=tenant.headers)
                statuses[r.status_code] += 1
                if r.status_code == 429:
                    assert r.headers.get("retry-after"), (method, path)
    open_operations = [path for _, path, _ in _operations(document) if path.startswith(UNAUTHENTICATED_PREFIXES)]
    assert statuses[429] >= len(open_operations), statuses  # at least every open one, the second time round
