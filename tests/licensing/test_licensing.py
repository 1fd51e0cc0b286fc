"""Activation-key licensing: every path of activate, validate, deactivate, seats, trials, keys."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import db_connection
from quota_gateway.licensing import keys
from quota_gateway.licensing.service import version_below

HW = "A" * 64
HW2 = "B" * 64


async def _product(client, tenant, **fields) -> tuple[int, str]:
    name = fields.pop("name", "Desktop App")
    r = await client.post("/api/product", json={"name": name, **fields}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    for feature in ("Export", "Sync"):
        await client.post(f"/api/product/{r.json()['id']}/features", json={"name": feature}, headers=tenant.headers)
    return r.json()["id"], name


async def _license(client, tenant, product_id, **fields) -> str:
    r = await client.post("/api/licenses", json={"productId": product_id, "email": "u@example.com", **fields},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["activationKey"]


async def _activate(client, tenant, key, name, hw=HW, **extra):
    return await client.post("/api/license/activate", json={"activationKey": key, "email": "u@example.com",
                                                            "hardwareId": hw, "productName": name, **extra},
                             headers=tenant.headers)


async def _validate(client, tenant, key, name=None, hw=HW, **extra):
    body = {"activationKey": key, "hardwareId": hw, **extra}
    if name:
        body["productName"] = name
    r = await client.post("/api/license/validate", json=body, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_key_format_catches_typos():
    key = keys.generate()
    assert len(key) == 19 and key.count("-") == 3
    assert keys.normalize(key.lower().replace("-", "")) == key
    raw = key.replace("-", "")
    typo = raw[:5] + ("X" if raw[5] != "X" else "Y") + raw[6:]
    assert keys.normalize(typo) is None


@pytest.mark.parametrize("version,minimum,below", [("1.9", "1.10", True), ("1.10", "1.9", False), ("2", "2.0.0", False),
                                                   ("1.2.3", "1.2.4", True), ("abc", "1.0", True), (None, "1.0", False)])
def test_version_compare(version, minimum, below):
    assert version_below(version, minimum) is below


async def test_generate_activate_validate_deactivate(client, tenant):
    _, name = await _product(client, tenant)
    r = await client.post("/api/activationkey/generate", json={"productName": name, "email": "u@example.com"},
                          headers=tenant.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    key = r.text
    assert keys.normalize(key) == key
    r = await _activate(client, tenant, key, name, version="1.0")
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True and r.json()["features"] == ["Export", "Sync"]
    body = await _validate(client, tenant, key, name, hw=HW.lower())  # hardware ids: case-insensitive
    assert body["isValid"] is True and body["status"] == "licensed" and body["features"] == ["Export", "Sync"]
    assert body["serverVersion"] and "minimumRequiredVersion" in body and "expirationDate" in body
    r = await client.post("/api/license/deactivate", json={"licenseKey": key, "hardwareId": HW, "productName": name},
                          headers=tenant.headers)
    assert r.status_code == 200
    assert (await _validate(client, tenant, key, name))["status"] == "not_activated"


async def test_standard_key_refuses_a_second_device(client, tenant):
    product_id, name = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    assert (await _activate(client, tenant, key, name)).status_code == 200
    assert (await _activate(client, tenant, key, name)).status_code == 200  # same device again: fine
    r = await _activate(client, tenant, key, name, hw=HW2)
    assert r.status_code == 409 and r.json()["error"] == "already_activated"


async def test_corporate_seats_are_never_over_issued(client, tenant):
    product_id, name = await _product(client, tenant)
    key = await _license(client, tenant, product_id, kind="corporate", maxSeats=5)
    results = await asyncio.gather(*(_activate(client, tenant, key, name, hw=f"{i:064X}") for i in range(30)))
    assert [r.status_code for r in results].count(200) == 5
    assert {r.json()["error"] for r in results if r.status_code != 200} == {"seat_limit_reached"}
    r = await client.get(f"/api/license/{key}/usage", headers=tenant.headers)
    assert r.json() == {"currentSeats": 5, "maxSeats": 5, "hasCapacity": False, "isUnlimited": False}


async def test_unlimited_corporate_key(client, tenant):
    product_id, name = await _product(client, tenant)
    key = await _license(client, tenant, product_id, kind="corporate")
    for i in range(3):
        assert (await _activate(client, tenant, key, name, hw=f"{i:064X}")).status_code == 200
    r = await client.get(f"/api/license/{key}/usage", headers=tenant.headers)
    assert r.json() == {"currentSeats": 3, "maxSeats": None, "hasCapacity": True, "isUnlimited": True}


async def test_seat_usage_is_404_for_standard_keys(client, tenant):
    product_id, _ = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    r = await client.get(f"/api/license/{key}/usage", headers=tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_corporate"


@pytest.mark.parametrize("case,status,code", [
    ("unknown", 404, "invalid_key"), ("no-product", 400, "product_not_found"), ("wrong-product", 400, "product_mismatch"),
    ("revoked", 403, "license_revoked"), ("expired", 403, "license_expired"), ("outdated", 426, "version_outdated"),
])
async def test_activation_errors(client, tenant, clock, case, status, code):
    product_id, name = await _product(client, tenant, minimumRequiredVersion="2.0")
    _, other = await _product(client, tenant, name="Other")
    key = await _license(client, tenant, product_id, validityDays=1)
    extra = {"version": "2.1"}
    if case == "unknown":
        key = keys.generate()
    elif case == "no-product":
        name = "Nope"
    elif case == "wrong-product":
        name = other
    elif case == "revoked":
        await client.delete(f"/api/licenses/{key}", headers=tenant.headers)
    elif case == "expired":
        clock.advance(2 * 86400)
    elif case == "outdated":
        extra = {"version": "1.9.9"}
    r = await _activate(client, tenant, key, name, **extra)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["message"]
    if case == "outdated":
        assert r.json()["minimumRequiredVersion"] == "2.0" and r.json()["serverVersion"]


async def test_validate_statuses(client, tenant, clock):
    product_id, name = await _product(client, tenant, minimumRequiredVersion="1.5", trialDays=7)
    key = await _license(client, tenant, product_id, validityDays=10)
    assert (await _validate(client, tenant, "garbage", name))["status"] == "invalid"
    assert (await _validate(client, tenant, keys.generate(), name))["status"] == "invalid"
    assert (await _validate(client, tenant, key, name))["status"] == "not_activated"
    await _activate(client, tenant, key, name)
    assert (await _validate(client, tenant, key, name, version="1.4"))["status"] == "version_outdated"
    assert (await _validate(client, tenant, key, name, version="1.5"))["status"] == "licensed"
    assert (await _validate(client, tenant, key, "Other Product"))["status"] == "invalid"
    clock.advance(11 * 86400)
    expired = await _validate(client, tenant, key, name)
    assert expired["status"] == "expired" and expired["isValid"] is False and expired["expirationDate"]
    key2 = await _license(client, tenant, product_id)
    await _activate(client, tenant, key2, name)
    await client.delete(f"/api/licenses/{key2}", headers=tenant.headers)
    assert (await _validate(client, tenant, key2, name))["status"] == "revoked"


async def test_trial_runs_from_first_sighting(client, tenant, clock):
    _, name = await _product(client, tenant, trialDays=14)
    first = await _validate(client, tenant, "", name)
    assert first["isValid"] is True and first["status"] == "trial" and first["features"] == ["Export", "Sync"]
    clock.advance(13 * 86400)
    again = await _validate(client, tenant, "", name)
    assert again["status"] == "trial" and again["expirationDate"] == first["expirationDate"]
    clock.advance(2 * 86400)
    over = await _validate(client, tenant, "", name)
    assert over["isValid"] is False and over["status"] == "trial_expired" and over["features"] == ["Export", "Sync"]
    # an invalid key still learns when this device's trial ends
    invalid = await _validate(client, tenant, "nope", name)
    assert invalid["status"] == "invalid" and invalid["expirationDate"] == first["expirationDate"]


async def test_deactivation_only_from_bound_hardware_and_cooldown(client, tenant, clock):
    product_id, name = await _product(client, tenant, deactivationCooldownHours=24)
    key = await _license(client, tenant, product_id, kind="corporate", maxSeats=2)
    await _activate(client, tenant, key, name)
    await _activate(client, tenant, key, name, hw=HW2)
    body = {"licenseKey": key, "productName": name}
    r = await client.post("/api/license/deactivate", json={**body, "hardwareId": "C" * 64}, headers=tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "not_activated"
    assert (await client.post("/api/license/deactivate", json={**body, "hardwareId": HW},
                              headers=tenant.headers)).status_code == 200
    r = await client.post("/api/license/deactivate", json={**body, "hardwareId": HW2}, headers=tenant.headers)
    assert r.status_code == 429 and r.json()["error"] == "deactivation_cooldown" and "retry-after" in r.headers
    clock.advance(24 * 3600)
    assert (await client.post("/api/license/deactivate", json={**body, "hardwareId": HW2},
                              headers=tenant.headers)).status_code == 200


async def test_features_set_and_csv(client, tenant):
    product_id, _ = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    r = await client.post("/api/license/features/csv", json={"activationKey": key}, headers=tenant.headers)
    assert r.json() == {"features": "Export,Sync"}
    r = await client.post("/api/license/features/set", json={"activationKey": key, "features": ["Sync"]},
                          headers=tenant.headers)
    assert r.status_code == 200
    r = await client.post("/api/license/features/csv", json={"activationKey": key}, headers=tenant.headers)
    assert r.json() == {"features": "Sync"}
    r = await client.post("/api/license/features/set", json={"activationKey": key, "features": ["Nope"]},
                          headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "unknown_feature"


async def test_plans_and_plan_duration(client, tenant, clock):
    r = await client.post("/api/plan", json={"id": None, "name": "Annual", "durationDays": 365, "isActive": True},
                          headers=tenant.headers)
    assert r.status_code == 201
    plan = r.json()
    r = await client.post("/api/plan", json={**plan, "name": "Yearly"}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["name"] == "Yearly"
    assert [p["name"] for p in (await client.get("/api/plan", headers=tenant.headers)).json()["items"]] == ["Yearly"]
    _, name = await _product(client, tenant)
    key = (await client.post("/api/activationkey/generate", json={"productName": name, "email": "u@example.com",
                                                                  "planId": plan["id"]}, headers=tenant.headers)).text
    shown = (await client.get(f"/api/licenses/{key}", headers=tenant.headers)).json()
    assert shown["planId"] == plan["id"] and shown["expirationDate"].startswith(str(clock.utcnow().year + 1))
    r = await client.post("/api/plan", json={"id": 999, "name": "X"}, headers=tenant.headers)
    assert r.status_code == 404


async def test_device_history_newest_first_paginated(client, tenant):
    product_id, name = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    await _activate(client, tenant, key, name)
    await client.post("/api/license/deactivate", json={"licenseKey": key, "hardwareId": HW, "productName": name},
                      headers=tenant.headers)
    r = await client.get(f"/api/license/device-history/{HW.lower()}", params={"page": 1, "pageSize": 1},
                         headers=tenant.headers)
    body = r.json()
    assert body["totalCount"] == 2 and body["totalPages"] == 2 and body["items"][0]["action"] == "deactivated"


async def test_tenant_isolation(client, tenant, other_tenant):
    product_id, name = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    await _activate(client, tenant, key, name)
    assert (await _validate(client, other_tenant, key, name))["status"] == "invalid"
    r = await _activate(client, other_tenant, key, name)
    assert r.status_code == 400 and r.json()["error"] == "product_not_found"  # the other tenant has no such product
    await _product(client, other_tenant)
    r = await _activate(client, other_tenant, key, name)
    assert r.status_code == 404 and r.json()["error"] == "invalid_key"
    assert (await client.get(f"/api/licenses/{key}", headers=other_tenant.headers)).status_code == 404
    assert (await client.get("/api/licenses", headers=other_tenant.headers)).json()["totalCount"] == 0
    history = (await client.get(f"/api/license/device-history/{HW}", headers=other_tenant.headers)).json()
    assert history["totalCount"] == 0


async def test_domain_events_are_raised(client, tenant, settings):
    product_id, name = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    await _activate(client, tenant, key, name)
    await _validate(client, tenant, key, name, hw=HW2)
    await client.post("/api/license/deactivate", json={"licenseKey": key, "hardwareId": HW, "productName": name},
                      headers=tenant.headers)
    await client.delete(f"/api/licenses/{key}", headers=tenant.headers)
    async with db_connection(settings.database_url) as conn:
        types = [r["type"] for r in await conn.fetch("SELECT type FROM events WHERE tenant_id = $1 ORDER BY id",
                                                     tenant.id)]
    assert types == ["license.created", "license.activated", "license.validation.failed", "device.deactivated",
                     "license.revoked"]


# --- crypto: keys, offline codes, encrypted validation -------------------------------------------

async def test_private_keys_are_encrypted_at_rest_and_rotation_keeps_old_keys(client, tenant, settings):
    async with db_connection(settings.database_url) as conn:
        blob = bytes(await conn.fetchval("SELECT private_enc FROM tenant_keys WHERE tenant_id = $1", tenant.id))
    assert b"PRIVATE KEY" not in blob and len(blob) > 1000
    first = (await client.get("/api/crypto/keys/public", headers=tenant.headers)).text
    assert first.startswith("-----BEGIN PUBLIC KEY-----")
    serialization.load_pem_public_key(first.encode())
    r = await client.post("/api/crypto/keys/rotate", headers=tenant.headers)
    assert r.status_code == 201
    second = (await client.get("/api/crypto/keys/public", headers=tenant.headers)).text
    assert second != first
    listed = (await client.get("/api/crypto/keys", headers=tenant.headers)).json()["items"]
    assert [k["publicKey"] for k in listed] == [second, first] and listed[0]["active"]


async def test_offline_code_decodes_verifies_and_validates(client, tenant):
    from exisone.offline import validate_offline

    product_id, name = await _product(client, tenant)
    key = await _license(client, tenant, product_id, validityDays=30)
    r = await client.post("/api/license/offline-code", json={"activationKey": key, "hardwareId": HW.lower()},
                          headers=tenant.headers)
    assert r.status_code == 200, r.text
    code = r.json()["offlineCode"]
    pem = (await client.get("/api/crypto/keys/public", headers=tenant.headers)).text
    result = validate_offline(code, HW, pem)  # the published SDK's own verifier
    assert result.is_valid, result.error_message
    assert result.product_name == name and result.features == ["Export", "Sync"] and result.email == "u@example.com"
    assert not validate_offline(code, HW2, pem).is_valid
    tampered = code[:-3] + ("0" if code[-3] != "0" else "1") + code[-2:]
    assert not validate_offline(tampered, HW, pem).is_valid
    # the server answers the same code sanely when the SDK's smart validation posts it
    assert (await _validate(client, tenant, code, name))["status"] == "licensed"
    assert (await _validate(client, tenant, code, name, hw=HW2))["status"] == "invalid"
    assert (await _validate(client, tenant, tampered, name))["status"] == "invalid"
    # the code took the key's one seat
    r = await _activate(client, tenant, key, name, hw=HW2)
    assert r.status_code == 409


async def test_offline_code_refused_for_revoked_key(client, tenant):
    product_id, _ = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    await client.delete(f"/api/licenses/{key}", headers=tenant.headers)
    r = await client.post("/api/license/offline-code", json={"activationKey": key, "hardwareId": HW},
                          headers=tenant.headers)
    assert r.status_code == 403 and r.json()["error"] == "license_revoked"


def _seal(pem: str, request: dict) -> tuple[str, bytes]:
    public = serialization.load_pem_public_key(pem.encode())
    key, nonce = os.urandom(32), os.urandom(12)
    head = public.encrypt(key + nonce, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                                                    label=None))
    body = AESGCM(key).encrypt(nonce, json.dumps(request).encode(), None)
    return base64.b64encode(head + body).decode(), key


async def test_encrypted_validation_round_trip(client, tenant):
    product_id, name = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    await _activate(client, tenant, key, name)
    pem = (await client.get("/api/crypto/keys/public", headers=tenant.headers)).text
    payload, aes_key = _seal(pem, {"activationKey": key, "hardwareId": HW, "productName": name})
    r = await client.post("/api/license/validate-encrypted", json={"payload": payload}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    sealed = base64.b64decode(r.json()["payload"])
    answer = json.loads(AESGCM(aes_key).decrypt(sealed[:12], sealed[12:], None))
    assert answer["isValid"] is True and answer["status"] == "licensed"


@pytest.mark.parametrize("payload,code", [
    ("not base64!!", "invalid_payload"), (base64.b64encode(b"short").decode(), "invalid_payload"),
    (base64.b64encode(os.urandom(400)).decode(), "decryption_failed"),
])
async def test_encrypted_validation_bad_input(client, tenant, payload, code):
    r = await client.post("/api/license/validate-encrypted", json={"payload": payload}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == code


async def test_encrypted_validation_with_another_tenants_key_fails(client, tenant, other_tenant):
    pem = (await client.get("/api/crypto/keys/public", headers=other_tenant.headers)).text
    payload, _ = _seal(pem, {"activationKey": "", "hardwareId": HW})
    r = await client.post("/api/license/validate-encrypted", json={"payload": payload}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "decryption_failed"
