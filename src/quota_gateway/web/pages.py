"""How a web page is served: templates, the CSRF check, sessions, flash messages, headers.

Handlers in routes.py are wrapped by `page` (GET) or `action` (POST). Both resolve the tenant
from the URL and, for signed-in pages, the session for that tenant and audience (else a
redirect to the sign-in page). `action` refuses a POST without a valid CSRF token before the
handler runs, and turns an ApiError into a flash message on the page the form came from.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import Message

from .. import tenants
from ..abuse.clientlimit import CLIENT_ADDRESS
from ..clock import iso_utc
from ..errors import ApiError
from ..jsonio import read_body
from . import csrf, sessions, signin
from .keys import WebKeys
from .sessions import WebSession

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
FLASH_COOKIE = "qg_flash"
MAX_FORM_BYTES = 256 * 1024

# Every page: only our own assets, no framing, no referrer (sign-in links carry tokens in the URL).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _when(value: Any) -> str:
    """A timestamp for people: ISO date and minute, UTC."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        text = iso_utc(value) or ""
        return text[:16].replace("T", " ") + " UTC"
    return str(value)


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["day"] = lambda v: "—" if v is None else (iso_utc(v) or "")[:10] if isinstance(v, datetime) else str(v)


class Redirect(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@dataclass
class PageContext:
    """What every handler gets: the request, the live services, the tenant and (signed in) the session."""

    request: Request
    services: Any
    keys: WebKeys
    audience: str
    tenant: dict
    session: WebSession | None = None
    form: FormData | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.services.pool
        return pool

    @property
    def tenant_id(self) -> str:
        return str(self.tenant["id"])

    @property
    def now(self) -> datetime:
        now: datetime = self.services.clock.utcnow()
        return now

    @property
    def secure(self) -> bool:
        return self.request.url.scheme == "https"

    @property
    def base(self) -> str:
        return f"/{self.audience}/{self.tenant['slug']}"

    @property
    def client(self) -> str:
        # the address the client limiter resolved (behind trusted proxies: from X-Forwarded-For)
        address = self.request.scope.get(CLIENT_ADDRESS)
        if address is not None:
            return str(address)
        return self.request.client.host if self.request.client else ""

    def value(self, name: str, default: str = "") -> str:
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else default

    def render(self, template: str, status_code: int = 200, /, **values: Any) -> Response:
        return render(self.request, self.keys, template, status_code, ctx=self, **values)

    def redirect(self, path: str, flash: str | None = None, error: bool = False) -> Response:
        response = RedirectResponse(path, status_code=303)
        if flash:
            set_flash(response, self.keys, flash, error, self.secure)
        return response


def web_keys(services: Any) -> WebKeys:
    return _keys_for(services.settings.master_key or "")


@functools.lru_cache(maxsize=4)
def _keys_for(master_key: str) -> WebKeys:
    return WebKeys.from_master(master_key)


def set_flash(response: Response, keys: WebKeys, message: str, error: bool, secure: bool) -> None:
    value = URLSafeSerializer(keys.session, salt="qg-flash").dumps({"m": message[:500], "e": error})
    response.set_cookie(FLASH_COOKIE, value, httponly=True, secure=secure, samesite="strict", path="/")


def _take_flash(request: Request, keys: WebKeys) -> dict | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = URLSafeSerializer(keys.session, salt="qg-flash").loads(raw)
    except BadSignature:
        return None
    return data if isinstance(data, dict) else None


def render(request: Request, keys: WebKeys, template: str, status_code: int = 200, /, *,
           ctx: PageContext | None = None, **values: Any) -> Response:
    seed, new_seed = csrf.seed_of(request)
    flash = _take_flash(request, keys)
    context = {"request": request, "csrf_token": csrf.token_for(keys.csrf, seed), "flash": flash, "ctx": ctx,
               "tenant": ctx.tenant if ctx else None, "session": ctx.session if ctx else None,
               "base": ctx.base if ctx else "", **(ctx.extra if ctx else {}), **values}
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code,
                                          headers=SECURITY_HEADERS)
    secure = request.url.scheme == "https"
    if new_seed:
        csrf.set_cookie(response, seed, secure)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, secure=secure, samesite="strict")
    return response


async def _tenant(request: Request) -> dict | None:
    slug = request.path_params.get("tenant", "")
    if not isinstance(slug, str) or len(slug) > 63:
        return None
    services = request.app.state.services
    found = await tenants.find(services.pool, services.redis, slug)  # an unknown slug: negative-cached
    # By slug only: the id form would let one tenant's pages answer under two addresses.
    return found if found is not None and found["slug"] == slug else None


def not_found(request: Request, keys: WebKeys, message: str = "There is no such page.") -> Response:
    return render(request, keys, "error.html", 404, message=message)


async def _context(request: Request, audience: str, signed_in: bool) -> PageContext | Response:
    services = request.app.state.services
    keys = web_keys(services)
    tenant = await _tenant(request)
    if tenant is None:
        return not_found(request, keys)
    ctx = PageContext(request, services, keys, audience, tenant)
    if signed_in:
        async with services.pool.acquire() as conn:
            ctx.session = await sessions.load(conn, keys, ctx.now, request.cookies.get(sessions.COOKIES[audience]),
                                              tenant_id=ctx.tenant_id, audience=audience)
            if ctx.session is None:
                return RedirectResponse(f"{ctx.base}/login", status_code=303)
    return ctx


def refuse_nul(values: Iterable[tuple[str, Any]]) -> None:
    """400 invalid_field for a path, form or query value holding NUL, which PostgreSQL text cannot
    store (the API's routing and schema refuse it the same way)."""
    for name, value in values:
        if "\x00" in name or (isinstance(value, str) and "\x00" in value):
            label = name if "\x00" not in name else "a field"
            raise ApiError(400, "invalid_field", f"{label}: must not contain NUL characters", field=label)


