"""Activation-key licensing answers, checked against the words of the ExisOne documents."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta

import pytest

from conftest import db_connection
from licensing.test_licensing import HW, HW2
from licensing.test_licensing import _validate as validate_license
from quota_gateway.clock import iso_utc
from quota_gateway.licensing import keys


async def _product(client, tenant, name="Desktop App", **fields) -> int:
    r = await client.post("/api/product", json={"name": name, **fields}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    for feature in ("Export", "Sync"):
        await client.post(f"/api/product/{r.json()['id']}/features", json={"name": feature}, headers=tenant.headers)
    return r.json()["id"]


async def _license(client, tenant, product_id, **fields) -> str:
    r = await client.post("/api/licenses", json={"productId": product_id, "email": "u@example.com", **fields},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["activationKey"]


def _activation(key, hw=HW, name="Desktop App") -> dict:
    return {"activationKey": key, "email": "u@example.com", "hardwareId": hw, "productName": name}


async def test_permission_table_of_the_python_sdk_document(client, tenant, settings):
    """The Python SDK document's permission table: activate and deactivate need "a valid token, no
    specific scope"; send_support_ticket needs `email`; validate needs `verify`;
    generate_activation_key needs `generate`."""
    product_id = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    generate_only = await tenant.token_with(settings.database_url, ["generate"])
    verify_only = await tenant.token_with(settings.database_url, ["verify"])
    email_only = await tenant.token_with(settings.database_url, ["email"])

    # activate / deactivate: any valid token of the tenant
    r = await client.post("/api/license/activate", json=_activation(key), headers=email_only)
    assert r.status_code == 200, r.text
    r = await client.post("/api/license/deactivate", json={"licenseKey": key, "hardwareId": HW,
                                                           "productName": "Desktop App"}, headers=generate_only)
    assert r.status_code == 200, r.text
    r = await client.post("/api/license/activate", json=_activation(key), headers={"Authorization": "ExisOneApi x"})
    assert r.status_code == 401

    # validate: verify
    body = {"activationKey": key, "hardwareId": HW, "productName": "Desktop App"}
    assert (await client.post("/api/license/validate", json=body, headers=verify_only)).status_code == 200
    r = await client.post("/api/license/validate", json=body, headers=generate_only)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"

    # generate: generate
    generate = {"productName": "Desktop App", "email": "u@example.com"}
    assert (await client.post("/api/activationkey/generate", json=generate, headers=generate_only)).status_code == 200
    r = await client.post("/api/activationkey/generate", json=generate, headers=verify_only)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"

    # support ticket: email ("a token without it gets 403")
    ticket = {"productName": "Desktop App", "email": "u@example.com", "subject": "Help", "message": "It broke"}
    r = await client.post("/api/support/ticket", json=ticket, headers=verify_only)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = await client.post("/api/support/ticket", json=ticket, headers=email_only)
    assert r.status_code != 403  # past the permission check (the ticket itself is the support domain's)

    spec = (await client.get("/openapi.json")).json()["paths"]
    assert spec["/api/license/activate"]["post"]["security"] == [{"ExisOneApi": []}]
    assert spec["/api/support/ticket"]["post"]["security"] == [{"ExisOneApi": ["email"]}]


async def test_activation_for_an_unknown_product_name_is_a_400(client, tenant):
    """SDK document: "400 Bad Request on activation: ensure product name is correct"."""
    product_id = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    r = await client.post("/api/license/activate", json=_activation(key, name="Desktop Ap"), headers=tenant.headers)
    assert r.status_code == 400
    assert r.json()["error"] == "product_not_found" and r.json()["message"]


# The document's validations name the product unless a test says otherwise.
_validate = functools.partial(validate_license, name="Desktop App")


async def test_every_refused_answer_carries_features_and_an_expiration_date(client, tenant, clock, settings):
    """.NET SDK 0.7.0 note: "always returns product features even for invalid licenses"; REST
    document: "expirationDate is now always returned, even for invalid licenses. For invalid
    cases, it's calculated from the device record creation date + trial days"."""
    product_id = await _product(client, tenant, trialDays=14, minimumRequiredVersion="1.0")
    sighted = clock.utcnow()
    trial_end = iso_utc(sighted + timedelta(days=14))

    invalid = await _validate(client, tenant, keys.generate())
    assert invalid == {**invalid, "isValid": False, "status": "invalid", "features": ["Export", "Sync"],
                       "expirationDate": trial_end}
    clock.advance(3600)  # the device's first sighting stays the reference
    garbage = await _validate(client, tenant, "not-a-key")
    assert garbage["status"] == "invalid" and garbage["expirationDate"] == trial_end
    assert garbage["features"] == ["Export", "Sync"]

    key = await _license(client, tenant, product_id, validityDays=10)
    not_activated = await _validate(client, tenant, key)
    assert not_activated["status"] == "not_activated" and not_activated["features"] == ["Export", "Sync"]
    assert not_activated["expirationDate"] == iso_utc(clock.utcnow() + timedelta(days=10))
    assert (await client.post("/api/license/activate", json=_activation(key), headers=tenant.headers)).status_code == 200
    outdated = await _validate(client, tenant, key, version="0.9")
    assert outdated["status"] == "version_outdated" and outdated["features"] == ["Export", "Sync"]
    assert outdated["expirationDate"] == not_activated["expirationDate"]

    limited = await client.post("/api/licenses", json={"productId": product_id, "features": ["Sync"]},
                                headers=tenant.headers)
    revoked_key = limited.json()["activationKey"]
    await client.delete(f"/api/licenses/{revoked_key}", headers=tenant.headers)
    revoked = await _validate(client, tenant, revoked_key)
    assert revoked["status"] == "revoked" and revoked["features"] == ["Sync"]  # the key's own features
    assert revoked["expirationDate"] == "2049-12-31T23:59:59Z"  # "Default of 0 means Perpetual (expires 2049-12-31)"

    clock.advance(11 * 86400)
    expired = await _validate(client, tenant, key)
    assert expired["status"] == "expired" and expired["features"] == ["Export", "Sync"]
    assert expired["expirationDate"] == not_activated["expirationDate"]

    clock.advance(3 * 86400)
    trial_over = await _validate(client, tenant, "")
    assert trial_over["status"] == "trial_expired" and trial_over["expirationDate"] == trial_end
    assert trial_over["features"] == ["Export", "Sync"]

    # each refused validation raised the document's event
    async with db_connection(settings.database_url) as conn:
        rows = await conn.fetch("SELECT type, data FROM events WHERE tenant_id = $1 AND type LIKE '%validation%' "
                                "ORDER BY id", tenant.id)
    assert {r["type"] for r in rows} == {"license.validation.failed"}
    assert [json.loads(r["data"])["status"] for r in rows] == ["invalid", "invalid", "not_activated", "version_outdated",
                                                   "revoked", "expired", "trial_expired"]


