"""The web front end through HTTP: sign-in, CSRF, cookie flags, tenant isolation, idle timeout, code brute force."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import asyncpg
import pytest
from web_helpers import KEYS, csrf_of, make_admin_link, portal_cookie, sign_in_admin, sql_value, with_db

from conftest import TEST_MASTER_KEY, make_tenant, running_app
from quota_gateway.web import signin


async def test_link_get_consumes_nothing_and_post_signs_in_once(client, settings, tenant, clock):
    token = await make_admin_link(settings.database_url, tenant.id, "owner@example.com", clock)
    url = f"/admin/{tenant.slug}/login/link"
    assert (await client.head(url, params={"token": token})).status_code == 200   # mail scanners
    page = await client.get(url, params={"token": token})
    assert page.status_code == 200 and "Continue and sign in" in page.text
    r = await client.post(url, data={"csrf_token": csrf_of(page.text), "token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/{tenant.slug}/"
    dashboard = await client.get(f"/admin/{tenant.slug}/")
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
    client.cookies.clear()
    page = await client.get(url, params={"token": token})
    again = await client.post(url, data={"csrf_token": csrf_of(page.text), "token": token})
    assert again.status_code == 303 and again.headers["location"].endswith("/login")   # single use
    assert (await client.get(f"/admin/{tenant.slug}/")).status_code == 303


async def test_link_expires(client, settings, tenant, clock):
    token = await make_admin_link(settings.database_url, tenant.id, "owner@example.com", clock)
    clock.advance(signin.LINK_TTL.total_seconds() + 1)
    page = await client.get(f"/admin/{tenant.slug}/login/link", params={"token": token})
    r = await client.post(f"/admin/{tenant.slug}/login/link", data={"csrf_token": csrf_of(page.text), "token": token})
    assert r.headers["location"].endswith("/login")


async def test_post_without_csrf_token_is_refused(client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    r = await client.post(f"/admin/{tenant.slug}/products", data={"name": "Sneaky"})
    assert r.status_code == 403
    r = await client.post(f"/admin/{tenant.slug}/products", data={"name": "Sneaky", "csrf_token": "0" * 64})
    assert r.status_code == 403
    ok = await client.post(f"/admin/{tenant.slug}/products", data={"name": "Honest", "csrf_token": form})
    assert ok.status_code == 303
    listing = await client.get(f"/admin/{tenant.slug}/products")
    assert "Honest" in listing.text and "Sneaky" not in listing.text


async def test_token_of_another_browser_is_refused(client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    client.cookies.set("qg_csrf", "another-browsers-seed-value-0123456789")
    r = await client.post(f"/admin/{tenant.slug}/products", data={"name": "X", "csrf_token": form})
    assert r.status_code == 403


async def test_cookie_flags(client, settings, tenant, clock):
    token = await make_admin_link(settings.database_url, tenant.id, "owner@example.com", clock)
    page = await client.get(f"/admin/{tenant.slug}/login/link", params={"token": token})
    csrf_cookie = page.headers["set-cookie"].lower()
    assert "httponly" in csrf_cookie and "samesite=strict" in csrf_cookie
    r = await client.post(f"/admin/{tenant.slug}/login/link", data={"csrf_token": csrf_of(page.text), "token": token})
    session_cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("qg_admin=")).lower()
    assert "httponly" in session_cookie and "samesite=strict" in session_cookie
    assert f"path=/admin/{tenant.slug}" in session_cookie
    assert "secure" not in session_cookie   # plain HTTP here; see the TLS test
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["referrer-policy"] == "no-referrer"


async def test_cookies_are_secure_under_tls(app, settings, tenant, clock):
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as tls_client:
        token = await make_admin_link(settings.database_url, tenant.id, "owner@example.com", clock)
        page = await tls_client.get(f"/admin/{tenant.slug}/login/link", params={"token": token})
        assert "secure" in page.headers["set-cookie"].lower()
        r = await tls_client.post(f"/admin/{tenant.slug}/login/link",
                                  data={"csrf_token": csrf_of(page.text), "token": token})
        session_cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("qg_admin=")).lower()
        assert "secure" in session_cookie


async def test_session_of_tenant_a_is_refused_on_tenant_b(client, settings, tenant, other_tenant, clock):
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    cookie = client.cookies.get("qg_admin", path=f"/admin/{tenant.slug}")
    assert cookie
    # Present acme's session cookie on globex's pages, as a browser never would but an attacker could.
    client.cookies.set("qg_admin", cookie, path=f"/admin/{other_tenant.slug}")
    for path in ("/", "/licenses", "/tokens"):
        r = await client.get(f"/admin/{other_tenant.slug}{path}")
        assert r.status_code == 303 and r.headers["location"] == f"/admin/{other_tenant.slug}/login", path
    # An admin session is no portal session either.
    client.cookies.set("qg_portal", cookie, path=f"/portal/{tenant.slug}")
    assert (await client.get(f"/portal/{tenant.slug}/")).status_code == 303


async def test_objects_of_another_tenant_are_not_found(client, settings, tenant, other_tenant, clock):
    product = await sql_value(settings, "INSERT INTO products (tenant_id, name) VALUES ($1, 'Globex Secret') "
                                        "RETURNING id", other_tenant.id)
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    r = await client.get(f"/admin/{tenant.slug}/products/{product}")
    assert r.status_code == 404 and "Globex Secret" not in r.text
    r = await client.post(f"/admin/{tenant.slug}/licenses", data={"csrf_token": form, "product_id": str(product)})
    assert r.status_code == 303   # refused with a message, nothing made
    assert await sql_value(settings, "SELECT count(*) FROM licenses") == 0


async def test_logout_ends_the_session(client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    cookie = client.cookies.get("qg_admin", path=f"/admin/{tenant.slug}")
    r = await client.post(f"/admin/{tenant.slug}/logout", data={"csrf_token": form})
    assert r.status_code == 303
    client.cookies.set("qg_admin", cookie, path=f"/admin/{tenant.slug}")   # a copy kept by a thief
    assert (await client.get(f"/admin/{tenant.slug}/")).status_code == 303


async def test_idle_timeout(client, settings, tenant, clock):
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    clock.advance(29 * 60)
    assert (await client.get(f"/admin/{tenant.slug}/")).status_code == 200   # use keeps it alive
    clock.advance(29 * 60)
    assert (await client.get(f"/admin/{tenant.slug}/")).status_code == 200
    clock.advance(31 * 60)
    assert (await client.get(f"/admin/{tenant.slug}/")).status_code == 303


async def test_forged_session_cookie_is_refused(client, tenant):
    client.cookies.set("qg_admin", "bm90LWEtc2Vzc2lvbg.forged", path=f"/admin/{tenant.slug}")
    assert (await client.get(f"/admin/{tenant.slug}/")).status_code == 303


async def test_unknown_tenant_is_404(client):
    assert (await client.get("/admin/nobody/login")).status_code == 404
    assert (await client.get("/portal/nobody/login")).status_code == 404


# --- codes ---------------------------------------------------------------------------------------

async def _issue(settings, tenant_id, email, clock, client_addr="203.0.113.9", audience="portal"):
    return await with_db(settings.database_url, lambda conn: signin.issue_code(
        conn, KEYS, clock.utcnow(), tenant_id=tenant_id, audience=audience, email=email, client=client_addr))


async def _redeem(settings, tenant_id, email, code, clock, audience="portal"):
    return await with_db(settings.database_url, lambda conn: signin.redeem_code(
        conn, KEYS, clock.utcnow(), tenant_id=tenant_id, audience=audience, email=email, code=code))


async def test_code_is_single_use_and_expires(settings, tenant, clock):
    _, code = await _issue(settings, tenant.id, "c@example.com", clock)
    assert await _redeem(settings, tenant.id, "C@Example.com", code, clock)
    assert not await _redeem(settings, tenant.id, "c@example.com", code, clock)
    _, code = await _issue(settings, tenant.id, "c@example.com", clock)
    clock.advance(signin.CODE_TTL.total_seconds() + 1)
    assert not await _redeem(settings, tenant.id, "c@example.com", code, clock)


async def test_code_brute_force_is_stopped(settings, tenant, clock):
    _, code = await _issue(settings, tenant.id, "c@example.com", clock)
    wrong = [f"{(int(code) + i) % 1_000_000:06d}" for i in range(1, signin.MAX_TRIES + 1)]
    for guess in wrong:
        assert not await _redeem(settings, tenant.id, "c@example.com", guess, clock)
    # The right code no longer works after MAX_TRIES wrong guesses.
    assert not await _redeem(settings, tenant.id, "c@example.com", code, clock)
    # And the guesser cannot get unlimited fresh codes for the address.
    for _ in range(signin.CODES_PER_ADDRESS_HOUR - 1):
        await _issue(settings, tenant.id, "c@example.com", clock)
    from quota_gateway.errors import ApiError

    with pytest.raises(ApiError) as refused:
        await _issue(settings, tenant.id, "c@example.com", clock)
    assert refused.value.code == "too_many_codes"
    clock.advance(3601)
    await _issue(settings, tenant.id, "c@example.com", clock)


async def test_codes_per_client_address_are_bounded(settings, tenant, clock):
    from quota_gateway.errors import ApiError

    for i in range(signin.CODES_PER_CLIENT_HOUR):
        await _issue(settings, tenant.id, f"p{i}@example.com", clock, client_addr="198.51.100.7")
    with pytest.raises(ApiError):
        await _issue(settings, tenant.id, "fresh@example.com", clock, client_addr="198.51.100.7")
    await _issue(settings, tenant.id, "fresh@example.com", clock, client_addr="198.51.100.8")


async def test_code_request_page_does_not_tell_who_has_access(client, settings, tenant, clock):
    page = await client.get(f"/portal/{tenant.slug}/login")
    form = csrf_of(page.text)
    known = await client.post(f"/portal/{tenant.slug}/login", data={"csrf_token": form, "email": "nobody@example.com"})
    assert known.status_code == 200 and "If <strong>nobody@example.com</strong> has access" in known.text


async def test_codes_are_stored_as_keyed_digests(settings, tenant, clock):
    _, code = await _issue(settings, tenant.id, "c@example.com", clock)
    stored = bytes(await sql_value(settings, "SELECT code_digest FROM web_login_codes"))
    assert code.encode() not in stored and len(stored) == 32


async def test_admin_cli_creates_an_admin(settings, clock):
    other = await make_tenant(settings.database_url, "initech")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await signin.create_admin(conn, other.id, " Boss@Initech.example ", clock.utcnow())
        assert await signin.find_admin(conn, other.id, "boss@initech.example")
    finally:
        await conn.close()


def _cli(settings, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QG_")}
    env.update(QG_DATABASE_URL=settings.database_url, QG_REDIS_URL=settings.redis_url, QG_MASTER_KEY=TEST_MASTER_KEY,
               QG_PUBLIC_URL="https://licenses.gateway.example")
    done = subprocess.run([sys.executable, "-m", "quota_gateway.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "Redis unreachable" not in done.stderr, done.stderr
    return done.stdout


async def test_admin_cli_create_link_and_list(client, settings, tenant, clock):
    """`quota-gateway admin create --tenant T --email E`, `admin link` and `admin list`, as run by
    an operator: the admin it makes signs in with the link it prints."""
    clock.set(time.time())   # the CLI, another process, dates the link by the real clock
    made = await asyncio.to_thread(_cli, settings, "admin", "create", "--tenant", tenant.slug, "--email",
                                   "Boss@Acme.example")
    assert f"admin boss@acme.example of tenant {tenant.slug}" in made
    assert f"https://licenses.gateway.example/admin/{tenant.slug}/login" in made
    assert "boss@acme.example  last sign-in never" in await asyncio.to_thread(_cli, settings, "admin", "list",
                                                                             "--tenant", tenant.slug)
    printed = await asyncio.to_thread(_cli, settings, "admin", "link", "--tenant", tenant.slug, "--email",
                                      "boss@acme.example")
    link = printed.strip().rsplit(" ", 1)[1]
    assert link.startswith(f"https://licenses.gateway.example/admin/{tenant.slug}/login/link?token=")
    page = await client.get(link.removeprefix("https://licenses.gateway.example"))
    token = link.split("token=", 1)[1]
    r = await client.post(f"/admin/{tenant.slug}/login/link", data={"csrf_token": csrf_of(page.text), "token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/{tenant.slug}/"
    assert "boss@acme.example" in (await client.get(f"/admin/{tenant.slug}/")).text
    listed = await asyncio.to_thread(_cli, settings, "admin", "list", "--tenant", tenant.slug)
    assert "boss@acme.example  last sign-in never" not in listed


def _post_paths() -> list[str]:
    from starlette.routing import Route

    from quota_gateway.web.routes import routes

    paths = [r.path for r in routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    return sorted({re.sub(r"\{(?!tenant\})[a-z_]+\}", "1", p) for p in paths})


@pytest.mark.parametrize("path", _post_paths())
async def test_every_form_refuses_a_post_without_the_csrf_token(client, settings, tenant, clock, path):
    """Every POST route of the admin UI and the portal (read from the route table, so a new form
    is covered the day it is added), by a signed-in user: 403 without the form token, nothing done."""
    path = path.replace("{tenant}", tenant.slug)
    if path.startswith("/admin/"):
        await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
        cookie = "qg_admin"
    else:
        cookie = "qg_portal"
        client.cookies.set(cookie, await portal_cookie(settings.database_url, tenant.id, clock, "c@example.com"),
                           path=f"/portal/{tenant.slug}")
    before = client.cookies.get(cookie)
    r = await client.post(path, data={"name": "Sneaky", "email": "c@example.com", "message": "x", "subject": "x"})
    assert r.status_code == 403, (path, r.status_code)
    assert client.cookies.get(cookie) == before   # no sign-in, no sign-out


async def test_code_brute_force_is_stopped_through_http(settings, tenant, clock, smtp_server):
    """The same bounds, as a guesser meets them: the mailed code stops working after MAX_TRIES wrong
    guesses at the code form, and the address gets no more than CODES_PER_ADDRESS_HOUR codes an hour."""
    from quota_gateway.events import jobs

    mailing = settings.with_(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                             smtp_from="licensing@acme.example")
    async with running_app(mailing, clock) as (app, client):
        product = (await client.post("/api/product", json={"name": "Desk"}, headers=tenant.headers)).json()["id"]
        await client.post("/api/licenses", json={"productId": product, "email": "buyer@example.com"},
                          headers=tenant.headers)
        base = f"/portal/{tenant.slug}"
        form = csrf_of((await client.get(f"{base}/login")).text)
        await client.post(f"{base}/login", data={"csrf_token": form, "email": "buyer@example.com"})
        await jobs.run_due(app.state.services)
        [mail] = await smtp_server.wait_for(1)
        code = re.search(r"\b(\d{6})\b", mail.subject).group(1)
        for i in range(1, signin.MAX_TRIES + 1):
            guess = f"{(int(code) + i) % 1_000_000:06d}"
            r = await client.post(f"{base}/login/code", data={"csrf_token": form, "email": "buyer@example.com",
                                                              "code": guess})
            assert "qg_portal" not in r.cookies, guess
        r = await client.post(f"{base}/login/code", data={"csrf_token": form, "email": "buyer@example.com",
                                                          "code": code})
        assert "qg_portal" not in r.cookies and (await client.get(f"{base}/")).status_code == 303   # spent
        for _ in range(signin.CODES_PER_ADDRESS_HOUR - 1):
            r = await client.post(f"{base}/login", data={"csrf_token": form, "email": "buyer@example.com"})
            assert r.status_code == 200
        r = await client.post(f"{base}/login", data={"csrf_token": form, "email": "buyer@example.com"})
        assert r.status_code == 303 and r.headers["location"] == f"{base}/login"
        assert "too many sign-in codes" in (await client.get(f"{base}/login")).text
        await jobs.run_due(app.state.services)
        await smtp_server.wait_for(signin.CODES_PER_ADDRESS_HOUR)
        await jobs.run_due(app.state.services)
        assert len(smtp_server.messages) == signin.CODES_PER_ADDRESS_HOUR   # the refused request mailed nothing
