"""Activation-key licensing: keys, hardware-bound activations, seats, trials, offline codes.

Validation statuses (POST /api/license/validate, always 200 so the SDKs can read them):
  licensed          the key is valid and activated on this hardware
  not_activated     the key is valid but holds no activation for this hardware
  expired           the key (or the offline code) has expired
  revoked           the key was revoked
  invalid           unknown or malformed key, wrong product, tampered offline code
  version_outdated  the client version is below the product's minimum
  trial             no key: the device's trial is running
  trial_expired     no key: the device's trial has ended (or the product offers none)
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from .. import catalogue, crypto, events, offline
from ..abuse import negative
from ..clock import iso_utc
from ..config import Settings
from ..errors import ApiError
from ..formats import times
from ..formats.digests import sha256
from ..listing import Where, fetch_page
from . import keys

_LICENSE_COLUMNS = """l.id, l.tenant_id, l.product_id, l.plan_id, l.key_hint, l.kind, l.max_seats, l.email, l.features,
                      l.expires_at, l.revoked_at, l.last_deactivated_at, l.created_at, p.name AS product_name,
                      p.trial_days, p.minimum_required_version, p.deactivation_cooldown_hours"""
_LICENSE_FROM = "licenses l JOIN products p ON p.id = l.product_id"
_VERSION = re.compile(r"\d+(\.\d+)*")


def version_below(version: str | None, minimum: str | None) -> bool:
    """Numeric, dot-separated comparison (1.10 > 1.9); an unparsable client version is outdated."""
    if not version or not minimum:
        return False
    if not _VERSION.fullmatch(version.strip()):
        return True
    parse = lambda v: [int(p) for p in v.strip().split(".")]  # noqa: E731
    a, b = parse(version), parse(minimum)
    width = max(len(a), len(b))
    return a + [0] * (width - len(a)) < b + [0] * (width - len(b))


def _hardware(raw: str) -> str:
    return raw.strip().upper()


async def find_license(conn: asyncpg.Connection, tenant_id: str, raw_key: str | None) -> Any:
    """The tenant's license row for a key, or None."""
    key = keys.normalize(raw_key or "")
    if key is None:
        return None
    return await conn.fetchrow(f"SELECT {_LICENSE_COLUMNS} FROM {_LICENSE_FROM} "
                               "WHERE l.key_digest = $1 AND l.tenant_id = $2", keys.digest(key), tenant_id)


async def get_license(conn: asyncpg.Connection, tenant_id: str, raw_key: str | None, **extra: Any) -> Any:
    """The tenant's license row for a key, or 404 invalid_key (`extra`: more fields of the error body)."""
    lic = await find_license(conn, tenant_id, raw_key)
    if lic is None:
        raise ApiError(404, "invalid_key", "no such activation key", **extra)
    return lic


async def license_features(conn: asyncpg.Connection, lic) -> list[str]:
    if lic["features"] is not None:
        return list(lic["features"])
    return [r["name"] for r in await conn.fetch("SELECT name FROM features WHERE product_id = $1 ORDER BY code",
                                                lic["product_id"])]


def license_json(lic, live_seats: int | None = None) -> dict:
    return {"id": lic["id"], "activationKey": lic["key_hint"], "productId": lic["product_id"],
            "productName": lic["product_name"], "planId": lic["plan_id"], "licenseType": lic["kind"],
            "maxSeats": lic["max_seats"], "email": lic["email"], "features": lic["features"],
            "expirationDate": lic["expires_at"], "revokedAt": lic["revoked_at"], "createdAt": lic["created_at"],
            **({"seatsUsed": live_seats} if live_seats is not None else {})}


async def _history(conn, tenant_id: str, hardware_id: str, action: str, now: datetime, lic=None, **details) -> None:
    await conn.execute("INSERT INTO device_history (tenant_id, hardware_id, license_id, product_id, action, at, details) "
                       "VALUES ($1, $2, $3, $4, $5, $6, $7)", tenant_id, hardware_id, lic["id"] if lic else None,
                       lic["product_id"] if lic else details.pop("product_id", None), action, now, details)


