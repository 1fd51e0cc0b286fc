"""Products and their features: the one catalogue shared by API-key and activation licensing.

Other domains plug in without this module knowing them:
- FEATURE_CHECKS: functions name -> error message or None; a feature whose name some domain
  reserves (e.g. `api:rate:minute:100`) is refused at creation when malformed.
- ON_FEATURES_CHANGED: async (services, tenant_id, product_id) called after features change,
  so cached rule sets can be dropped everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from ..errors import ApiError

if TYPE_CHECKING:
    from ..services import Services

FEATURE_CHECKS: list = []
ON_FEATURES_CHANGED: list = []

_PRODUCT_COLUMNS = "id, name, description, trial_days, minimum_required_version, deactivation_cooldown_hours, created_at"

# The next code after the largest; once the largest is 2**31 - 1 (the column's end), the lowest free one.
_NEXT_CODE = """SELECT CASE WHEN max(code) IS NULL THEN 1 WHEN max(code) < 2147483647 THEN max(code) + 1
                            WHEN NOT EXISTS (SELECT 1 FROM features WHERE product_id = $2 AND code = 1) THEN 1
                            ELSE (SELECT min(f.code) + 1 FROM features f WHERE f.product_id = $2 AND f.code > 0
                                  AND f.code < 2147483647 AND NOT EXISTS (SELECT 1 FROM features g
                                  WHERE g.product_id = $2 AND g.code = f.code + 1)) END
                FROM features WHERE product_id = $2"""


def product_json(row) -> dict:
    return {"id": row["id"], "name": row["name"], "description": row["description"], "trialDays": row["trial_days"],
            "minimumRequiredVersion": row["minimum_required_version"],
            "deactivationCooldownHours": row["deactivation_cooldown_hours"], "createdAt": row["created_at"]}


def feature_json(row) -> dict:
    return {"id": row["id"], "productId": row["product_id"], "code": row["code"], "name": row["name"],
            "description": row["description"]}


async def get_product(conn: asyncpg.Connection, tenant_id: str, product_id: int) -> dict:
    row = await conn.fetchrow(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE tenant_id = $1 AND id = $2",
                              tenant_id, product_id)
    if row is None:
        raise ApiError(404, "product_not_found", f"no product {product_id}")
    return product_json(row)


async def list_products(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    rows = await conn.fetch(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE tenant_id = $1 ORDER BY id", tenant_id)
    return [product_json(r) for r in rows]


async def find_product_by_name(conn: asyncpg.Connection, tenant_id: str, name: str) -> dict | None:
    row = await conn.fetchrow(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE tenant_id = $1 AND lower(name) = lower($2)",
                              tenant_id, name)
    return product_json(row) if row else None


async def product_features(conn: asyncpg.Connection, tenant_id: str, product_id: int) -> list[dict]:
    rows = await conn.fetch("SELECT id, product_id, code, name, description FROM features "
                            "WHERE tenant_id = $1 AND product_id = $2 ORDER BY code", tenant_id, product_id)
    return [feature_json(r) for r in rows]


def check_feature_name(name: str) -> None:
    for check in FEATURE_CHECKS:
        problem = check(name)
        if problem:
            raise ApiError(400, "invalid_feature", f"feature '{name}': {problem}", field="name")


def _product_values(values: dict) -> tuple:
    return (values["name"], values.get("description", ""), values.get("trialDays", 0),
            values.get("minimumRequiredVersion"), values.get("deactivationCooldownHours", 0))


async def create_product(conn: asyncpg.Connection, tenant_id: str, values: dict) -> dict:
    """A new product from {name, description?, trialDays?, minimumRequiredVersion?, deactivationCooldownHours?}."""
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO products (tenant_id, name, description, trial_days, minimum_required_version,
                                      deactivation_cooldown_hours)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_PRODUCT_COLUMNS}""", tenant_id, *_product_values(values))
    except asyncpg.UniqueViolationError:
        raise ApiError(409, "product_exists", f"a product named '{values['name']}' already exists") from None
    return product_json(row)


async def update_product(conn: asyncpg.Connection, tenant_id: str, product_id: int, values: dict) -> dict:
    try:
        row = await conn.fetchrow(
            f"""UPDATE products SET name = $3, description = $4, trial_days = $5, minimum_required_version = $6,
                                    deactivation_cooldown_hours = $7
                WHERE tenant_id = $1 AND id = $2 RETURNING {_PRODUCT_COLUMNS}""",
            tenant_id, product_id, *_product_values(values))
    except asyncpg.UniqueViolationError:
        raise ApiError(409, "product_exists", f"a product named '{values['name']}' already exists") from None
    if row is None:
        raise ApiError(404, "product_not_found", f"no product {product_id}")
    return product_json(row)


async def create_feature(conn: asyncpg.Connection, tenant_id: str, product_id: int, name: str, description: str = "",
                         code: int | None = None) -> dict:
    """Add a feature (the caller then runs `features_changed`, outside any transaction)."""
    check_feature_name(name)
    await get_product(conn, tenant_id, product_id)
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO features (tenant_id, product_id, code, name, description)
               VALUES ($1, $2, COALESCE($3, ({_NEXT_CODE})), $4, $5)
               RETURNING id, product_id, code, name, description""",
            tenant_id, product_id, code, name, description)
    except asyncpg.UniqueViolationError:
        raise ApiError(409, "feature_exists", "a feature with that code or name already exists on this product") from None
    except asyncpg.NotNullViolationError:  # every one of the 2**31 - 1 codes is taken
        raise ApiError(409, "feature_codes_exhausted", "this product has no free feature code left") from None
    return feature_json(row)


async def remove_feature(conn: asyncpg.Connection, tenant_id: str, product_id: int, feature_id: int) -> None:
    status = await conn.execute("DELETE FROM features WHERE tenant_id = $1 AND product_id = $2 AND id = $3",
                                tenant_id, product_id, feature_id)
    if not status.endswith(" 1"):
        raise ApiError(404, "feature_not_found", f"no feature {feature_id} on product {product_id}")


async def features_changed(services: Services, tenant_id: str, product_id: int) -> None:
    """Tell every domain that cached the product's features (ON_FEATURES_CHANGED hooks)."""
    for hook in ON_FEATURES_CHANGED:
        await hook(services, tenant_id, product_id)
