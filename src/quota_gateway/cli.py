"""`quota-gateway serve | migrate | tenant ... | token ... | config`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg

from . import __version__, config, db
from .abuse import negative
from .auth.service import SCOPES, create_token, list_tokens, revoke_token
from .config import Settings
from .embedded import PostgresServer, RedisServer
from .errors import ApiError
from .logs import configure_logging
from .tenants import create_tenant, get_tenant, list_tenants

_RUN_FILE = "embedded.json"


def _running_embedded(settings: Settings) -> dict:
    """URLs of the embedded servers of a `serve` still running on this data dir, else {}."""
    try:
        info = json.loads((settings.data_path / _RUN_FILE).read_text())
        os.kill(info["pid"], 0)
    except (OSError, ValueError, KeyError):
        return {}
    return info


@contextlib.contextmanager
def backing_services(settings: Settings, *, need_redis: bool = True, publish: bool = False) -> Iterator[Settings]:
    """Settings with Redis/Postgres URLs: configured ones, those of a running `serve` on the same
    data dir, or embedded servers started here for whatever is missing."""
    running = _running_embedded(settings)
    settings = settings.with_(database_url=settings.database_url or running.get("database_url"),
                              redis_url=settings.redis_url or running.get("redis_url"))
    started: list[PostgresServer | RedisServer | _RunFile] = []
    try:
        if not settings.database_url:
            pg = PostgresServer(settings.data_path / "postgres", fast=False).start()
            started.append(pg)
            settings = settings.with_(database_url=pg.url)
        if need_redis and not settings.redis_url:
            # AOF on: counters survive a restart of the embedded Redis.
            rs = RedisServer(settings.data_path / "redis", appendonly=True).start()
            started.append(rs)
            settings = settings.with_(redis_url=rs.url)
        if publish and started:
            run_file = settings.data_path / _RUN_FILE
            run_file.write_text(json.dumps({"pid": os.getpid(), "database_url": settings.database_url,
                                            "redis_url": settings.redis_url}))
            started.append(_RunFile(run_file))
        yield settings
    finally:
        for server in reversed(started):
            server.stop()


class _RunFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)


def _ensure_master_key(settings: Settings) -> Settings:
    """Embedded (development) mode keeps a generated master key in the data dir."""
    if settings.master_key:
        return settings
    key_file = settings.data_path / "master.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(os.urandom(32).hex())
        key_file.chmod(0o600)
    return settings.with_(master_key=key_file.read_text().strip())


async def _bootstrap(settings: Settings) -> dict | None:
    """First start: a default tenant, an admin token, an admin user and a one-time sign-in link
    for the web admin (so a new user gets in without any e-mail set up). None when tenants exist."""
    url = settings.database_url
    assert url is not None  # serve starts an embedded PostgreSQL when none is configured
    await db.migrate_url(url)
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT count(*) FROM tenants"):
            return None
        tenant = await create_tenant(conn, "default", "Default tenant", master_key=settings.master_key)
        token = await create_token(conn, tenant["id"], "bootstrap admin", ["admin"])
        email = os.environ.get("QG_ADMIN_EMAIL", "admin@localhost.localdomain")
        link = await _signin_link(conn, settings, tenant, email)
        return {"tenant": tenant, "token": token["token"], "admin_email": email, "signin_link": link}
    finally:
        await conn.close()


async def _signin_link(conn: asyncpg.Connection, settings: Settings, tenant: dict, email: str) -> str:
    """Make `email` an admin of the tenant (if not yet) and a one-time sign-in link for it."""
    from .clock import Clock
    from .web import signin
    from .web.keys import WebKeys

    now = Clock().utcnow()
    admin = await signin.create_admin(conn, tenant["id"], email, now)
    token = await signin.create_link(conn, WebKeys.from_master(settings.master_key or ""), now, tenant["id"],
                                     admin["id"])
    return f"{config.public_base(settings)}/admin/{tenant['slug']}/login/link?token={token}"


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .abuse.headers import BoundedHttpToolsProtocol
    from .devtls import ensure_dev_certificate

    settings = Settings.from_env(host=args.host, port=args.port, workers=args.workers, tls_cert=args.tls_cert,
                                 tls_key=args.tls_key, dev_tls=args.dev_tls or None)
    configure_logging(settings.log_level)
    embedded = not settings.redis_url or not settings.database_url
    if embedded:
        settings = _ensure_master_key(settings)
    elif not settings.master_key:
        print("QG_MASTER_KEY is required when Redis and PostgreSQL are external (production mode)", file=sys.stderr)
        return 2
    with backing_services(settings, publish=True) as settings:
        first = asyncio.run(_bootstrap(settings))
        cert, key = settings.tls_cert, settings.tls_key
        if settings.dev_tls and not cert:
            cert_path, key_path = ensure_dev_certificate(settings.data_path / "tls")
            cert, key = str(cert_path), str(key_path)
        scheme = "https" if cert else "http"
        print(f"quota-gateway {__version__} listening on {scheme}://{settings.host}:{settings.port}", flush=True)
        if embedded:
            print(f"  embedded redis: {settings.redis_url}\n  embedded postgres: {settings.database_url}", flush=True)
        if first:
            print(f"  created tenant '{first['tenant']['slug']}' ({first['tenant']['id']})\n"
                  f"  web admin sign-in link for {first['admin_email']} (one use, "
                  f"{int(_link_minutes())} min): {first['signin_link']}\n"
                  f"  admin access token (shown once): {first['token']}", flush=True)
        shared_metrics = None
        if settings.workers > 1 and not settings.metrics_dir:  # workers answer /metrics for the whole server
            shared_metrics = tempfile.mkdtemp(prefix="qg-metrics-")
            settings = settings.with_(metrics_dir=shared_metrics)
        os.environ.update(settings.to_env())  # uvicorn workers rebuild settings from the environment
        try:
            uvicorn.run("quota_gateway.app:create_app_from_env", factory=True, host=settings.host, port=settings.port,
                        workers=settings.workers, loop="uvloop", http=BoundedHttpToolsProtocol, ssl_certfile=cert,
                        ssl_keyfile=key, log_level="warning", access_log=False, lifespan="on",
                        # the client address is ours to decide (QG_TRUSTED_PROXIES), not uvicorn's default trust
                        proxy_headers=False)
        finally:
            if shared_metrics:
                shutil.rmtree(shared_metrics, ignore_errors=True)
    return 0


def _run_db(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    """Run `work(conn)` against the configured (or an embedded) database, migrated first."""

    async def main(url: str):
        await db.migrate_url(url)
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with backing_services(settings, need_redis=False) as settings:
        assert settings.database_url is not None  # backing_services starts one when none is set
        return asyncio.run(main(settings.database_url))


def migrate(args: argparse.Namespace) -> int:
    async def work(conn):
        return await db.migrate(conn)

    applied = _run_db(Settings.from_env(), work)
    print(f"applied: {applied or 'nothing (schema is current)'}")
    return 0


def tenant(args: argparse.Namespace) -> int:
    async def work(conn):
        if args.action == "create":
            return [await create_tenant(conn, args.slug, args.name or args.slug, master_key=settings.master_key)]
        return await list_tenants(conn)

    settings = _ensure_master_key(Settings.from_env())
    rows = _run_db(settings, work)
    for row in rows:
        print(f"{row['id']}  {row['slug']}  {row['name']}")
    if args.action == "create":
        _forget_unknown(settings, [negative.tenant(rows[0]["slug"]), negative.tenant(rows[0]["id"])])
    return 0


def _forget_unknown(settings: Settings, entries: list[str]) -> None:
    """Drop negative-cache entries in running gateways' Redis (a name they may have looked up
    before it existed), so nothing answers "unknown" after the creation."""
    url = settings.redis_url or _running_embedded(settings).get("redis_url")
    if not negative.forget_now(url, entries, cluster=settings.redis_cluster):
        print(f"note: Redis unreachable; gateways may answer 'unknown' for up to {negative.NEGATIVE_TTL} s",
              file=sys.stderr)


async def _tenant(conn: asyncpg.Connection, tenant: str) -> dict:
    """The tenant by id or slug, or an error naming it."""
    found = await get_tenant(conn, tenant)
    if found is None:
        raise ApiError(404, "tenant_not_found", f"no tenant '{tenant}'")
    return found


def token(args: argparse.Namespace) -> int:
    async def work(conn):
        found = await _tenant(conn, args.tenant)
        if args.action == "create":
            return [await create_token(conn, found["id"], args.name, args.scopes.split(","))]
        if args.action == "revoke":
            if not await revoke_token(conn, found["id"], args.public_id):
                raise ApiError(404, "not_found", "no live token with that id")
            revoked.append(args.public_id)
            return []
        return await list_tokens(conn, found["id"])

    revoked: list[str] = []
    settings = Settings.from_env()
    for row in _run_db(settings, work):
        print(f"{row['publicId']}  {row['token']}  scopes={','.join(row['scopes'])}  {row['name']}")
    if revoked:
        _announce_revocation(settings, revoked[0])
    return 0


def _announce_revocation(settings: Settings, public_id: str) -> None:
    """Tell running gateways to drop the token now (else their cache expires it within the TTL)."""
    import redis

    from .formats.rediskeys import TOKEN_INVALIDATIONS

    url = settings.redis_url or _running_embedded(settings).get("redis_url")
    if url:
        client = redis.Redis.from_url(url)
        try:
            client.publish(TOKEN_INVALIDATIONS, public_id)
        finally:
            client.close()
    print(f"revoked {public_id}")


def _link_minutes() -> float:
    from .web.signin import LINK_TTL

    return LINK_TTL.total_seconds() / 60


def admin(args: argparse.Namespace) -> int:
    """`admin create` adds an admin user of the web UI; `admin link` also prints a one-time link."""
    from .clock import Clock
    from .web import signin

    async def work(conn):
        found = await _tenant(conn, args.tenant)
        if args.action in ("create", "link"):  # both make the address an admin
            forget.append(negative.sign_in(found["id"], "admin", args.email))
        if args.action == "create":
            made = await signin.create_admin(conn, found["id"], args.email, Clock().utcnow())
            return f"admin {made['email']} of tenant {found['slug']}: sign in at {public}/admin/{found['slug']}/login"
        if args.action == "link":
            link = await _signin_link(conn, settings, found, args.email)
            return f"one-time sign-in link for {args.email} ({int(_link_minutes())} min): {link}"
        return "\n".join(f"{a['email']}  last sign-in {a['lastLoginAt'] or 'never'}"
                         for a in await signin.list_admins(conn, found["id"])) or "no admin users"


    settings = _ensure_master_key(Settings.from_env())
    public = config.public_base(settings)
    forget: list[str] = []
    print(_run_db(settings, work))
    _forget_unknown(settings, forget)
    return 0


def show_config(args: argparse.Namespace) -> int:
    for env, doc, default in config.describe():
        print(f"{env:24} {doc} (default: {default})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quota-gateway", description="multi-tenant licensing and API-quota gateway")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway (embedded Redis/Postgres when no URLs are set)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--dev-tls", action="store_true", help="serve HTTPS with a generated self-signed certificate")
    p.set_defaults(func=serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=migrate)
    sub.add_parser("config", help="list the QG_* settings").set_defaults(func=show_config)

    p = sub.add_parser("tenant", help="manage tenants")
    tsub = p.add_subparsers(dest="action", required=True)
    c = tsub.add_parser("create")
    c.add_argument("slug")
    c.add_argument("--name")
    tsub.add_parser("list")
    p.set_defaults(func=tenant)

    p = sub.add_parser("token", help="manage access tokens")
    tsub = p.add_subparsers(dest="action", required=True)
    c = tsub.add_parser("create")
    c.add_argument("--tenant", required=True, help="tenant id or slug")
    c.add_argument("--scopes", default="verify", help=f"comma-separated: {','.join(SCOPES)}")
    c.add_argument("--name", default="cli")
    ls = tsub.add_parser("list")
    ls.add_argument("--tenant", required=True)
    r = tsub.add_parser("revoke")
    r.add_argument("--tenant", required=True)
    r.add_argument("public_id")
    p.set_defaults(func=token)

    p = sub.add_parser("admin", help="admin users of the web UI (sign in by e-mailed code or one-time link)")
    asub = p.add_subparsers(dest="action", required=True)
    for name, help_text in (("create", "add an admin user"), ("link", "add (if new) and print a one-time sign-in link")):
        c = asub.add_parser(name, help=help_text)
        c.add_argument("--tenant", required=True, help="tenant id or slug")
        c.add_argument("--email", required=True)
    ls = asub.add_parser("list")
    ls.add_argument("--tenant", required=True)
    p.set_defaults(func=admin)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
