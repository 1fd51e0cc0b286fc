"""The web pages fed what a careless or hostile browser sends: digits of other scripts, numbers too
long for int(), NUL characters (PostgreSQL text refuses them). Every one is a 404 page, a 400 page
or a flash message on the form's page; never a 500, never a row written."""

from __future__ import annotations

import pytest
from web_helpers import csrf_of, sign_in_admin, sql_value

# '²' passes str.isdigit() but int() refuses it; '١' (Arabic-Indic one) int() reads as 1; int()
# refuses more than 4300 digits.
ODD_DIGITS = ["%C2%B2", "%D9%A1", "9" * 5000]


# An id that is not ASCII digits names no object (404); an odd page number shows the first page.
ODD_URLS = [*((f"{path}/{odd}", 404) for path in ("products", "licenses", "api-keys", "floating", "tickets",
                                                 "webhooks", "webhooks/deliveries") for odd in ODD_DIGITS),
            *((f"{listing}{odd}", 200) for listing in ("licenses?page=", "api-keys?page=", "tickets?page=",
                                                       "webhooks/deliveries?before=") for odd in ODD_DIGITS)]


@pytest.mark.parametrize("url, status", ODD_URLS)
async def test_odd_digits_in_ids_and_page_numbers(client, settings, tenant, clock, url, status):
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    r = await client.get(f"/admin/{tenant.slug}/{url}")
    assert r.status_code == status, r.text[:300]


async def _flash_after(client, response) -> str:
    assert response.status_code == 303, response.text[:300]
    return (await client.get(response.headers["location"])).text


@pytest.mark.parametrize("odd", ["²", "١", "9" * 5000])
async def test_a_form_number_that_is_not_ascii_digits_is_a_flash_error(client, settings, tenant, clock, odd):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    r = await client.post(f"/admin/{tenant.slug}/products", data={"csrf_token": form, "name": "Desk",
                                                                  "trial_days": odd})
    assert "trial days: a whole number from 0 to 3650" in await _flash_after(client, r)
    assert await sql_value(settings, "SELECT count(*) FROM products") == 0


@pytest.mark.parametrize("path, fields", [
    ("products", {"name": "Desk\x00App"}),
    ("products", {"name": "Desk", "description": "a\x00b"}),
    ("plans", {"name": "Year\x00"}),
    ("floating/customers", {"name": "Cust\x00"}),
    ("settings/branding", {"display_name": "Acme\x00"}),
])
async def test_nul_in_a_form_field_is_a_flash_error(client, settings, tenant, clock, path, fields):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    r = await client.post(f"/admin/{tenant.slug}/{path}", data={"csrf_token": form, **fields})
    assert "must not contain NUL characters" in await _flash_after(client, r)
    for table in ("products", "plans", "customers", "tenant_branding"):
        assert await sql_value(settings, f"SELECT count(*) FROM {table}") == 0


@pytest.mark.parametrize("audience", ["admin", "portal"])
async def test_nul_in_the_sign_in_forms_is_a_flash_error(client, tenant, audience):
    page = await client.get(f"/{audience}/{tenant.slug}/login")
    form = csrf_of(page.text)
    for path, fields in (("login", {"email": "a\x00@example.com"}),
                         ("login/code", {"email": "a\x00@example.com", "code": "123456"})):
        r = await client.post(f"/{audience}/{tenant.slug}/{path}", data={"csrf_token": form, **fields})
        assert "must not contain NUL characters" in await _flash_after(client, r)


async def test_nul_in_a_search_is_a_400_page(client, settings, tenant, clock):
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    for listing in ("licenses", "api-keys"):
        r = await client.get(f"/admin/{tenant.slug}/{listing}", params={"q": "a\x00b"})
        assert r.status_code == 400 and "must not contain NUL characters" in r.text, r.text[:300]


@pytest.mark.parametrize("path", ["/admin/a%00b/login", "/portal/a%00b/login", "/portal/a%00b/brand.css"])
async def test_a_tenant_name_with_nul_is_not_found(client, path):
    assert (await client.get(path)).status_code == 404


async def test_a_form_without_content_length_is_read_only_up_to_the_bound(client, tenant):
    """A chunked POST names no length: it was read whole (any size, before the CSRF check) and only
    then refused."""
    from quota_gateway.web.pages import MAX_FORM_BYTES

    chunk, sent = 64 * 1024, []

    async def body():
        yield b"csrf_token=x"
        for number in range(64):  # 4 MB in fields below Starlette's own bound on one field
            sent.append(chunk)
            yield b"&f%d=" % number + b"a" * chunk

    r = await client.post(f"/admin/{tenant.slug}/login", content=body(),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and "too large" in r.text
    assert sum(sent) <= MAX_FORM_BYTES + chunk


async def test_nul_in_a_path_is_refused(client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    r = await client.post(f"/admin/{tenant.slug}/tokens/a%00b/revoke", data={"csrf_token": form})
    assert "must not contain NUL characters" in await _flash_after(client, r)
