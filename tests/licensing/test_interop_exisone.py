"""The published ExisOne Python SDK (exisone-client 0.10.0), unchanged, against this server over HTTPS."""

from __future__ import annotations

import ssl

import httpx
import pytest
import requests
from exisone import ExisOneClient, ExisOneClientOptions

from conftest import make_tenant

pytestmark = pytest.mark.slow


@pytest.fixture
def https_server(tls_gateway):
    """(base URL, certificate path): the gateway over HTTPS (`serve --dev-tls`, conftest's tls_gateway)."""
    return tls_gateway.url, tls_gateway.ca_file


def _sdk(base: str, cert: str, token: str, public_key: str | None = None) -> ExisOneClient:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides `verify`
    session.verify = cert
    return ExisOneClient(ExisOneClientOptions(base_url=base, access_token=token, offline_public_key=public_key),
                         session=session)


async def test_exisone_sdk_end_to_end(https_server, settings):
    base, cert = https_server
    tenant = await make_tenant(settings.database_url, "sdk")
    admin = httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=cert), headers=tenant.headers)
    product = admin.post("/api/product", json={"name": "SdkApp", "minimumRequiredVersion": "1.0"}).json()
    for feature in ("Pro", "Cloud"):
        admin.post(f"/api/product/{product['id']}/features", json={"name": feature})
    pem = admin.get("/api/crypto/keys/public").text
    sdk = _sdk(base, cert, tenant.token, pem)
    hardware = sdk.generate_hardware_id()

    # generate, activate, validate, features csv, deactivate
    key = sdk.generate_activation_key("SdkApp", "user@example.com", validity_days=30)
    assert len(key) == 19
    activated = sdk.activate(key, "user@example.com", hardware, "SdkApp", version="1.2")
    assert activated.success, activated.error_message
    assert activated.server_version and activated.minimum_required_version == "1.0"
    result = sdk.validate(key, hardware, "SdkApp", version="1.2")
    assert result.is_valid and result.status == "licensed" and result.features == ["Pro", "Cloud"]
    assert result.expiration_date is not None
    assert sdk.get_licensed_features_csv(key) == "Pro,Cloud"
    outdated = sdk.activate(key, "user@example.com", hardware, "SdkApp", version="0.9")
    assert not outdated.success and outdated.error_code == "version_outdated"
    assert outdated.minimum_required_version == "1.0"
    second = sdk.activate(key, "user@example.com", "F" * 64, "SdkApp")
    assert not second.success and second.error_code == "already_activated"
    assert sdk.deactivate(key, hardware, "SdkApp") is True
    assert sdk.validate(key, hardware, "SdkApp").status == "not_activated"
    unknown = sdk.validate("AAAA-BBBB-CCCC-DDDD", hardware, "SdkApp")
    assert not unknown.is_valid and unknown.status == "invalid"

    # seat usage: corporate answers, standard is a 404 the SDK raises on
    corporate = admin.post("/api/licenses", json={"productId": product["id"], "kind": "corporate",
                                                  "maxSeats": 3}).json()["activationKey"]
    assert sdk.activate(corporate, "a@example.com", hardware, "SdkApp").success
    usage = sdk.get_seat_usage(corporate)
    assert (usage.current_seats, usage.max_seats, usage.has_capacity, usage.is_unlimited) == (1, 3, True, False)
    with pytest.raises(requests.HTTPError) as raised:
        sdk.get_seat_usage(key)
    assert raised.value.response.status_code == 404

    # support ticket: the SDK's call succeeds and the ticket is there for the publisher's staff
    # (with a token holding only the `email` permission, as the SDK document asks)
    email_token = admin.post("/api/tokens", json={"name": "app", "scopes": ["email"]}).json()["token"]
    assert _sdk(base, cert, email_token).send_support_ticket("SdkApp", "user@example.com", "Help", "It broke") is None
    [ticket] = admin.get("/api/support/tickets").json()["items"]
    assert (ticket["productId"], ticket["email"], ticket["subject"]) == (product["id"], "user@example.com", "Help")

    # offline codes issued here verify in the SDK; smart validation for both kinds of key
    offline_key = admin.post("/api/licenses", json={"productId": product["id"], "validityDays": 10}).json()
    code = admin.post("/api/license/offline-code", json={"activationKey": offline_key["activationKey"],
                                                         "hardwareId": hardware}).json()["offlineCode"]
    offline = sdk.validate_offline(code, hardware)
    assert offline.is_valid and offline.features == ["Pro", "Cloud"] and offline.product_name == "SdkApp"
    smart_offline = sdk.validate_smart(code, hardware)
    assert smart_offline.is_valid and smart_offline.was_offline and smart_offline.status == "licensed"
    assert not sdk.validate_smart(code, "0" * 64).is_valid
    assert sdk.activate(corporate, "a@example.com", "E" * 64, "SdkApp").success
    smart_online = sdk.validate_smart(corporate, "E" * 64, "SdkApp")
    assert smart_online.is_valid and not smart_online.was_offline and smart_online.status == "licensed"

    # a token of another tenant sees none of it
    stranger = await make_tenant(settings.database_url, "stranger")
    other = _sdk(base, cert, stranger.token)
    assert other.validate(corporate, "E" * 64, "SdkApp").status == "invalid"
    assert not other.activate(corporate, "x@example.com", "D" * 64, "SdkApp").success