@pytest.mark.parametrize("name", [None, "Desktop App"])
async def test_tampered_offline_code_answers_like_an_invalid_key(client, tenant, name):
    product_id = await _product(client, tenant, trialDays=5)
    key = await _license(client, tenant, product_id)
    code = (await client.post("/api/license/offline-code", json={"activationKey": key, "hardwareId": HW},
                              headers=tenant.headers)).json()["offlineCode"]
    on_other_device = await _validate(client, tenant, code, hw=HW2, name=name)
    assert on_other_device["status"] == "invalid" and on_other_device["features"] == ["Export", "Sync"]
    assert on_other_device["expirationDate"] == iso_utc(datetime.fromtimestamp(1_800_000_000, UTC)
                                                       + timedelta(days=5))


async def test_deactivate_with_an_offline_code_releases_its_seat(client, tenant, other_tenant):
    """exisone-client 0.10.0's deactivate_smart posts the offline code as `licenseKey` to
    /api/license/deactivate ("Attempts to notify the server"): the seat it was issued for is freed."""
    product_id = await _product(client, tenant)
    key = await _license(client, tenant, product_id, kind="corporate", maxSeats=2)
    codes = {}
    for hw in (HW, HW2):
        r = await client.post("/api/license/offline-code", json={"activationKey": key, "hardwareId": hw},
                              headers=tenant.headers)
        assert r.status_code == 200, r.text
        codes[hw] = r.json()["offlineCode"]
    body = {"licenseKey": codes[HW], "hardwareId": HW.lower(), "productName": "Desktop App"}
    wrong_device = await client.post("/api/license/deactivate", json={**body, "hardwareId": HW2},
                                     headers=tenant.headers)
    assert wrong_device.status_code == 404 and wrong_device.json()["error"] == "not_activated"
    stranger = await client.post("/api/license/deactivate", json=body, headers=other_tenant.headers)
    assert stranger.status_code == 404 and stranger.json()["error"] == "invalid_key"
    r = await client.post("/api/license/deactivate", json=body, headers=tenant.headers)
    assert r.status_code == 200 and r.json() == {"success": True}
    usage = (await client.get(f"/api/license/{key}/usage", headers=tenant.headers)).json()
    assert usage["currentSeats"] == 1
    assert (await _validate(client, tenant, key, hw=HW))["status"] == "not_activated"
    assert (await _validate(client, tenant, key, hw=HW2))["status"] == "licensed"
    again = await client.post("/api/license/deactivate", json=body, headers=tenant.headers)
    assert again.status_code == 404  # the code's seat is already released
    tampered = codes[HW2][:-3] + ("000" if not codes[HW2].endswith("000") else "111")
    r = await client.post("/api/license/deactivate", json={**body, "licenseKey": tampered, "hardwareId": HW2},
                          headers=tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "invalid_key"


async def test_encrypted_payload_in_the_rest_documents_literal_form(client, tenant, other_tenant):
    """REST document: "Encrypt JSON with the public key (RSA-OAEP-SHA256), base64 encode, and send
    {payload}". The answer is 200: the JSON (base64) and the tenant key's signature over it."""
    import base64

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    product_id = await _product(client, tenant)
    key = await _license(client, tenant, product_id)
    assert (await client.post("/api/license/activate", json=_activation(key), headers=tenant.headers)).status_code == 200
    pem = (await client.get("/api/crypto/keys/public", headers=tenant.headers)).text
    public = serialization.load_pem_public_key(pem.encode())
    request = json.dumps({"activationKey": key, "hardwareId": HW, "productName": "Desktop App"}).encode()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    payload = base64.b64encode(public.encrypt(request, oaep)).decode()

    r = await client.post("/api/license/validate-encrypted", json={"payload": payload}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    sealed = r.json()
    assert sealed["alg"] == "RS256" and sealed["kid"]
    body, signature = base64.b64decode(sealed["payload"]), base64.b64decode(sealed["signature"])
    public.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())  # raises if forged
    answer = json.loads(body)
    assert answer["isValid"] is True and answer["status"] == "licensed" and answer["features"] == ["Export", "Sync"]
    with pytest.raises(InvalidSignature):  # an altered answer does not verify
        public.verify(signature, body.replace(b'"isValid":true', b'"isValid":fals'), padding.PKCS1v15(),
                      hashes.SHA256())

    # another tenant's key cannot open it; a block that is not JSON is a clean 400
    r = await client.post("/api/license/validate-encrypted", json={"payload": payload}, headers=other_tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "decryption_failed"
    not_json = base64.b64encode(public.encrypt(b"hello", oaep)).decode()
    r = await client.post("/api/license/validate-encrypted", json={"payload": not_json}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_payload"
