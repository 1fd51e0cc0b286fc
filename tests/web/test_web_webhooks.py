"""The admin webhooks pages through HTTP, against a real loopback receiver: endpoints (create with
the secret shown once, edit, disable / enable, delete), ping, the delivery log and its filter, a
delivery's request and responses, redeliver, secret rotation; tenant isolation. (CSRF on these
forms: test_web_admin_more.py.)"""

from __future__ import annotations

import html
import re

from web_helpers import secret_of, sign_in_admin, sql_value

from conftest import running_app
from quota_gateway.events import jobs


async def _follow(client, response) -> str:
    assert response.status_code == 303, response.text
    return (await client.get(response.headers["location"])).text


async def _create(client, base: str, form: str, url: str, events: list[str]) -> tuple[str, str]:
    """Add an endpoint through the page; (its page's address, the secret shown once)."""
    made = await client.post(f"{base}/webhooks", data={"csrf_token": form, "url": url, "events": events,
                                                       "description": "billing system"})
    assert made.status_code == 200 and "shown this once" in made.text, made.text
    secret = secret_of(made.text)
    endpoint_url = re.search(rf'href="({base}/webhooks/\d+)"', made.text).group(1)
    return endpoint_url, secret


async def test_endpoint_ping_log_detail_redeliver_and_rotation(app, client, settings, tenant, clock, webhook_receiver):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    assert "No webhook endpoints yet" in (await client.get(f"{base}/webhooks")).text
    endpoint_url, secret = await _create(client, base, form, webhook_receiver.url, ["license.created"])
    assert secret.startswith("whsec_")
    webhook_receiver.secrets.append(secret)
    listing = await client.get(f"{base}/webhooks")
    assert webhook_receiver.url in listing.text and secret[:10] in listing.text and secret not in listing.text
    assert "license.created" in listing.text and "none yet" in listing.text
    page = await client.get(endpoint_url)
    assert "billing system" in page.text and secret not in page.text and "No deliveries" in page.text

    pinged = await client.post(f"{endpoint_url}/ping", data={"csrf_token": form})
    detail = await _follow(client, pinged)
    assert re.search(r"Ping delivered: HTTP 200 in \d+ ms", detail)
    arrival = (await webhook_receiver.wait_for(1))[0]
    assert arrival.event_type == "webhook.ping" and arrival.exiso_ok
    # The detail shows the request as sent: the very body bytes and signature headers.
    body = re.search(r'<pre class="http" id="request-body">([^<]*)</pre>', detail).group(1)
    assert html.unescape(body).encode() == arrival.body
    assert f"X-Webhook-Signature: {arrival.headers['x-webhook-signature']}" in html.unescape(detail)
    assert "receiver says 200" in detail and "Attempt 1" in detail
    delivery_url = pinged.headers["location"]
    listing = await client.get(f"{base}/webhooks")
    assert "succeeded</span> HTTP 200" in listing.text

    # Redeliver: one more attempt of the same event, sent by the job queue.
    r = await client.post(f"{delivery_url}/redeliver", data={"csrf_token": form})
    assert "Redelivery queued" in await _follow(client, r)
    await jobs.run_due(app.state.services)
    second = (await webhook_receiver.wait_for(2))[1]
    assert second.json["id"] == arrival.json["id"] and second.body == arrival.body
    detail = (await client.get(delivery_url)).text
    assert "Attempt 2" in detail and "manual" in detail

    # A failing attempt shows in the log; the status filter tells them apart.
    webhook_receiver.fail_next(1, status=503)
    failed = await client.post(f"{endpoint_url}/ping", data={"csrf_token": form})
    assert "Ping failed: HTTP 503" in await _follow(client, failed)
    log = (await client.get(endpoint_url)).text
    assert log.count('id="delivery-') == 2 and "HTTP 503" in log
    succeeded = (await client.get(endpoint_url, params={"status": "succeeded"})).text
    assert succeeded.count('id="delivery-') == 1 and "HTTP 503" not in succeeded
    assert (await client.get(endpoint_url, params={"status": "pending"})).text.count('id="delivery-') == 0
    overall = (await client.get(f"{base}/webhooks/deliveries", params={"status": "failed"})).text
    assert overall.count('id="delivery-') == 1 and webhook_receiver.url in overall and "HTTP 503" in overall

    # Rotation: a new secret shown once; both sign during the overlap.
    rotated = await client.post(f"{endpoint_url}/rotate-secret", data={"csrf_token": form,
                                                                        "overlap_seconds": "3600"})
    new_secret = secret_of(rotated.text)
    assert new_secret != secret and "1 hour" in rotated.text
    page = (await client.get(endpoint_url)).text
    assert new_secret[:10] in page and secret[:10] in page and new_secret not in page
    await _follow(client, await client.post(f"{endpoint_url}/ping", data={"csrf_token": form}))
    signatures = (await webhook_receiver.wait_for(4))[3].headers["x-webhook-signature"]
    assert len(signatures.split(",")) == 2


