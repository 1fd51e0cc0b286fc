"""Endpoints of the events domain: webhooks, SMTP settings, e-mail templates, tenant mail settings."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..answers import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    STRING,
    TIMESTAMP,
    answer,
    array,
    component,
    nullable,
    one_of,
    optional,
)
from ..jsonio import JSONResponse
from ..routing import Call, endpoint
from ..schema import UNSET, Bool, Email, Int, List, Query, Str, obj
from . import mailer, scheduler, templates, types, webhooks

_SMTP = obj(
    host=Str(required=True, min_len=1, max_len=253),
    port=Int(required=True, minimum=1, maximum=65535),
    security=Str(choices=mailer.SECURITY, default="starttls"),
    username=Str(max_len=256, default=""),
    password=Str(max_len=1024, strip=False, nullable=True, default=UNSET,
                 description="omit to keep the stored password; empty string clears it"),
    **{"from": Email(required=True, description="sender address")},
)
_SMTP_TEST = obj(to=Email(required=True))
_TEMPLATE = obj(
    subject=Str(required=True, min_len=1, max_len=500),
    text=Str(required=True, min_len=1, max_len=100_000, strip=False),
    html=Str(max_len=200_000, strip=False, default="", description="empty: the mail has a plain-text part only"),
)
_MAIL_SETTINGS = obj(
    contactEmail=Email(description="where the tenant is told things (e.g. a disabled webhook endpoint)"),
    deliverLicenses=Bool(description="mail a new license's key to the e-mail address it was made for"),
    customerPortalUrl=Str(max_len=2000, description="{{CustomerPortalUrl}} in templates; empty: this gateway's "
                                                    "portal, {QG_PUBLIC_URL}/portal/{tenant}/"),
)


async def get_smtp(call: Call) -> dict:
    """The SMTP server this tenant's mail goes through (password masked)."""
    async with call.services.pool.acquire() as conn:
        return mailer.smtp_view(await mailer.smtp_config(conn, call.services.settings, call.tenant_id))


async def put_smtp(call: Call) -> dict:
    """Set the tenant's own SMTP server."""
    b = call.body
    password = None if b["password"] is UNSET else (b["password"] or "")
    async with call.services.pool.acquire() as conn:
        config = await mailer.put_smtp(conn, call.services.settings, call.tenant_id, host=b["host"], port=b["port"],
                                       security=b["security"], username=b["username"], password=password,
                                       from_address=b["from"])
    return mailer.smtp_view(config)


async def delete_smtp(call: Call) -> dict:
    """Forget the tenant's SMTP server (mail falls back to the server-wide default, if any)."""
    async with call.services.pool.acquire() as conn:
        deleted = await mailer.delete_smtp(conn, call.tenant_id)
        view = mailer.smtp_view(await mailer.smtp_config(conn, call.services.settings, call.tenant_id))
    return {"deleted": deleted, **view}


async def test_smtp(call: Call) -> dict:
    """Send a test message now through the effective SMTP server."""
    return await mailer.send_test(call.services, call.tenant_id, call.body["to"])


def _template_json(t: templates.Template) -> dict[str, Any]:
    return {"name": t.name, "subject": t.subject, "text": t.text, "html": t.html, "isDefault": t.is_default,
            "placeholders": [*templates.COMMON_PLACEHOLDERS, *templates.PLACEHOLDERS[t.name]]}


async def list_templates(call: Call) -> dict:
    """Every template name, and whether the tenant changed it."""
    async with call.services.pool.acquire() as conn:
        changed = await templates.customised(conn, call.tenant_id)
    return {"templates": [{"name": name, "isDefault": name not in changed, "updatedAt": changed.get(name)}
                          for name in templates.DEFAULTS]}


async def get_template(call: Call) -> dict:
    """The tenant's version of a template (or the default)."""
    async with call.services.pool.acquire() as conn:
        return _template_json(await templates.load(conn, call.tenant_id, call.path["name"]))


async def put_template(call: Call) -> dict:
    """Replace a template (Jinja2, sandboxed; the HTML part is autoescaped)."""
    b = call.body
    async with call.services.pool.acquire() as conn:
        saved = await templates.save(conn, call.tenant_id, call.path["name"], b["subject"], b["text"], b["html"],
                                     call.services.clock.utcnow())
    return _template_json(saved)


async def delete_template(call: Call) -> dict:
    """Back to the built-in default."""
    async with call.services.pool.acquire() as conn:
        return _template_json(await templates.reset(conn, call.tenant_id, call.path["name"]))