Handler = Callable[[PageContext], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def page(audience: str, *, signed_in: bool = True) -> Callable[[Handler], Endpoint]:
    """A GET page of `audience` ('admin' or 'portal')."""

    def wrap(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            ctx = await _context(request, audience, signed_in)
            if isinstance(ctx, Response):
                return ctx
            try:
                refuse_nul([*request.path_params.items(), *request.query_params.multi_items()])
                return await handler(ctx)
            except Redirect as moved:
                return RedirectResponse(moved.url, status_code=303)
            except ApiError as exc:
                if exc.status == 404:
                    return not_found(request, ctx.keys, exc.message)
                return ctx.render("error.html", exc.status, message=exc.message)
        return endpoint

    return wrap


async def _form_of(request: Request, raw: bytes) -> FormData:
    """The form in `raw`, the body `request` had (read whole, within MAX_FORM_BYTES, beforehand)."""
    async def replay() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}
    return await Request(request.scope, replay).form(max_files=1, max_fields=200)


def action(audience: str, *, signed_in: bool = True,
           back: str = "") -> Callable[[Handler], Endpoint]:
    """A form POST of `audience`: CSRF checked first; an ApiError becomes a flash message on
    `back` (a path below the tenant's base, formatted with the path parameters)."""

    def wrap(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            keys = web_keys(request.app.state.services)
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
                return render(request, keys, "error.html", 413, message="That form was too large.")
            try:
                raw = await read_body(request, MAX_FORM_BYTES)  # a body without Content-Length too
            except ApiError:
                return render(request, keys, "error.html", 413, message="That form was too large.")
            form = await _form_of(request, raw)
            token = form.get(csrf.FIELD)
            if not csrf.valid(keys.csrf, request, token if isinstance(token, str) else None):
                return render(request, keys, "error.html", 403,
                              message="This form has expired or did not come from this site. Reload the page and "
                                      "try again.")
            ctx = await _context(request, audience, signed_in)
            if isinstance(ctx, Response):
                return ctx
            ctx.form = form
            try:
                refuse_nul([*request.path_params.items(), *form.multi_items()])
                return await handler(ctx)
            except Redirect as moved:
                return RedirectResponse(moved.url, status_code=303)
            except ApiError as exc:
                target = ctx.base + back.format(**request.path_params)
                return ctx.redirect(target, exc.message, error=True)
        return endpoint

    return wrap


def whole_number(text: str) -> int | None:
    """`text` as a number when it is 1 to 18 ASCII digits, else None. (str.isdigit() also takes '²',
    which int() refuses, and '١', which int() reads as 1; int() refuses more than 4300 digits.)"""
    if 0 < len(text) <= 18 and text.isascii() and text.isdigit():
        return int(text)
    return None


def int_param(ctx: PageContext, name: str) -> int:
    number = whole_number(str(ctx.request.path_params.get(name, "")))
    if number is None:
        raise ApiError(404, "not_found", "There is no such page.")
    return number


def page_number(ctx: PageContext) -> int:
    """The `page` of a paged list (1 to 10000); anything else is the first page."""
    number = whole_number(ctx.request.query_params.get("page", ""))
    return min(number, 10_000) if number else 1


def form_int(ctx: PageContext, name: str, *, minimum: int = 0, maximum: int = 2**53 - 1,
             label: str = "") -> int | None:
    """An optional whole number from the form (blank: None); 400 invalid_field otherwise."""
    text = ctx.value(name)
    if not text:
        return None
    number = whole_number(text)
    if number is None or not minimum <= number <= maximum:
        raise ApiError(400, "invalid_field", f"{label or name}: a whole number from {minimum} to {maximum}",
                       field=name)
    return number


def form_text(ctx: PageContext, name: str, *, max_len: int, label: str = "", required: bool = False) -> str:
    """A one-line text from the form, stripped; 400 invalid_field when longer than `max_len` (or
    blank when `required`)."""
    text = ctx.value(name)
    if len(text) > max_len or (required and not text):
        span = f"1 to {max_len}" if required else f"at most {max_len}"
        raise ApiError(400, "invalid_field", f"{label or name}: {span} characters", field=name)
    return text


def form_email(ctx: PageContext, name: str, *, label: str = "e-mail", required: bool = False) -> str:
    """An e-mail address from the form, stripped (blank allowed unless `required`); 400
    invalid_field when it is not one."""
    address = ctx.value(name)
    if (required or address) and not signin.plausible_email(address):
        raise ApiError(400, "invalid_field", f"{label}: not an e-mail address", field=name)
    return address


def form_message(ctx: PageContext, name: str, *, max_len: int, label: str = "") -> str:
    """A required multi-line text from the form, as typed (line ends made \\n); 400 missing_field
    when blank, `{name}_too_long` when longer than `max_len`."""
    raw = ctx.form.get(name) if ctx.form is not None else None
    text = raw.replace("\r\n", "\n") if isinstance(raw, str) else ""
    if not text.strip():
        raise ApiError(400, "missing_field", f"{label or name}: required", field=name)
    if len(text) > max_len:
        raise ApiError(400, f"{name}_too_long", f"{label or name}: at most {max_len} characters", field=name)
    return text


def show_secret(ctx: PageContext, nav: str, title: str, label: str, secret: str, back: str, note: str,
                stored: str = "stored only as a digest") -> Response:
    """The page that shows a new secret this once (it is never put in a URL, cookie or redirect)."""
    return ctx.render("admin/secret.html", nav=nav, title=title, label=label, secret=secret, back=back, note=note,
                      stored=stored)


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)
