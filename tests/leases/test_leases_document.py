"""Floating-license answers, checked field by field against the ExaLicense README."""

from __future__ import annotations

from conftest import make_product

VALID_FOR = [{"product": "CAD", "productDescription": "", "features": [{"feature": "render", "featureDescription": ""}]}]


async def _floating_key(client, tenant, limit: int = 1) -> str:
    product = await make_product(client, tenant.headers, name="CAD", features=("render", "export"))
    customer = (await client.post("/api/customers", json={"name": "Initech"}, headers=tenant.headers)).json()
    r = await client.post("/api/floating/keys", json={"customerId": customer["id"], "leaseLimit": limit,
                                                      "products": [{"productId": product, "features": ["render"]}]},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["key"]


async def test_every_listed_field_is_present_null_where_it_does_not_apply(client, tenant, clock):
    """README, lease/obtain: "success, errorCode (ErrorCode || null), lease (String || null),
    expiry (Date || null), validFor ([Object] || null): Products/ features that this lease is
    valid for"; lease/validate: "isValid, errorCode, expiry, validFor"; lease/renew: "success,
    errorCode, expiry, lease"; lease/release: "success, errorCode"; key/validate: "isValid,
    expiry, leaseLimit, leasesUsed, validFor ([Object] || [])"."""
    org = f"/licensing/{tenant.id}"
    key = await _floating_key(client, tenant)

    obtained = (await client.post(f"{org}/lease/obtain", json={"key": key, "expiry": 60})).json()
    assert obtained["success"] is True and obtained["errorCode"] is None and obtained["lease"]
    assert obtained["expiry"] and obtained["validFor"] == VALID_FOR
    assert obtained["leaseLimit"] == 1 and obtained["leasesUsed"] == 1

    full = (await client.post(f"{org}/lease/obtain", json={"key": key})).json()
    assert full == {"success": False, "errorCode": "LEASE_LIMIT_REACHED", "lease": None, "expiry": None,
                    "validFor": None, "leasesUsed": 1, "leaseLimit": 1}  # the counts are what this failure is about
    unknown = (await client.post(f"{org}/lease/obtain", json={"key": "AAAA-BBBB-CCCC-DDDD"})).json()
    assert unknown == {"success": False, "errorCode": "KEY_INVALID", "lease": None, "expiry": None,
                       "validFor": None, "leasesUsed": None, "leaseLimit": None}

    lease = obtained["lease"]
    valid = (await client.get(f"{org}/lease/validate", params={"lease": lease})).json()
    assert valid == {"isValid": True, "errorCode": None, "expiry": obtained["expiry"], "validFor": VALID_FOR}

    key_valid = (await client.get(f"{org}/key/validate", params={"key": key})).json()
    assert key_valid["isValid"] is True and key_valid["errorCode"] is None and key_valid["validFor"] == VALID_FOR
    assert key_valid["expiry"] is None and key_valid["leaseLimit"] == 1 and key_valid["leasesUsed"] == 1
    key_invalid = (await client.get(f"{org}/key/validate", params={"key": "AAAA-BBBB-CCCC-DDDD"})).json()
    assert key_invalid == {"isValid": False, "errorCode": "KEY_INVALID", "expiry": None, "leaseLimit": None,
                           "leasesUsed": None, "validFor": []}

    renewed = (await client.post(f"{org}/lease/renew", json={"lease": lease, "expiry": 60})).json()
    assert renewed["success"] is True and renewed["errorCode"] is None and renewed["lease"] and renewed["expiry"]
    stale = (await client.post(f"{org}/lease/renew", json={"lease": lease})).json()
    assert stale == {"success": False, "errorCode": "LEASE_INVALID", "expiry": None, "lease": None}
    stale_check = (await client.get(f"{org}/lease/validate", params={"lease": lease})).json()
    assert stale_check == {"isValid": False, "errorCode": "LEASE_INVALID", "expiry": None, "validFor": None}

    released = (await client.post(f"{org}/lease/release", json={"lease": renewed["lease"]})).json()
    assert released == {"success": True, "errorCode": None}
    clock.advance(120)
    gone = (await client.get(f"{org}/lease/validate", params={"lease": renewed["lease"]})).json()
    assert gone["isValid"] is False and gone["validFor"] is None and gone["expiry"] is None
