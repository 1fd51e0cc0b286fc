"""E-mail templates: built-in defaults, a tenant's own versions, and sandboxed Jinja2 rendering.

Templates are tenant-written text, so they render in Jinja2's SandboxedEnvironment (no attribute
access to internals, no imports) and may hold only what renders in bounded time and space
(`_refuse_unbounded`: no loops, calls or repetition); the HTML part is autoescaped, the text part
and subject are not.
A missing placeholder renders empty rather than failing the mail.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import asyncpg
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from ..errors import ApiError


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    subject: str
    text: str
    html: str
    is_default: bool = True


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


_FOOTER_TEXT = "\n--\n{{TenantName}}{% if CustomerPortalUrl %} · {{CustomerPortalUrl}}{% endif %}\n"
_FOOTER_HTML = ('<hr><p style="color:#666;font-size:12px">{{TenantName}}{% if CustomerPortalUrl %} · '
                '<a href="{{CustomerPortalUrl}}">{{CustomerPortalUrl}}</a>{% endif %}</p>')

DEFAULTS: dict[str, Template] = {t.name: t for t in (
    Template(
        "license_delivery",
        "Your {{ProductName}} license key",
        "Hello,\n\nthank you for choosing {{ProductName}}. Your license key is:\n\n    {{LicenseKey}}\n\n"
        "{% if ExpirationDate %}It is valid until {{ExpirationDate}}.\n{% endif %}"
        "{% if CustomerPortalUrl %}Manage your licenses at {{CustomerPortalUrl}}\n{% endif %}" + _FOOTER_TEXT,
        "<p>Hello,</p><p>thank you for choosing <b>{{ProductName}}</b>. Your license key is:</p>"
        "<p style=\"font-family:monospace;font-size:16px\">{{LicenseKey}}</p>"
        "{% if ExpirationDate %}<p>It is valid until {{ExpirationDate}}.</p>{% endif %}"
        "{% if CustomerPortalUrl %}<p><a href=\"{{CustomerPortalUrl}}\">Manage your licenses</a></p>{% endif %}"
        + _FOOTER_HTML),
    Template(
        "renewal_reminder",
        "Your {{ProductName}} license expires in {{DaysLeft}} day{% if DaysLeft != 1 %}s{% endif %}",
        "Hello,\n\nyour {{ProductName}} license {{LicenseKey}} expires on {{ExpirationDate}} "
        "({{DaysLeft}} day{% if DaysLeft != 1 %}s{% endif %} from now).\n"
        "{% if CustomerPortalUrl %}Renew it at {{CustomerPortalUrl}}\n{% endif %}" + _FOOTER_TEXT,
        "<p>Hello,</p><p>your <b>{{ProductName}}</b> license <code>{{LicenseKey}}</code> expires on "
        "{{ExpirationDate}} ({{DaysLeft}} day{% if DaysLeft != 1 %}s{% endif %} from now).</p>"
        "{% if CustomerPortalUrl %}<p><a href=\"{{CustomerPortalUrl}}\">Renew your license</a></p>{% endif %}"
        + _FOOTER_HTML),
    Template(
        "ticket_reply",
        "Re: {{TicketSubject}}",
        "Hello,\n\nthere is a reply to your request \"{{TicketSubject}}\":\n\n{{ReplyText}}\n\n"
        "{% if CustomerPortalUrl %}See the whole conversation at {{CustomerPortalUrl}}\n{% endif %}" + _FOOTER_TEXT,
        "<p>Hello,</p><p>there is a reply to your request <b>{{TicketSubject}}</b>:</p>"
        "<blockquote style=\"white-space:pre-wrap\">{{ReplyText}}</blockquote>"
        "{% if CustomerPortalUrl %}<p><a href=\"{{CustomerPortalUrl}}\">See the whole conversation</a></p>{% endif %}"
        + _FOOTER_HTML),
    Template(
        "portal_login_code",
        "Your {{TenantName}} sign-in code: {{LoginCode}}",
        "Hello,\n\nyour sign-in code is {{LoginCode}}. It is valid for {{ValidMinutes}} minutes.\n"
        "{% if LoginUrl %}Or open {{LoginUrl}} and press the button there.\n{% endif %}"
        "If you did not ask for it, ignore this message.\n" + _FOOTER_TEXT,
        "<p>Hello,</p><p>your sign-in code is</p><p style=\"font-family:monospace;font-size:24px\">{{LoginCode}}</p>"
        "{% if LoginUrl %}<p>Or <a href=\"{{LoginUrl}}\">open the sign-in page</a> and press the button there.</p>"
        "{% endif %}"
        "<p>It is valid for {{ValidMinutes}} minutes. If you did not ask for it, ignore this message.</p>"
        + _FOOTER_HTML),
    Template(
        "endpoint_disabled",
        "Webhook endpoint disabled: {{EndpointUrl}}",
        "Hello,\n\nthe webhook endpoint {{EndpointUrl}} failed {{FailureCount}} delivery attempts in a row and "
        "has been disabled.\nLast error: {{LastError}}\n\nFix the receiver, then enable the endpoint again "
        "(PATCH /api/webhooks/{{EndpointId}} with {\"enabled\": true}) and redeliver what it missed.\n" + _FOOTER_TEXT,
        "<p>Hello,</p><p>the webhook endpoint <code>{{EndpointUrl}}</code> failed {{FailureCount}} delivery "
        "attempts in a row and has been disabled.</p><p>Last error: {{LastError}}</p>"
        "<p>Fix the receiver, then enable the endpoint again and redeliver what it missed.</p>" + _FOOTER_HTML),
)}

# Placeholders each template is given (beyond TenantName and CustomerPortalUrl, which all get).
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "license_delivery": ("LicenseKey", "ProductName", "ExpirationDate", "CustomerEmail"),
    "renewal_reminder": ("LicenseKey", "ProductName", "ExpirationDate", "DaysLeft", "CustomerEmail"),
    "ticket_reply": ("TicketSubject", "ReplyText", "TicketId", "CustomerEmail"),
    "portal_login_code": ("LoginCode", "ValidMinutes", "CustomerEmail", "LoginUrl"),
    "endpoint_disabled": ("EndpointUrl", "EndpointId", "FailureCount", "LastError"),
}
COMMON_PLACEHOLDERS = ("TenantName", "CustomerPortalUrl")

_text_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_html_env = SandboxedEnvironment(autoescape=True)


# What a template may hold: placeholders, conditions, comparisons, + and ~, and filters that cannot
# grow a value. Templates render inside requests, on the event loop every tenant shares, so a loop
# ({% for %}: nested range()s turn 10^10 times), a repetition or power (*, **), a width (center(10^9)),
# a call or a variable doubled by each {% set %} would stall them all; without those, rendering
# takes time and space in proportion to the template and its placeholders.
_ALLOWED_NODES = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Const, nodes.If,
                  nodes.CondExpr, nodes.Compare, nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Neg,
                  nodes.Pos, nodes.Concat, nodes.Add, nodes.Sub, nodes.Tuple, nodes.List, nodes.Keyword,
                  nodes.Filter, nodes.Test)
_ALLOWED_FILTERS = frozenset({"upper", "lower", "title", "capitalize", "trim", "striptags", "escape", "e",
                              "default", "d", "string", "length", "count"})
_ALLOWED_TESTS = frozenset({"defined", "undefined", "none", "number", "string", "eq", "ne", "equalto", "lt",
                            "le", "gt", "ge", "odd", "even"})
_SHOWN = {"For": "{% for %}", "Macro": "{% macro %}", "CallBlock": "{% call %}", "Assign": "{% set %}",
          "AssignBlock": "{% set %}", "With": "{% with %}", "FilterBlock": "{% filter %}", "Include": "{% include %}",
          "Import": "{% import %}", "FromImport": "{% from %}", "Extends": "{% extends %}", "Block": "{% block %}",
          "Mul": "*", "Pow": "**", "Div": "/", "FloorDiv": "//", "Mod": "%", "Call": "a call",
          "Getattr": "attribute access (.)", "Getitem": "item access ([])", "Slice": "a slice", "Dict": "a dict"}


def _refuse_unbounded(tree: nodes.Template) -> None:
    for node in tree.find_all(nodes.Node):
        if isinstance(node, (nodes.Filter, nodes.Test)):
            allowed = _ALLOWED_FILTERS if isinstance(node, nodes.Filter) else _ALLOWED_TESTS
            if node.name not in allowed:
                kind = "filter" if isinstance(node, nodes.Filter) else "test"
                raise TemplateSyntaxError(f"the {kind} '{node.name}' is not allowed in e-mail templates (allowed: "
                                          f"{', '.join(sorted(allowed))})", node.lineno)
        elif not isinstance(node, _ALLOWED_NODES):
            shown = _SHOWN.get(type(node).__name__, type(node).__name__)
            raise TemplateSyntaxError(f"{shown} is not allowed in e-mail templates", node.lineno)


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> Any:
    env = _html_env if html else _text_env
    _refuse_unbounded(env.parse(source))
    return env.from_string(source)


def check(subject: str, text: str, html: str) -> None:
    """400 `template_syntax` naming the part and line of a Jinja2 syntax error."""
    for part, source, is_html in (("subject", subject, False), ("text", text, False), ("html", html, True)):
        try:
            _compile(source, is_html)
        except TemplateSyntaxError as exc:
            raise ApiError(400, "template_syntax", f"{part}, line {exc.lineno}: {exc.message}", field=part) from None


def render(template: Template, context: dict[str, Any]) -> Rendered:
    subject = _compile(template.subject, False).render(context)
    # One line, so a placeholder cannot inject headers.
    subject = " ".join(subject.split())
    text = _compile(template.text, False).render(context)
    html = _compile(template.html, True).render(context) if template.html.strip() else ""
    return Rendered(subject, text, html)


def require_known(name: str) -> None:
    if name not in DEFAULTS:
        raise ApiError(404, "unknown_template", f"no template named '{name}' (known: {', '.join(DEFAULTS)})")


async def load(conn: asyncpg.Connection, tenant_id: str, name: str) -> Template:
    """The tenant's version of template `name`, else the default."""
    require_known(name)
    row = await conn.fetchrow("SELECT subject, text_body, html_body FROM email_templates "
                              "WHERE tenant_id = $1 AND name = $2", tenant_id, name)
    if row is None:
        return DEFAULTS[name]
    return Template(name, row["subject"], row["text_body"], row["html_body"], is_default=False)


async def save(conn: asyncpg.Connection, tenant_id: str, name: str, subject: str, text: str, html: str) -> Template:
    require_known(name)
    check(subject, text, html)
    await conn.execute(
        """INSERT INTO email_templates (tenant_id, name, subject, text_body, html_body, updated_at)
           VALUES ($1, $2, $3, $4, $5, now())
           ON CONFLICT (tenant_id, name) DO UPDATE SET subject = $3, text_body = $4, html_body = $5, updated_at = now()""",
        tenant_id, name, subject, text, html)
    return Template(name, subject, text, html, is_default=False)


async def reset(conn: asyncpg.Connection, tenant_id: str, name: str) -> Template:
    require_known(name)
    await conn.execute("DELETE FROM email_templates WHERE tenant_id = $1 AND name = $2", tenant_id, name)
    return DEFAULTS[name]


async def customised(conn: asyncpg.Connection, tenant_id: str) -> dict[str, Any]:
    rows = await conn.fetch("SELECT name, updated_at FROM email_templates WHERE tenant_id = $1", tenant_id)
    return {r["name"]: r["updated_at"] for r in rows}