async def test_exisone_sdk_deactivate_smart_and_permission_table(https_server, settings):
    """deactivate_smart "Attempts to notify the server": with an offline code this server issued,
    it reaches the server and frees the seat. The Python SDK document's permission table: activate
    and deactivate need a valid token (no specific scope), validate `verify`,
    generate_activation_key `generate`, send_support_ticket `email`."""
    base, cert = https_server
    tenant = await make_tenant(settings.database_url, "perms")
    admin = httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=cert), headers=tenant.headers)
    product = admin.post("/api/product", json={"name": "PermApp"}).json()
    admin.post(f"/api/product/{product['id']}/features", json={"name": "Pro"})
    pem = admin.get("/api/crypto/keys/public").text

    # deactivate_smart with an offline code: server notified, seat released
    admin_sdk = _sdk(base, cert, tenant.token, pem)
    hardware = admin_sdk.generate_hardware_id()
    key = admin.post("/api/licenses", json={"productId": product["id"], "kind": "corporate",
                                            "maxSeats": 1}).json()["activationKey"]
    code = admin.post("/api/license/offline-code", json={"activationKey": key,
                                                         "hardwareId": hardware}).json()["offlineCode"]
    assert admin_sdk.validate_smart(code, hardware).is_valid
    assert admin_sdk.get_seat_usage(key).current_seats == 1
    released = admin_sdk.deactivate_smart(code, hardware, "PermApp")
    assert released.success and released.server_notified, released.error_message
    assert admin_sdk.get_seat_usage(key).current_seats == 0
    assert admin_sdk.activate(key, "u@example.com", "C" * 64, "PermApp").success  # the seat is free again

    def token(scopes: list[str]) -> str:
        made = admin.post("/api/tokens", json={"name": "+".join(scopes), "scopes": scopes})
        assert made.status_code == 201, made.text
        return made.json()["token"]

    generate_only = _sdk(base, cert, token(["generate"]))
    verify_only = _sdk(base, cert, token(["verify"]))
    email_only = _sdk(base, cert, token(["email"]))

    new_key = generate_only.generate_activation_key("PermApp", "u@example.com")
    assert email_only.activate(new_key, "u@example.com", hardware, "PermApp").success  # any valid token
    assert generate_only.deactivate(new_key, hardware, "PermApp") is True
    assert verify_only.validate(new_key, hardware, "PermApp").status == "not_activated"
    for forbidden in (lambda: generate_only.validate(new_key, hardware, "PermApp"),
                      lambda: verify_only.generate_activation_key("PermApp", "u@example.com"),
                      lambda: verify_only.send_support_ticket("PermApp", "u@example.com", "Help", "It broke")):
        with pytest.raises(requests.HTTPError) as raised:
            forbidden()
        assert raised.value.response.status_code == 403
    # With `email` the ticket is sent.
    assert email_only.send_support_ticket("PermApp", "u@example.com", "Help", "It broke") is None
