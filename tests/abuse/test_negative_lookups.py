"""A failed lookup reaches PostgreSQL once per negative-cache window, on every unauthenticated
surface: unknown tenant slugs on the portal, the admin UI and the payment receivers, unknown
sign-in e-mail addresses. Counted from PostgreSQL's own statistics (pg_reads). Creating the
tenant, admin or customer drops the entry at once: nothing answers "unknown" after the creation."""

from __future__ import annotations

import argparse
import asyncio

from conftest import TEST_MASTER_KEY, db_connection, make_product, running_app
from pg_reads import table_reads
from quota_gateway import cli
from quota_gateway.abuse import negative
from web.web_helpers import csrf_of, sign_in_admin


async def _refused_requests(database_url: str, email: str) -> int:
    async with db_connection(database_url) as conn:
        return await conn.fetchval("SELECT count(*) FROM web_login_codes WHERE email = $1 AND code_digest = ''", email)


async def _codes_issued(database_url: str, email: str) -> int:
    async with db_connection(database_url) as conn:
        return await conn.fetchval("SELECT count(*) FROM web_login_codes WHERE email = $1 AND code_digest <> ''",
                                   email)


def _cli_env(monkeypatch, settings) -> None:
    monkeypatch.setenv("QG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("QG_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("QG_MASTER_KEY", TEST_MASTER_KEY)


async def test_an_unknown_portal_or_admin_slug_reaches_postgres_once(client, settings, tenant):
    before = await table_reads(settings.database_url, "tenants")
    assert (await client.get("/portal/nosuchslug/login")).status_code == 404
    first = await table_reads(settings.database_url, "tenants", above=before)
    assert first > before  # the first guess was looked up (so the counter sees these lookups)
    for path in ["/portal/nosuchslug/login"] * 4 + ["/admin/nosuchslug/login", "/portal/nosuchslug/"]:
        assert (await client.get(path)).status_code == 404
    assert await table_reads(settings.database_url, "tenants") == first
    assert (await client.get(f"/portal/{tenant.slug}/login")).status_code == 200  # a known slug still answers


async def test_an_unknown_receiver_slug_reaches_postgres_once(client, settings, tenant):
    before = await table_reads(settings.database_url, "tenants")
    r = await client.post("/hooks/stripe/nosuchslug", content=b"{}", headers={"stripe-signature": "t=1,v1=00"})
    assert r.status_code == 404 and r.json()["error"] == "not_configured"
    first = await table_reads(settings.database_url, "tenants", above=before)
    assert first > before
    for provider in ("stripe", "stripe", "stripe", "stripe", "paypal"):
        r = await client.post(f"/hooks/{provider}/nosuchslug", content=b"{}")
        assert r.status_code == 404 and r.json()["error"] == "not_configured"
    assert await table_reads(settings.database_url, "tenants") == first


async def test_a_tenant_created_after_a_guess_answers_at_once(client, settings, monkeypatch):
    assert (await client.get("/portal/newco/login")).status_code == 404
    assert (await client.get("/licensing/newco/signature.pem")).status_code == 404
    _cli_env(monkeypatch, settings)
    await asyncio.to_thread(cli.tenant, argparse.Namespace(action="create", slug="newco", name="New Co"))
    assert (await client.get("/portal/newco/login")).status_code == 200
    assert (await client.get("/licensing/newco/signature.pem")).status_code == 200


async def _ask_for_code(client, base: str, email: str):
    form = csrf_of((await client.get(f"{base}/login")).text)
    r = await client.post(f"{base}/login", data={"csrf_token": form, "email": email})
    assert r.status_code == 200 and "has access" in r.text  # the same answer whoever asks
    return r


async def test_an_unknown_sign_in_address_reaches_postgres_once(client, settings, tenant):
    base, email = f"/portal/{tenant.slug}", "stranger@example.com"
    lookups = ("licenses", "api_licenses", "admin_users")
    before = await table_reads(settings.database_url, *lookups)
    await _ask_for_code(client, base, email)
    first = await table_reads(settings.database_url, *lookups, above=before)
    assert first > before and await _refused_requests(settings.database_url, email) == 1
    for _ in range(4):
        await _ask_for_code(client, base, "  Stranger@Example.com ")
    assert await table_reads(settings.database_url, *lookups) == first
    assert await _refused_requests(settings.database_url, email) == 1  # nothing more written either
    # the admin UI's sign-in is a lookup of its own (another table, another answer)
    await _ask_for_code(client, f"/admin/{tenant.slug}", email)
    assert await _refused_requests(settings.database_url, email) == 2


async def test_a_new_customer_signs_in_at_once(client, settings, tenant):
    base = f"/portal/{tenant.slug}"
    product = await make_product(client, tenant.headers, name="Desk App")
    await _ask_for_code(client, base, "buyer@example.com")
    await _ask_for_code(client, base, "api-user@example.com")
    r = await client.post("/api/licenses", headers=tenant.headers,
                          json={"productId": product, "email": "Buyer@Example.com", "kind": "standard"})
    assert r.status_code == 201, r.text
    r = await client.post("/api/apilicense", headers=tenant.headers,
                          json={"productId": product, "email": "api-user@example.com", "clientName": "c",
                                "clientIdentifier": "c-1"})
    assert r.status_code == 201, r.text
    for email in ("buyer@example.com", "api-user@example.com"):
        await _ask_for_code(client, base, email)
        assert await _codes_issued(settings.database_url, email) == 1, email


async def test_a_new_admin_signs_in_at_once(client, settings, tenant, clock, monkeypatch):
    base = f"/admin/{tenant.slug}"
    for email in ("web-added@example.com", "cli-added@example.com"):
        await _ask_for_code(client, base, email)
        assert await _refused_requests(settings.database_url, email) == 1
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    r = await client.post(f"{base}/settings/admins", data={"csrf_token": form, "email": "web-added@example.com"})
    assert r.status_code == 303
    _cli_env(monkeypatch, settings)
    await asyncio.to_thread(cli.admin, argparse.Namespace(action="create", tenant=tenant.slug,
                                                          email="cli-added@example.com"))
    client.cookies.clear()
    for email in ("web-added@example.com", "cli-added@example.com"):
        await _ask_for_code(client, base, email)
        assert await _codes_issued(settings.database_url, email) == 1, email


async def test_a_creation_racing_a_lookup_leaves_no_stale_entry(app):
    """The lookup read PostgreSQL before the creation committed and caches "missing" after the
    creation dropped the entry: the marker the creation left wins."""
    redis = app.state.services.redis
    entry = negative.tenant("racing")
    await negative.forget(redis, entry)            # the creation
    await negative.remember_missing(redis, entry)  # the late lookup
    assert not await negative.is_missing(redis, entry)
    fresh = negative.tenant("never-made")
    await negative.remember_missing(redis, fresh)
    assert await negative.is_missing(redis, fresh)


async def test_an_unconfigured_receiver_of_a_known_tenant_reaches_postgres_once(client, settings, clock, tenant,
                                                                               other_tenant):
    """A known tenant without Stripe or PayPal: its receiver reads payment_settings once per window,
    and configuring the provider through another gateway process answers at once everywhere."""
    stripe_hook, unsigned = f"/hooks/stripe/{tenant.slug}", {"stripe-signature": "t=1,v1=00"}
    before = await table_reads(settings.database_url, "payment_settings")
    r = await client.post(stripe_hook, content=b"{}", headers=unsigned)
    assert r.status_code == 404 and r.json()["error"] == "not_configured"
    first = await table_reads(settings.database_url, "payment_settings", above=before)
    assert first == before + 1
    for _ in range(4):
        r = await client.post(stripe_hook, content=b"{}", headers=unsigned)
        assert r.status_code == 404 and r.json()["error"] == "not_configured"
    assert await table_reads(settings.database_url, "payment_settings") == first
    # PayPal of this tenant and Stripe of another are entries of their own
    for hook in (f"/hooks/paypal/{tenant.slug}", f"/hooks/stripe/{other_tenant.slug}"):
        r = await client.post(hook, content=b"{}", headers=unsigned)
        assert r.status_code == 404 and r.json()["error"] == "not_configured"
    assert await table_reads(settings.database_url, "payment_settings", above=first) == first + 2

    async with running_app(settings, clock) as (_, elsewhere):
        r = await elsewhere.put("/api/payments/stripe", headers=tenant.headers,
                                json={"webhookSecret": "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH", "mappings": []})
        assert r.status_code == 200, r.text
    r = await client.post(stripe_hook, content=b"{}", headers=unsigned)  # configured: the signature is checked
    assert r.status_code == 400 and r.json()["error"] == "invalid_signature"
    r = await client.post(f"/hooks/stripe/{other_tenant.slug}", content=b"{}", headers=unsigned)
    assert r.status_code == 404 and r.json()["error"] == "not_configured"