async def _mail_settings_json(conn: asyncpg.Connection, call: Call, current: dict) -> dict:
    # What {{CustomerPortalUrl}} is in fact: the tenant's address, else this gateway's portal.
    effective = await mailer.customer_portal_url(conn, call.services.settings, call.tenant_id)
    return {**current, "effectiveCustomerPortalUrl": effective}


async def get_mail_settings(call: Call) -> dict:
    """The tenant's contact address, license delivery switch and portal URL (blank: this gateway's
    portal, `effectiveCustomerPortalUrl`)."""
    async with call.services.pool.acquire() as conn:
        return await _mail_settings_json(conn, call, await mailer.mail_settings(conn, call.tenant_id))


async def put_mail_settings(call: Call) -> dict:
    """Change the tenant's mail settings (members left out stay as they are)."""
    async with call.services.pool.acquire() as conn:
        return await _mail_settings_json(conn, call, await mailer.put_mail_settings(conn, call.tenant_id, call.body))


_WEBHOOK = obj(
    url=Str(required=True, min_len=1, max_len=2000),
    events=List(required=True, item=Str(max_len=100), max_items=50, description='event types, or ["*"]'),
    description=Str(max_len=500, default=""),
    enabled=Bool(default=True),
)
_WEBHOOK_PATCH = obj(
    url=Str(min_len=1, max_len=2000),
    events=List(item=Str(max_len=100), max_items=50),
    description=Str(max_len=500),
    enabled=Bool(description="true also clears the failure streak of an auto-disabled endpoint"),
)
_ROTATE = obj(overlapSeconds=Int(minimum=0, maximum=7 * 86400, default=86400,
                                 description="how long the previous secret keeps signing"))
_DELIVERIES = Query({
    "limit": Int(minimum=1, maximum=200, default=50), "before": Int(minimum=1),
    "status": Str(choices=webhooks.DELIVERY_STATES, description="only deliveries in this state"),
    "eventType": Str(choices=(*types.ALL, types.WEBHOOK_PING), max_len=100,
                     description="only deliveries of this event type"),
})
_WEBHOOK_ERRORS = ("webhook_not_found",)

# Answers (events.webhooks, events.mailer, events.templates, events.scheduler).
_ENDPOINT_FIELDS = dict(id=INTEGER, url=STRING, events=array(STRING), description=STRING, enabled=BOOLEAN,
                        consecutiveFailures=INTEGER, disabledReason=nullable(STRING), disabledAt=nullable(TIMESTAMP),
                        createdAt=TIMESTAMP, updatedAt=TIMESTAMP)
_ENDPOINT = component("WebhookEndpoint", answer(**_ENDPOINT_FIELDS, secretHints=optional(array(STRING))))
_ENDPOINT_SHOWN = answer(**_ENDPOINT_FIELDS, secretHints=array(STRING))
_ENDPOINT_CREATED = answer(**_ENDPOINT_FIELDS, secretHints=array(STRING), secret=STRING)
_ROTATED = answer(id=INTEGER, secret=STRING, previousSecretsExpireAt=TIMESTAMP, secretHints=array(STRING))
_ATTEMPT = answer(attempt=INTEGER, manual=BOOLEAN, startedAt=TIMESTAMP, finishedAt=nullable(TIMESTAMP),
                  outcome=one_of("sending", "succeeded", "failed", "interrupted"), statusCode=nullable(INTEGER),
                  latencyMs=nullable(INTEGER), responseExcerpt=nullable(STRING), error=nullable(STRING),
                  requestHeaders=nullable(ANY_OBJECT))
_DELIVERY_LOG = answer(deliveries=array(answer(
    id=INTEGER, eventId=STRING, eventType=STRING, state=one_of(*webhooks.DELIVERY_STATES), attempts=INTEGER,
    createdAt=TIMESTAMP, lastAttemptAt=nullable(TIMESTAMP), log=array(_ATTEMPT))), nextBefore=nullable(INTEGER))
_ATTEMPTED = answer(deliveryId=INTEGER, delivered=BOOLEAN, attempt=INTEGER, statusCode=nullable(INTEGER),
                    latencyMs=nullable(INTEGER), error=nullable(STRING))
_SMTP_FIELDS = {"source": nullable(STRING), "host": nullable(STRING), "port": nullable(INTEGER),
                "security": nullable(one_of(*mailer.SECURITY)), "username": nullable(STRING),
                "password": nullable(STRING), "from": nullable(STRING)}