# --- management ----------------------------------------------------------------------------------

async def create_license(conn: asyncpg.Connection, settings: Settings, redis: Any, tenant_id: str, now: datetime, *,
                         product_id: int, email: str,
                         kind: str = "standard", max_seats: int | None = None, plan_id: int | None = None,
                         validity_days: int | None = None, features: list[str] | None = None) -> tuple[str, dict]:
    """`redis`: the key's e-mail address becomes a portal customer, so its negative sign-in entry
    is dropped (before the insert: abuse.negative explains why that is exact)."""
    product = await catalogue.get_product(conn, tenant_id, product_id)
    if plan_id is not None:
        plan = await conn.fetchrow("SELECT duration_days, is_active FROM plans WHERE id = $1 AND tenant_id = $2",
                                   plan_id, tenant_id)
        if plan is None or not plan["is_active"]:
            raise ApiError(404, "plan_not_found", f"no active plan {plan_id}")
        if validity_days is None:
            validity_days = plan["duration_days"]
    if features is not None:
        await _check_features(conn, tenant_id, product_id, features)
    seats = 1 if kind == "standard" else max_seats
    expires = now + timedelta(days=validity_days) if validity_days else None
    key = keys.generate()
    if email:
        await negative.forget(redis, negative.sign_in(tenant_id, "portal", email))
    async with conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO licenses (tenant_id, product_id, plan_id, key_digest, key_hint, kind, max_seats, email,
                                     features, expires_at, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
            tenant_id, product_id, plan_id, keys.digest(key), keys.hint(key), kind, seats, email, features, expires, now)
        await events.emit(conn, tenant_id, events.LICENSE_CREATED,
                          {"licenseId": row["id"], "productId": product_id, "kind": kind, "email": email})
        await events.mailer.queue_license_delivery(conn, settings, tenant_id, license_id=row["id"], key=key,
                                                   email=email, product_name=product["name"], expires_at=expires)
    lic = await find_license(conn, tenant_id, key)
    return key, {**license_json(lic), "activationKey": key, "productName": product["name"]}


async def generate(conn: asyncpg.Connection, settings: Settings, redis: Any, tenant_id: str, now: datetime, body: dict) -> str:
    """A standard key for the product named in the body (the ExisOne generate call)."""
    product = await catalogue.find_product_by_name(conn, tenant_id, body["productName"])
    if product is None:
        raise ApiError(404, "product_not_found", f"no product named '{body['productName']}'")
    key, _ = await create_license(conn, settings, redis, tenant_id, now, product_id=product["id"], email=body["email"],
                                  plan_id=body["planId"], validity_days=body["validityDays"])
    return key


