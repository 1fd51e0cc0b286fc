"""All settings in one place: environment variables (QG_*), overridable by CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Every knob of the gateway. Field docs are printed by `quota-gateway config`."""

    redis_url: str | None = field(default=None, metadata={"env": "QG_REDIS_URL", "doc": "Redis URL; unset = embedded Redis"})
    redis_cluster: bool = field(default=False, metadata={"env": "QG_REDIS_CLUSTER", "doc": "treat QG_REDIS_URL as a Redis Cluster seed"})
    redis_transport: str = field(default="autopipeline", metadata={"env": "QG_REDIS_TRANSPORT", "doc": "hot-path Redis transport: autopipeline (one auto-pipelined connection per Redis) or redis-py (redis.asyncio's pool, one connection per concurrent call; kept to measure against)"})
    database_url: str | None = field(default=None, metadata={"env": "QG_DATABASE_URL", "doc": "PostgreSQL URL; unset = embedded PostgreSQL"})
    data_dir: str = field(default=".qg-data", metadata={"env": "QG_DATA_DIR", "doc": "where embedded servers keep their data"})
    host: str = field(default="127.0.0.1", metadata={"env": "QG_HOST", "doc": "bind address"})
    port: int = field(default=8080, metadata={"env": "QG_PORT", "doc": "bind port"})
    workers: int = field(default=1, metadata={"env": "QG_WORKERS", "doc": "uvicorn worker processes"})
    tls_cert: str | None = field(default=None, metadata={"env": "QG_TLS_CERT", "doc": "TLS certificate (PEM) file"})
    tls_key: str | None = field(default=None, metadata={"env": "QG_TLS_KEY", "doc": "TLS private key (PEM) file"})
    dev_tls: bool = field(default=False, metadata={"env": "QG_DEV_TLS", "doc": "serve HTTPS with a self-signed certificate"})
    master_key: str | None = field(default=None, metadata={"env": "QG_MASTER_KEY", "doc": "secret that encrypts tenant private keys at rest"})
    max_body_bytes: int = field(default=64 * 1024, metadata={"env": "QG_MAX_BODY_BYTES", "doc": "largest accepted request body"})
    db_pool_min: int = field(default=1, metadata={"env": "QG_DB_POOL_MIN", "doc": "PostgreSQL pool minimum size"})
    db_pool_max: int = field(default=10, metadata={"env": "QG_DB_POOL_MAX", "doc": "PostgreSQL pool maximum size"})
    token_cache_ttl: float = field(default=60.0, metadata={"env": "QG_TOKEN_CACHE_TTL", "doc": "seconds a verified access token stays cached (revocation is pushed sooner)"})
    flush_interval: float = field(default=1.0, metadata={"env": "QG_FLUSH_INTERVAL", "doc": "seconds between write-behind flushes of usage to PostgreSQL"})
    metrics_dir: str | None = field(default=None, metadata={"env": "QG_METRICS_DIR", "doc": "directory where worker processes share metrics snapshots (serve --workers N sets a temporary one)"})
    events_worker: bool = field(default=True, metadata={"env": "QG_EVENTS_WORKER", "doc": "run the background job worker (webhooks, e-mail, scheduler) in this process"})
    job_concurrency: int = field(default=8, metadata={"env": "QG_JOB_CONCURRENCY", "doc": "background jobs one process runs at once"})
    job_poll_interval: float = field(default=1.0, metadata={"env": "QG_JOB_POLL_INTERVAL", "doc": "seconds between job-queue polls (a NOTIFY wakes the worker sooner)"})
    job_lease_seconds: float = field(default=120.0, metadata={"env": "QG_JOB_LEASE_SECONDS", "doc": "seconds a claimed job is held before another process may take it over (its holder is presumed dead)"})
    scheduler_interval: float = field(default=10.0, metadata={"env": "QG_SCHEDULER_INTERVAL", "doc": "seconds between scheduler passes (license.expired events, renewal reminders)"})
    events_retention_days: float = field(default=30.0, metadata={"env": "QG_EVENTS_RETENTION_DAYS", "doc": "days finished jobs, settled webhook deliveries (with their log) and fanned-out events are kept"})
    retention_interval: float = field(default=3600.0, metadata={"env": "QG_RETENTION_INTERVAL", "doc": "seconds between retention runs (one process runs each)"})
    smtp_host: str = field(default="", metadata={"env": "QG_SMTP_HOST", "doc": "server-wide default SMTP host (tenants may set their own)"})
    smtp_port: int = field(default=587, metadata={"env": "QG_SMTP_PORT", "doc": "server-wide default SMTP port"})
    smtp_security: str = field(default="starttls", metadata={"env": "QG_SMTP_SECURITY", "doc": "server-wide default SMTP security: none, starttls or tls"})
    smtp_user: str = field(default="", metadata={"env": "QG_SMTP_USER", "doc": "server-wide default SMTP user name"})
    smtp_password: str = field(default="", metadata={"env": "QG_SMTP_PASSWORD", "doc": "server-wide default SMTP password"})
    smtp_from: str = field(default="", metadata={"env": "QG_SMTP_FROM", "doc": "server-wide default sender address"})
    smtp_timeout: float = field(default=30.0, metadata={"env": "QG_SMTP_TIMEOUT", "doc": "seconds an SMTP conversation may take"})
    smtp_ca_file: str | None = field(default=None, metadata={"env": "QG_SMTP_CA_FILE", "doc": "PEM certificates trusted for SMTP TLS in addition to the system's (a private CA; the tests' self-signed certificate)"})
    webhook_timeout: float = field(default=10.0, metadata={"env": "QG_WEBHOOK_TIMEOUT", "doc": "seconds a webhook receiver has to answer"})
    webhook_allow_private: bool = field(default=False, metadata={"env": "QG_WEBHOOK_ALLOW_PRIVATE", "doc": "allow webhook, ServiceNow and tenant SMTP destinations that resolve to loopback, link-local or private addresses (tests, closed networks)"})
    metrics_bind: str = field(default="127.0.0.1:9464", metadata={"env": "QG_METRICS_BIND", "doc": "host:port of the metrics listener (GET /metrics without a token; workers share it); empty = none"})
    metrics_token: str = field(default="", metadata={"env": "QG_METRICS_TOKEN", "doc": "operator credential for GET /metrics on the public listener (`Authorization: Bearer <it>`, at least 16 characters); empty = the public /metrics refuses everyone. Tenant access tokens never read server-wide metrics"})
    trusted_proxies: str = field(default="", metadata={"env": "QG_TRUSTED_PROXIES", "doc": "comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed; from anyone else the header is ignored"})
    client_requests_per_minute: int = field(default=600, metadata={"env": "QG_CLIENT_REQUESTS_PER_MINUTE", "doc": "requests one client address (an IPv6 one: its /64) may make per minute to unauthenticated routes (/licensing, /portal, /admin, /hooks, /openapi.json, /metrics; not the probes); 0 = no limit"})
    client_failures_per_minute: int = field(default=30, metadata={"env": "QG_CLIENT_FAILURES_PER_MINUTE", "doc": "failed lookups (unknown keys, organizations, leases, sign-in codes; wrong access tokens on any route) one client address may make per minute before it gets 429s; 0 = no limit"})
    token_failures_per_minute: int = field(default=0, metadata={"env": "QG_TOKEN_FAILURES_PER_MINUTE", "doc": "failed key lookups one access token may make per minute per worker before it gets 429s; 0 (default) = counted in /metrics but never limited (see README: a publisher forwards its users' keys)"})
    max_header_bytes: int = field(default=16 * 1024, metadata={"env": "QG_MAX_HEADER_BYTES", "doc": "largest request head (request line and headers); larger: 431"})
    max_header_count: int = field(default=100, metadata={"env": "QG_MAX_HEADER_COUNT", "doc": "most request headers; more: 431"})
    log_level: str = field(default="info", metadata={"env": "QG_LOG_LEVEL", "doc": "log level"})
    public_url: str = field(default="", metadata={"env": "QG_PUBLIC_URL", "doc": "base URL people reach this gateway at, used in sign-in links and e-mails ({{CustomerPortalUrl}} defaults to it plus /portal/{tenant}/) (default: from host and port)"})
    server_version: str = field(default="", metadata={"env": "QG_SERVER_VERSION", "doc": "version reported to clients (default: package version)"})
    support_tickets_per_token: int = field(default=100, metadata={"env": "QG_SUPPORT_TICKETS_PER_TOKEN", "doc": "support tickets one access token may create per window (the SDKs' token is shared by all of a product's users)"})
    support_tickets_per_email: int = field(default=5, metadata={"env": "QG_SUPPORT_TICKETS_PER_EMAIL", "doc": "support tickets one e-mail address may create per window"})
    support_ticket_window: int = field(default=3600, metadata={"env": "QG_SUPPORT_TICKET_WINDOW", "doc": "seconds of the support-ticket creation window"})
    servicenow_timeout: float = field(default=10.0, metadata={"env": "QG_SERVICENOW_TIMEOUT", "doc": "seconds a ServiceNow instance has to connect and to answer each read"})
    stripe_api_base: str = field(default="https://api.stripe.com", metadata={"env": "QG_STRIPE_API_BASE", "doc": "Stripe's API, asked for a Checkout Session's line items when its webhook payload names none (tests point it at a loopback stand-in)"})
    paypal_cert_hosts: str = field(default=".paypal.com", metadata={"env": "QG_PAYPAL_CERT_HOSTS", "doc": "where PayPal webhook certificates may be fetched from (comma-separated: `host`, `.domain-suffix`, or `http://host:port` to allow plain HTTP); HTTPS otherwise"})
    paypal_ca_file: str | None = field(default=None, metadata={"env": "QG_PAYPAL_CA_FILE", "doc": "PEM trust anchors for PayPal webhook certificate chains (default: the system CAs)"})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings (for uvicorn worker processes)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()


def public_base(settings: Settings) -> str:
    """Where people reach the gateway: QG_PUBLIC_URL, else the scheme, host and port it serves on.
    Never taken from a request's Host header (a forged Host would put an attacker's address into
    a victim's sign-in e-mail)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    scheme = "https" if settings.tls_cert or settings.dev_tls else "http"
    return f"{scheme}://{settings.host}:{settings.port}"


def portal_url(settings: Settings, tenant_slug: str) -> str:
    """This gateway's customer portal of one tenant: what {{CustomerPortalUrl}} is unless the
    tenant set its own."""
    return f"{public_base(settings)}/portal/{tenant_slug}/"


def _coerce(annotation: str, raw: str) -> object:
    if annotation.startswith("bool"):
        return _env_bool(raw)
    if annotation.startswith("int"):
        return int(raw)
    if annotation.startswith("float"):
        return float(raw)
    return raw


def describe() -> list[tuple[str, str, object]]:
    """(variable, meaning, default) for every setting; the README table comes from this."""
    return [(f.metadata["env"], f.metadata["doc"], f.default) for f in fields(Settings)]
