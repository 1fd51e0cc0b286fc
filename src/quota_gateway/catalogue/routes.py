"""`/api/product*`: products and their features."""

from __future__ import annotations

from ..answers import BOOLEAN, INTEGER, STRING, TIMESTAMP, answer, array, component, items, nullable
from ..jsonio import JSONResponse
from ..routing import Call, endpoint
from ..schema import Int, Str, obj
from . import service

_VERSION = r"\d+(\.\d+){0,3}"

_PRODUCT = obj(
    id=Int(minimum=1, description="omit to create; set to update"),
    name=Str(required=True, min_len=1, max_len=100),
    description=Str(max_len=1000, default=""),
    trialDays=Int(minimum=0, maximum=3650, default=0),
    minimumRequiredVersion=Str(max_len=32, pattern=_VERSION, nullable=True),
    deactivationCooldownHours=Int(minimum=0, maximum=24 * 365, default=0),
)
_FEATURE = obj(
    code=Int(minimum=0, maximum=2**31 - 1, description="omit to take the next free code"),
    name=Str(required=True, min_len=1, max_len=100),
    description=Str(max_len=1000, default=""),
)

_PRODUCT_FIELDS = dict(id=INTEGER, name=STRING, description=STRING, trialDays=INTEGER,
                       minimumRequiredVersion=nullable(STRING), deactivationCooldownHours=INTEGER, createdAt=TIMESTAMP)
PRODUCT = component("Product", answer(**_PRODUCT_FIELDS))
FEATURE = component("Feature", answer(id=INTEGER, productId=INTEGER, code=INTEGER, name=STRING, description=STRING))
_PRODUCT_WITH_FEATURES = answer(**_PRODUCT_FIELDS, features=array(FEATURE))


async def list_products(call: Call) -> dict:
    """List the tenant's products."""
    async with call.services.pool.acquire() as conn:
        return {"items": await service.list_products(conn, call.tenant_id)}


async def save_product(call: Call) -> JSONResponse:
    """Create a product (no id) or update one (id set)."""
    b = call.body
    async with call.services.pool.acquire() as conn:
        if b["id"] is None:
            return JSONResponse(await service.create_product(conn, call.tenant_id, b), status_code=201)
        updated = await service.update_product(conn, call.tenant_id, b["id"], b)
    await service.features_changed(call.services, call.tenant_id, b["id"])  # caches of the product's keys hold its name too
    return JSONResponse(updated)


async def show_product(call: Call) -> dict:
    """One product with its features."""
    product_id = call.int_path("product_id")
    async with call.services.pool.acquire() as conn:
        product = await service.get_product(conn, call.tenant_id, product_id)
        product["features"] = await service.product_features(conn, call.tenant_id, product_id)
    return product


async def list_features(call: Call) -> dict:
    """List a product's features."""
    product_id = call.int_path("product_id")
    async with call.services.pool.acquire() as conn:
        await service.get_product(conn, call.tenant_id, product_id)
        return {"items": await service.product_features(conn, call.tenant_id, product_id)}


async def add_feature(call: Call) -> JSONResponse:
    """Add a feature to a product (names reserved by a domain are checked, e.g. api:rate:minute:N)."""
    product_id = call.int_path("product_id")
    b = call.body
    async with call.services.pool.acquire() as conn:
        feature = await service.create_feature(conn, call.tenant_id, product_id, b["name"], b["description"], b["code"])
    await service.features_changed(call.services, call.tenant_id, product_id)
    return JSONResponse(feature, status_code=201)


async def delete_feature(call: Call) -> dict:
    """Remove a feature from a product."""
    product_id = call.int_path("product_id")
    feature_id = call.int_path("feature_id")
    async with call.services.pool.acquire() as conn:
        await service.remove_feature(conn, call.tenant_id, product_id, feature_id)
    await service.features_changed(call.services, call.tenant_id, product_id)
    return {"deleted": True, "id": feature_id}


routes = [
    endpoint("GET", "/api/product", list_products, scope="manage", tag="catalogue", returns=items(PRODUCT)),
    endpoint("POST", "/api/product", save_product, scope="manage", body=_PRODUCT, tag="catalogue",
             errors=("product_not_found", "product_exists"),
             responses={200: "updated", 201: "created", 404: "no product with that id to update"}, returns=PRODUCT),
    endpoint("GET", "/api/product/{product_id}", show_product, scope="manage", tag="catalogue",
             errors=("product_not_found",), responses={200: "the product", 404: "no such product"},
             returns=_PRODUCT_WITH_FEATURES),
    endpoint("GET", "/api/product/{product_id}/features", list_features, scope="manage", tag="catalogue",
             errors=("product_not_found",), responses={200: "the features", 404: "no such product"},
             returns=items(FEATURE)),
    endpoint("POST", "/api/product/{product_id}/features", add_feature, scope="manage", body=_FEATURE, tag="catalogue",
             errors=("product_not_found", "feature_exists", "feature_codes_exhausted", "invalid_feature"),
             responses={201: "created", 404: "no such product", 409: "duplicate code or name"}, returns=FEATURE),
    endpoint("DELETE", "/api/product/{product_id}/features/{feature_id}", delete_feature, scope="manage",
             tag="catalogue", errors=("feature_not_found",), responses={200: "deleted", 404: "no such feature"},
             returns=answer(deleted=BOOLEAN, id=INTEGER)),
]