_SMTP_SHOWN = component("SmtpSettings", answer(**_SMTP_FIELDS))
_TEMPLATE_SHOWN = component("EmailTemplate", answer(name=STRING, subject=STRING, text=STRING, html=STRING,
                                                    isDefault=BOOLEAN, placeholders=array(STRING)))
_TEMPLATES = answer(templates=array(answer(name=STRING, isDefault=BOOLEAN, updatedAt=nullable(TIMESTAMP))))
_REMINDER_DAYS = answer(productId=INTEGER, days=array(INTEGER), isDefault=BOOLEAN)
_MAIL_SETTINGS_SHOWN = answer(contactEmail=STRING, deliverLicenses=BOOLEAN, customerPortalUrl=STRING,
                              effectiveCustomerPortalUrl=STRING)  # {{CustomerPortalUrl}} as mails get it


def _endpoint_id(call: Call) -> int:
    return call.int_path("id")


async def create_webhook(call: Call) -> JSONResponse:
    """Add a webhook endpoint; the answer holds its signing secret, shown this once."""
    b = call.body
    async with call.services.pool.acquire() as conn:
        made = await webhooks.create_endpoint(conn, call.services.settings, call.tenant_id, call.services.clock.utcnow(),
                                              url=b["url"], events=b["events"], description=b["description"],
                                              enabled=b["enabled"])
    return JSONResponse(made, status_code=201)


async def list_webhooks(call: Call) -> dict:
    """The tenant's webhook endpoints."""
    async with call.services.pool.acquire() as conn:
        return {"webhooks": await webhooks.list_endpoints(conn, call.tenant_id)}


async def show_webhook(call: Call) -> dict:
    """One endpoint (secrets only as hints)."""
    async with call.services.pool.acquire() as conn:
        return await webhooks.show_endpoint(conn, call.tenant_id, _endpoint_id(call), call.services.clock.utcnow())


async def update_webhook(call: Call) -> dict:
    """Change an endpoint; members left out stay as they are."""
    async with call.services.pool.acquire() as conn:
        return await webhooks.update_endpoint(conn, call.services.settings, call.tenant_id, _endpoint_id(call),
                                              call.services.clock.utcnow(), call.body)


async def delete_webhook(call: Call) -> dict:
    """Remove an endpoint and its delivery log."""
    async with call.services.pool.acquire() as conn:
        await webhooks.delete_endpoint(conn, call.tenant_id, _endpoint_id(call))
    return {"deleted": True}


async def rotate_webhook_secret(call: Call) -> dict:
    """A new signing secret (shown once); the old one keeps signing for the overlap window."""
    async with call.services.pool.acquire() as conn:
        return await webhooks.rotate_secret(conn, call.services.settings, call.tenant_id, _endpoint_id(call),
                                            call.services.clock.utcnow(), call.body["overlapSeconds"])


async def webhook_deliveries(call: Call) -> dict:
    """The delivery log, newest first, optionally only one state or event type: each delivery
    with every attempt (status, latency, response excerpt)."""
    async with call.services.pool.acquire() as conn:
        return await webhooks.deliveries(conn, call.tenant_id, _endpoint_id(call), limit=call.query["limit"],
                                         before=call.query["before"], state=call.query["status"],
                                         event_type=call.query["eventType"])


async def redeliver_webhook(call: Call) -> JSONResponse:
    """Send a past delivery once more (one attempt, also to a disabled endpoint)."""
    async with call.services.pool.acquire() as conn:
        queued = await webhooks.redeliver(conn, call.tenant_id, _endpoint_id(call), call.int_path("delivery_id"))
    return JSONResponse(queued, status_code=202)


async def ping_webhook(call: Call) -> dict:
    """Send a `webhook.ping` event to the endpoint now; answers how the attempt went."""
    return await webhooks.ping(call.services, call.tenant_id, _endpoint_id(call))


_REMINDERS = obj(days=List(required=True, item=Int(minimum=1, maximum=365), max_items=10,
                           description="days before expiry; [] turns reminders off for the product"))


async def get_reminders(call: Call) -> dict:
    """The renewal reminder days of a product (default 7 and 1)."""
    async with call.services.pool.acquire() as conn:
        return await scheduler.reminder_days(conn, call.tenant_id, call.int_path("product_id"))


async def put_reminders(call: Call) -> dict:
    """Set the renewal reminder days of a product."""
    async with call.services.pool.acquire() as conn:
        return await scheduler.set_reminder_days(conn, call.tenant_id, call.int_path("product_id"),
                                                 call.body["days"])