async def test_edit_disable_enable_and_delete(client, settings, tenant, clock, webhook_receiver):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    endpoint_url, _ = await _create(client, base, form, webhook_receiver.url, ["license.created"])
    endpoint_id = int(endpoint_url.rsplit("/", 1)[1])
    r = await client.post(endpoint_url, data={"csrf_token": form, "url": webhook_receiver.url + "?v=2",
                                              "events": ["license.revoked", "ticket.created"], "description": ""})
    assert "Endpoint saved." in await _follow(client, r)
    assert await sql_value(settings, "SELECT events FROM webhook_endpoints WHERE id = $1", endpoint_id) == [
        "license.revoked", "ticket.created"]
    page = (await client.get(endpoint_url)).text
    assert 'value="ticket.created" checked' in page and 'value="license.created" checked' not in page

    r = await client.post(f"{endpoint_url}/enabled", data={"csrf_token": form, "enabled": "0"})
    assert "Endpoint disabled" in await _follow(client, r)
    assert await sql_value(settings, "SELECT enabled FROM webhook_endpoints WHERE id = $1", endpoint_id) is False
    assert "disabled by the tenant" in (await client.get(endpoint_url)).text
    r = await client.post(f"{endpoint_url}/enabled", data={"csrf_token": form, "enabled": "1"})
    assert "Endpoint enabled" in await _follow(client, r)
    assert await sql_value(settings, "SELECT enabled FROM webhook_endpoints WHERE id = $1", endpoint_id) is True

    for bad, message in (({"url": "ftp://example.com/x", "events": ["*"]}, "absolute http"),
                         ({"url": webhook_receiver.url}, "at least one event type"),
                         ({"url": webhook_receiver.url, "events": ["license.exploded"]}, "license.exploded")):
        r = await client.post(f"{base}/webhooks", data={"csrf_token": form, **bad})
        assert message in await _follow(client, r)
    assert await sql_value(settings, "SELECT count(*) FROM webhook_endpoints") == 1

    r = await client.post(f"{endpoint_url}/delete", data={"csrf_token": form})
    assert "Endpoint deleted" in await _follow(client, r)
    assert (await client.get(endpoint_url)).status_code == 404
    assert await sql_value(settings, "SELECT count(*) FROM webhook_endpoints") == 0


async def test_webhook_pages_keep_tenants_apart(settings, tenant, other_tenant, clock, webhook_receiver):
    async with running_app(settings, clock) as (_, client):
        # globex has an endpoint and a delivery (a ping).
        theirs = (await client.post("/api/webhooks", json={"url": webhook_receiver.url + "?globex", "events": ["*"],
                                                           "description": "Globex hook"},
                                    headers=other_tenant.headers)).json()
        delivery = (await client.post(f"/api/webhooks/{theirs['id']}/ping", headers=other_tenant.headers)).json()
        assert delivery["delivered"]
        form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
        base = f"/admin/{tenant.slug}"
        for path in ("/webhooks", "/webhooks/deliveries", "/webhooks/deliveries?status=succeeded"):
            page = await client.get(base + path)
            assert page.status_code == 200 and "globex" not in page.text.lower()
        for path in (f"/webhooks/{theirs['id']}", f"/webhooks/deliveries/{delivery['deliveryId']}"):
            r = await client.get(base + path)
            assert r.status_code == 404 and "globex" not in r.text.lower()
        arrivals = len(webhook_receiver.arrivals)
        for path, data in ((f"/webhooks/{theirs['id']}", {"url": "https://acme.example/", "events": "*"}),
                           (f"/webhooks/{theirs['id']}/enabled", {"enabled": "0"}),
                           (f"/webhooks/{theirs['id']}/rotate-secret", {"overlap_seconds": "0"}),
                           (f"/webhooks/{theirs['id']}/ping", {}),
                           (f"/webhooks/deliveries/{delivery['deliveryId']}/redeliver", {}),
                           (f"/webhooks/{theirs['id']}/delete", {})):
            r = await client.post(base + path, data={"csrf_token": form, **data})
            assert r.status_code == 303 and "whsec_" not in r.text
            assert "no webhook" in (await client.get(r.headers["location"])).text.lower()
        row = await sql_value(settings, "SELECT row(url, enabled) FROM webhook_endpoints WHERE id = $1", theirs["id"])
        assert row == (webhook_receiver.url + "?globex", True)
        assert await sql_value(settings, "SELECT count(*) FROM webhook_secrets WHERE endpoint_id = $1",
                               theirs["id"]) == 1
        assert await sql_value(settings, "SELECT count(*) FROM jobs WHERE kind = 'webhook.deliver'") == 0
        assert len(webhook_receiver.arrivals) == arrivals