async def _check_features(conn, tenant_id: str, product_id: int, names: list[str]) -> None:
    known = {r["name"] for r in await conn.fetch("SELECT name FROM features WHERE tenant_id = $1 AND product_id = $2",
                                                 tenant_id, product_id)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ApiError(400, "unknown_feature", f"not features of this product: {', '.join(unknown)}", features=unknown)


async def set_features(conn, tenant_id: str, raw_key: str, names: list[str]) -> list[str]:
    lic = await get_license(conn, tenant_id, raw_key)
    await _check_features(conn, tenant_id, lic["product_id"], names)
    await conn.execute("UPDATE licenses SET features = $2 WHERE id = $1", lic["id"], names)
    return names


async def find_license_by_id(conn: asyncpg.Connection, tenant_id: str, license_id: int) -> Any:
    """A license row by id (the admin UI only knows masked keys)."""
    return await conn.fetchrow(f"SELECT {_LICENSE_COLUMNS} FROM {_LICENSE_FROM} WHERE l.id = $1 AND l.tenant_id = $2",
                               license_id, tenant_id)


async def revoke(conn, tenant_id: str, raw_key: str, now: datetime) -> dict:
    return await revoke_found(conn, tenant_id, await get_license(conn, tenant_id, raw_key), now)


async def revoke_found(conn: asyncpg.Connection, tenant_id: str, lic: Any, now: datetime) -> dict:
    async with conn.transaction():
        await conn.execute("UPDATE licenses SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1", lic["id"], now)
        await events.emit(conn, tenant_id, events.LICENSE_REVOKED, {"licenseId": lic["id"]})
    return {"revoked": True, "activationKey": lic["key_hint"]}


async def revoke_by_id(conn: asyncpg.Connection, tenant_id: str, license_id: int, now: datetime) -> bool:
    """Revoke a license known by id (other domains hold ids, never keys); False if already revoked."""
    async with conn.transaction():
        changed = await conn.fetchval("UPDATE licenses SET revoked_at = $3 WHERE id = $1 AND tenant_id = $2 "
                                      "AND revoked_at IS NULL RETURNING id", license_id, tenant_id, now)
        if changed is not None:
            await events.emit(conn, tenant_id, events.LICENSE_REVOKED, {"licenseId": license_id})
    return changed is not None


async def expire_by_id(conn: asyncpg.Connection, tenant_id: str, license_id: int, now: datetime) -> None:
    """End a license now as expired (not revoked): its expiry moves to `now` unless already earlier."""
    await conn.execute("UPDATE licenses SET expires_at = LEAST(COALESCE(expires_at, $3), $3) "
                       "WHERE id = $1 AND tenant_id = $2", license_id, tenant_id, now)


async def extend_by_id(conn: asyncpg.Connection, tenant_id: str, license_id: int, now: datetime,
                       days: int) -> datetime | None:
    """Push a license's expiry `days` further, counted from its expiry or from now if it has lapsed.
    A perpetual license stays perpetual. Returns the new expiry."""
    return await conn.fetchval(
        "UPDATE licenses SET expires_at = GREATEST(expires_at, $3) + make_interval(days => $4) "
        "WHERE id = $1 AND tenant_id = $2 AND expires_at IS NOT NULL RETURNING expires_at",
        license_id, tenant_id, now, days)


async def cover_until(conn: asyncpg.Connection, tenant_id: str, license_id: int, until: datetime) -> datetime | None:
    """Make a license run at least until `until` (the end of a period paid for); never shortens
    it, and a perpetual license stays perpetual. Returns the new expiry."""
    return await conn.fetchval(
        "UPDATE licenses SET expires_at = GREATEST(expires_at, $3) "
        "WHERE id = $1 AND tenant_id = $2 AND expires_at IS NOT NULL RETURNING expires_at",
        license_id, tenant_id, until)


async def list_licenses(conn: asyncpg.Connection, tenant_id: str, q: dict) -> dict:
    """License keys (masked) with their live seat counts, newest first, filtered by product or kind."""
    where = Where("l.tenant_id", tenant_id)
    where.equals("l.product_id", q["productId"])
    where.equals("l.kind", q["kind"])
    return await fetch_page(
        conn, count_from="SELECT count(*) FROM licenses l",
        select_from=f"""SELECT {_LICENSE_COLUMNS},
                               (SELECT count(*) FROM activations a WHERE a.license_id = l.id AND a.deactivated_at IS NULL) AS seats
                        FROM {_LICENSE_FROM}""",
        where=where, order_by="l.id DESC", page=q["page"], page_size=q["pageSize"],
        item=lambda r: license_json(r, r["seats"]))


async def show_license(conn: asyncpg.Connection, tenant_id: str, raw_key: str) -> dict:
    """One license with its live activations."""
    lic = await get_license(conn, tenant_id, raw_key)
    devices = await conn.fetch("SELECT hardware_id, activated_at, offline FROM activations WHERE license_id = $1 "
                               "AND deactivated_at IS NULL ORDER BY id", lic["id"])
    return {**license_json(lic, len(devices)),
            "activations": [{"hardwareId": d["hardware_id"], "activatedAt": d["activated_at"], "offline": d["offline"]}
                            for d in devices]}


async def features_of(conn: asyncpg.Connection, tenant_id: str, raw_key: str) -> list[str]:
    return await license_features(conn, await get_license(conn, tenant_id, raw_key))


def _plan_json(row: Any) -> dict:
    return {"id": row["id"], "name": row["name"], "durationDays": row["duration_days"], "isActive": row["is_active"]}


async def list_plans(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    rows = await conn.fetch("SELECT id, name, duration_days, is_active FROM plans WHERE tenant_id = $1 ORDER BY id",
                            tenant_id)
    return [_plan_json(r) for r in rows]


async def save_plan(conn: asyncpg.Connection, tenant_id: str, body: dict) -> tuple[dict, bool]:
    """(plan, created): a new plan when the body has no id, else the update of that plan."""
    if body["id"] is None:
        row = await conn.fetchrow("INSERT INTO plans (tenant_id, name, duration_days, is_active) VALUES ($1, $2, $3, $4) "
                                  "ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id, name, duration_days, is_active",
                                  tenant_id, body["name"], body["durationDays"], body["isActive"])
        if row is None:
            raise ApiError(409, "plan_exists", f"a plan named '{body['name']}' already exists")
        return _plan_json(row), True
    try:
        row = await conn.fetchrow("UPDATE plans SET name = $3, duration_days = $4, is_active = $5 "
                                  "WHERE tenant_id = $1 AND id = $2 RETURNING id, name, duration_days, is_active",
                                  tenant_id, body["id"], body["name"], body["durationDays"], body["isActive"])
    except asyncpg.UniqueViolationError:  # renamed to another plan's name
        raise ApiError(409, "plan_exists", f"a plan named '{body['name']}' already exists") from None
    if row is None:
        raise ApiError(404, "plan_not_found", f"no plan {body['id']}")
    return _plan_json(row), False


# --- the client calls ----------------------------------------------------------------------------

def _versions(product, server_version: str) -> dict:
    return {"serverVersion": server_version,
            "minimumRequiredVersion": product["minimum_required_version"] if product else None}


async def activate(conn, tenant_id: str, now: datetime, server_version: str, body: dict,
                   country: str | None = None) -> dict:
    """`country`: where the client address is (geo.country_of); kept with the activation, the address is not."""
    hardware = _hardware(body["hardwareId"])
    product = await catalogue.find_product_by_name(conn, tenant_id, body["productName"])
    versions: dict[str, Any] = {"serverVersion": server_version,
                "minimumRequiredVersion": product["minimumRequiredVersion"] if product else None}
    if product is None:  # the SDK document: "400 Bad Request on activation: ensure product name is correct"
        raise ApiError(400, "product_not_found", f"no product named '{body['productName']}'", **versions)
    if version_below(body["version"], product["minimumRequiredVersion"]):
        raise ApiError(426, "version_outdated", f"version {body['version']} is below the minimum "
                       f"{product['minimumRequiredVersion']}", **versions)
    lic = await get_license(conn, tenant_id, body["activationKey"], **versions)
    if lic["product_id"] != product["id"]:
        raise ApiError(400, "product_mismatch", "this key belongs to another product", **versions)
    if lic["revoked_at"] is not None:
        raise ApiError(403, "license_revoked", "this key has been revoked", **versions)
    if lic["expires_at"] is not None and lic["expires_at"] <= now:
        raise ApiError(403, "license_expired", "this key has expired", **versions)
    seats = await _take_seat(conn, tenant_id, lic, hardware, now, body.get("email", ""), body["version"], offline=False,
                             country=country)
    features = await license_features(conn, lic)
    return {"success": True, "licenseType": lic["kind"], "expirationDate": lic["expires_at"], "features": features,
            "seatsUsed": seats, "maxSeats": lic["max_seats"], **versions}


async def _take_seat(conn, tenant_id: str, lic, hardware: str, now: datetime, email: str, version: str | None,
                     *, offline: bool, country: str | None = None) -> int:
    """Bind `hardware` to the license unless every seat is taken; the license row lock makes
    concurrent activations queue, so seats are never over-issued. Returns live seats."""
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM licenses WHERE id = $1 FOR UPDATE", lic["id"])
        live = await conn.fetch("SELECT hardware_id FROM activations WHERE license_id = $1 AND deactivated_at IS NULL",
                                lic["id"])
        if any(r["hardware_id"] == hardware for r in live):
            return len(live)  # already bound here: activating again is harmless
        if lic["max_seats"] is not None and len(live) >= lic["max_seats"]:
            if lic["kind"] == "standard":
                raise ApiError(409, "already_activated", "this key is already activated on another device")
            raise ApiError(409, "seat_limit_reached", f"all {lic['max_seats']} seats of this key are in use")
        await conn.execute(
            """INSERT INTO activations (tenant_id, license_id, hardware_id, email, client_version, offline, activated_at,
                                       country)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""", tenant_id, lic["id"], hardware, email or "", version, offline,
            now, country)
        await conn.execute("INSERT INTO device_sightings (tenant_id, product_id, hardware_id, first_seen_at) "
                           "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", tenant_id, lic["product_id"], hardware, now)
        await _history(conn, tenant_id, hardware, "activated", now, lic, offline=offline,
                       **({"country": country} if country else {}))
        await events.emit(conn, tenant_id, events.LICENSE_ACTIVATED,
                          {"licenseId": lic["id"], "hardwareId": hardware, "offline": offline})
        return len(live) + 1


async def _first_sighting(conn, tenant_id: str, product_id: int, hardware: str, now: datetime) -> datetime:
    first = await conn.fetchval("SELECT first_seen_at FROM device_sightings WHERE tenant_id = $1 AND product_id = $2 "
                                "AND hardware_id = $3", tenant_id, product_id, hardware)
    if first is not None:  # the common case: a device seen before, read without writing
        return first
    # A new device. DO UPDATE (not DO NOTHING) waits for a concurrent first sighting's insert and
    # returns its row, which a read in this statement's snapshot would not see.
    return await conn.fetchval(
        """INSERT INTO device_sightings (tenant_id, product_id, hardware_id, first_seen_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id, product_id, hardware_id) DO UPDATE SET first_seen_at = device_sightings.first_seen_at
           RETURNING first_seen_at""", tenant_id, product_id, hardware, now)


# The ExisOne document: "Default of 0 means Perpetual (expires 2049-12-31)"; answers always carry a date.
PERPETUAL_EXPIRY = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)


async def validate_license(conn, tenant_id: str, now: datetime, server_version: str, body: dict) -> dict:
    """The answer to POST /api/license/validate (statuses: see the module docstring).

    Every answer for a known product carries the product's features (for a valid key: the key's
    features) and an expirationDate: the key's expiry, or for an invalid key the end of the
    device's trial (first sighting plus the product's trial days). Every refused status raises
    license.validation.failed."""
    hardware = _hardware(body["hardwareId"])
    raw_key = (body.get("activationKey") or "").strip()
    product = await catalogue.find_product_by_name(conn, tenant_id, body["productName"]) if body["productName"] else None
    if raw_key and offline.is_offline_code(raw_key):
        lic = None
        answer = await _validate_offline_code(conn, tenant_id, now, server_version, raw_key, hardware, product)
        if answer["isValid"]:
            return answer
        product = answer.pop("_product")
    else:
        answer, lic, product = await _validate_key(conn, tenant_id, now, server_version, raw_key, hardware, body,
                                                   product)
        if answer["isValid"]:
            return answer
    if product is not None:
        if answer["status"] == "invalid" or answer["expirationDate"] is None:
            answer["expirationDate"] = await _trial_end(conn, tenant_id, product, hardware, now)
        if not answer["features"]:
            answer["features"] = await _product_feature_names(conn, tenant_id, product["id"])
    await events.emit(conn, tenant_id, events.LICENSE_VALIDATION_FAILED,
                      {"licenseId": lic["id"] if lic else None, "hardwareId": hardware, "status": answer["status"],
                       "productName": product["name"] if product else body["productName"]})
    return answer


async def _product_feature_names(conn, tenant_id: str, product_id: int) -> list[str]:
    return [f["name"] for f in await catalogue.product_features(conn, tenant_id, product_id)]


async def _trial_end(conn, tenant_id: str, product: dict, hardware: str, now: datetime) -> datetime:
    first = await _first_sighting(conn, tenant_id, product["id"], hardware, now)
    return first + timedelta(days=product["trialDays"])


def _refused(server_version: str, product: Any, status: str = "invalid") -> dict[str, Any]:
    return {"isValid": False, "status": status, "expirationDate": None, "features": [],
            "serverVersion": server_version,
            "minimumRequiredVersion": product["minimumRequiredVersion"] if product else None}


async def _validate_key(conn, tenant_id: str, now: datetime, server_version: str, raw_key: str, hardware: str,
                        body: dict, product: Any) -> tuple[dict[str, Any], Any, dict | None]:
    """(answer, license row or None, product) for a key or a blank (trial) request."""
    lic = await find_license(conn, tenant_id, raw_key) if raw_key else None
    if body["productName"] and product is None:
        lic = None  # a product this tenant does not have: nothing can be valid for it
    elif lic is not None and product is None:
        product = await catalogue.get_product(conn, tenant_id, lic["product_id"])
    answer = _refused(server_version, product)
    if product is not None and version_below(body["version"], product["minimumRequiredVersion"]):
        answer["status"] = "version_outdated"
        if lic is not None and lic["product_id"] == product["id"]:
            answer["expirationDate"] = lic["expires_at"] or PERPETUAL_EXPIRY
        return answer, lic, product
    if lic is None or product is None or lic["product_id"] != product["id"]:
        # No (usable) key: trial mode, running from the device's first sighting.
        if product is None or raw_key:
            return answer, None, product  # an invalid key is not a trial
        ends = await _trial_end(conn, tenant_id, product, hardware, now)
        running = now < ends
        answer.update(isValid=running, status="trial" if running else "trial_expired", expirationDate=ends,
                      features=await _product_feature_names(conn, tenant_id, product["id"]))
        return answer, None, product
    answer["expirationDate"] = lic["expires_at"] or PERPETUAL_EXPIRY
    answer["features"] = await license_features(conn, lic)
    if lic["revoked_at"] is not None:
        answer["status"] = "revoked"
    elif lic["expires_at"] is not None and lic["expires_at"] <= now:
        answer["status"] = "expired"
    elif not await conn.fetchval("SELECT 1 FROM activations WHERE license_id = $1 AND hardware_id = $2 "
                                 "AND deactivated_at IS NULL", lic["id"], hardware):
        answer["status"] = "not_activated"
    else:
        answer.update(isValid=True, status="licensed", licenseType=lic["kind"])
    return answer, lic, product


async def _validate_offline_code(conn, tenant_id: str, now: datetime, server_version: str, code: str, hardware: str,
                                 product) -> dict:
    """The answer for an offline code; a refused one carries `_product` (the code's product, when
    it is this tenant's and the request named none) for the caller to complete."""
    answer = _refused(server_version, product)
    answer["_product"] = product
    try:
        payload_bytes, signature = offline.decode(code)
    except ValueError:
        return answer
    if not any(crypto.verify_pkcs1v15_sha256(pem, payload_bytes, signature)
               for pem in await crypto.verifying_pems(conn, tenant_id)):
        return answer
    payload = orjson.loads(payload_bytes)
    if product is None and isinstance(payload.get("productId"), int):
        with contextlib.suppress(ApiError):  # the product was removed since the code was signed
            answer["_product"] = await catalogue.get_product(conn, tenant_id, payload["productId"])
    expires = times.parse_iso_utc(payload["expirationDate"])
    answer["expirationDate"] = expires
    answer["features"] = list(payload.get("features", []))
    if payload.get("hardwareId", "").upper() != hardware:
        return answer
    if expires <= now:
        answer["status"] = "expired"
        return answer
    del answer["_product"]
    return {**answer, "isValid": True, "status": "licensed"}


async def deactivate(conn, tenant_id: str, now: datetime, body: dict) -> dict:
    """Release the seat of `hardwareId`. `licenseKey` is an activation key, or an offline code this
    server issued (the SDK's deactivate_smart sends the code): the seat the code was issued for."""
    hardware = _hardware(body["hardwareId"])
    raw_key = body["licenseKey"].strip()
    code_hardware = None
    if offline.is_offline_code(raw_key):
        lic, code_hardware = await _license_of_offline_code(conn, tenant_id, raw_key)
    else:
        lic = await find_license(conn, tenant_id, raw_key)
    if lic is None:
        raise ApiError(404, "invalid_key", "no such activation key")
    if code_hardware is not None and code_hardware != hardware:
        raise ApiError(404, "not_activated", "this offline code was issued for another hardware id")
    if body["productName"] and lic["product_name"].lower() != body["productName"].lower():
        raise ApiError(400, "product_mismatch", "this key belongs to another product")
    return await deactivate_found(conn, tenant_id, now, lic, hardware)


async def deactivate_found(conn, tenant_id: str, now: datetime, lic, hardware_id: str) -> dict:
    """Release a seat of a license row (the product's cooldown applies: 429 deactivation_cooldown)."""
    hardware = _hardware(hardware_id)
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM licenses WHERE id = $1 FOR UPDATE", lic["id"])
        activation = await conn.fetchval("SELECT id FROM activations WHERE license_id = $1 AND hardware_id = $2 "
                                         "AND deactivated_at IS NULL", lic["id"], hardware)
        if activation is None:
            raise ApiError(404, "not_activated", "this key is not activated on this hardware")
        cooldown = timedelta(hours=lic["deactivation_cooldown_hours"])
        last = await conn.fetchval("SELECT last_deactivated_at FROM licenses WHERE id = $1", lic["id"])
        if cooldown and last is not None and now < last + cooldown:
            wait = int((last + cooldown - now).total_seconds()) + 1
            raise ApiError(429, "deactivation_cooldown", f"this key was deactivated recently; retry in {wait} s",
                           headers={"Retry-After": str(wait)}, retryAfterSeconds=wait)
        await conn.execute("UPDATE activations SET deactivated_at = $2 WHERE id = $1", activation, now)
        await conn.execute("UPDATE licenses SET last_deactivated_at = $2 WHERE id = $1", lic["id"], now)
        await _history(conn, tenant_id, hardware, "deactivated", now, lic)
        await events.emit(conn, tenant_id, events.DEVICE_DEACTIVATED, {"licenseId": lic["id"], "hardwareId": hardware})
    return {"success": True}


def _offline_code_digest(payload_bytes: bytes, signature: bytes) -> bytes:
    return sha256(payload_bytes + signature)


async def _license_of_offline_code(conn: asyncpg.Connection, tenant_id: str, code: str) -> tuple[Any, str | None]:
    """(license, hardware id) of the live activation a code of this tenant was issued for, else (None, None)."""
    try:
        payload_bytes, signature = offline.decode(code)
    except ValueError:
        return None, None
    activation = await conn.fetchrow(
        "SELECT license_id, hardware_id FROM activations WHERE tenant_id = $1 AND offline_code_digest = $2 "
        "AND deactivated_at IS NULL ORDER BY id LIMIT 1", tenant_id, _offline_code_digest(payload_bytes, signature))
    if activation is None:
        return None, None
    lic = await conn.fetchrow(f"SELECT {_LICENSE_COLUMNS} FROM {_LICENSE_FROM} "
                              "WHERE l.id = $1 AND l.tenant_id = $2", activation["license_id"], tenant_id)
    return lic, activation["hardware_id"]


async def seat_usage(conn, tenant_id: str, raw_key: str) -> dict:
    lic = await find_license(conn, tenant_id, raw_key)
    if lic is None or lic["kind"] != "corporate":
        raise ApiError(404, "not_corporate", "no corporate license with this key")
    used = await conn.fetchval("SELECT count(*) FROM activations WHERE license_id = $1 AND deactivated_at IS NULL",
                               lic["id"])
    maximum = lic["max_seats"]
    return {"currentSeats": used, "maxSeats": maximum, "hasCapacity": maximum is None or used < maximum,
            "isUnlimited": maximum is None}


async def offline_code(conn, tenant_id: str, master_key: str | None, now: datetime, raw_key: str, hardware_id: str,
                       version: str | None) -> dict:
    """Bind the hardware (a seat, like an online activation) and sign an offline code for it."""
    return await offline_code_found(conn, tenant_id, master_key, now, await get_license(conn, tenant_id, raw_key),
                                    hardware_id, version)


async def offline_code_found(conn: asyncpg.Connection, tenant_id: str, master_key: str | None, now: datetime, lic: Any,
                             hardware_id: str, version: str | None) -> dict:
    if lic["revoked_at"] is not None:
        raise ApiError(403, "license_revoked", "this key has been revoked")
    if lic["expires_at"] is not None and lic["expires_at"] <= now:
        raise ApiError(403, "license_expired", "this key has expired")
    hardware = _hardware(hardware_id)
    await _take_seat(conn, tenant_id, lic, hardware, now, lic["email"], version, offline=True)
    expires = lic["expires_at"] or datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    payload = {"productId": lic["product_id"], "productName": lic["product_name"], "hardwareId": hardware,
               "expirationDate": iso_utc(expires),
               "email": lic["email"], "features": await license_features(conn, lic), "tenantId": tenant_id,
               "version": version or ""}
    _, key = await crypto.signing_key(conn, tenant_id, master_key)
    code = offline.encode(payload, lambda data: crypto.sign_pkcs1v15_sha256(key, data))
    await conn.execute("UPDATE activations SET offline_code_digest = $3 WHERE license_id = $1 AND hardware_id = $2 "
                       "AND deactivated_at IS NULL", lic["id"], hardware, _offline_code_digest(*offline.decode(code)))
    return {"offlineCode": code, "expirationDate": expires, "hardwareId": hardware}


async def device_history(conn: asyncpg.Connection, tenant_id: str, hardware_id: str, page: int,
                         page_size: int) -> dict:
    where = Where("h.tenant_id", tenant_id)
    where.equals("h.hardware_id", _hardware(hardware_id))
    return await fetch_page(
        conn, count_from="SELECT count(*) FROM device_history h",
        select_from="""SELECT h.action, h.at, h.details, l.key_hint, p.name AS product_name FROM device_history h
                       LEFT JOIN licenses l ON l.id = h.license_id LEFT JOIN products p ON p.id = h.product_id""",
        where=where, order_by="h.id DESC", page=page, page_size=page_size,
        item=lambda r: {"action": r["action"], "at": r["at"], "activationKey": r["key_hint"],
                        "productName": r["product_name"], "details": r["details"]})