_W = "webhooks"
_E = "email"
routes = [
    endpoint("POST", "/api/webhooks", create_webhook, scope="manage", tag=_W, body=_WEBHOOK,
             errors=("invalid_url", "url_not_allowed", "unknown_event_type"), responses={201: "created"},
             returns=_ENDPOINT_CREATED),
    endpoint("GET", "/api/webhooks", list_webhooks, scope="manage", tag=_W, returns=answer(webhooks=array(_ENDPOINT))),
    endpoint("GET", "/api/webhooks/{id}", show_webhook, scope="manage", tag=_W, errors=_WEBHOOK_ERRORS,
             returns=_ENDPOINT_SHOWN),
    endpoint("PATCH", "/api/webhooks/{id}", update_webhook, scope="manage", tag=_W, body=_WEBHOOK_PATCH,
             errors=(*_WEBHOOK_ERRORS, "invalid_url", "url_not_allowed", "unknown_event_type"), returns=_ENDPOINT_SHOWN),
    endpoint("DELETE", "/api/webhooks/{id}", delete_webhook, scope="manage", tag=_W, errors=_WEBHOOK_ERRORS,
             returns=answer(deleted=BOOLEAN)),
    endpoint("POST", "/api/webhooks/{id}/rotate-secret", rotate_webhook_secret, scope="manage", tag=_W, body=_ROTATE,
             errors=_WEBHOOK_ERRORS, returns=_ROTATED),
    endpoint("GET", "/api/webhooks/{id}/deliveries", webhook_deliveries, scope="manage", tag=_W, query=_DELIVERIES,
             errors=_WEBHOOK_ERRORS, returns=_DELIVERY_LOG),
    endpoint("POST", "/api/webhooks/{id}/deliveries/{delivery_id}/redeliver", redeliver_webhook, scope="manage",
             tag=_W, errors=(*_WEBHOOK_ERRORS, "delivery_not_found"), responses={202: "queued"},
             returns=answer(queued=BOOLEAN, deliveryId=INTEGER, jobId=INTEGER)),
    endpoint("POST", "/api/webhooks/{id}/ping", ping_webhook, scope="manage", tag=_W, errors=_WEBHOOK_ERRORS,
             returns=_ATTEMPTED),

    endpoint("GET", "/api/smtp", get_smtp, scope="manage", tag=_E, returns=_SMTP_SHOWN),
    endpoint("PUT", "/api/smtp", put_smtp, scope="manage", tag=_E, body=_SMTP, returns=_SMTP_SHOWN),
    endpoint("DELETE", "/api/smtp", delete_smtp, scope="manage", tag=_E,
             returns=answer(deleted=BOOLEAN, **_SMTP_FIELDS)),
    endpoint("POST", "/api/smtp/test", test_smtp, scope="manage", tag=_E, body=_SMTP_TEST,
             errors=("smtp_not_configured", "smtp_failed"),
             responses={200: "sent", 409: "no SMTP server configured", 502: "the SMTP server refused or failed"},
             returns=answer(sent={"const": True}, messageId=STRING, source=STRING)),
    endpoint("GET", "/api/email/templates", list_templates, scope="manage", tag=_E, returns=_TEMPLATES),
    endpoint("GET", "/api/email/templates/{name}", get_template, scope="manage", tag=_E, errors=("unknown_template",),
             returns=_TEMPLATE_SHOWN),
    endpoint("PUT", "/api/email/templates/{name}", put_template, scope="manage", tag=_E, body=_TEMPLATE,
             errors=("unknown_template", "template_syntax"), returns=_TEMPLATE_SHOWN),
    endpoint("DELETE", "/api/email/templates/{name}", delete_template, scope="manage", tag=_E,
             errors=("unknown_template",), returns=_TEMPLATE_SHOWN),
    endpoint("GET", "/api/email/reminders/{product_id}", get_reminders, scope="manage", tag=_E,
             errors=("product_not_found",), returns=_REMINDER_DAYS),
    endpoint("PUT", "/api/email/reminders/{product_id}", put_reminders, scope="manage", tag=_E, body=_REMINDERS,
             errors=("product_not_found",), returns=_REMINDER_DAYS),
    endpoint("GET", "/api/email/settings", get_mail_settings, scope="manage", tag=_E, returns=_MAIL_SETTINGS_SHOWN),
    endpoint("PUT", "/api/email/settings", put_mail_settings, scope="manage", tag=_E, body=_MAIL_SETTINGS,
             returns=_MAIL_SETTINGS_SHOWN),
]
