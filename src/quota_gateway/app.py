"""Application factory: the domains, the middleware stack, the lifespan, and the hot-route front.

A domain is a module (usually a package) listed in DOMAINS. It exposes `routes` (usually
ApiRoute, from routing.endpoint) and may expose `hot_routes` ({(method, path): async
handler(services, scope, receive, send)}, served before any routing) with their `hot_specs`
(for /openapi.json), and `async start(services)` / `async stop(services)` for its state and
background work. Domains start in the order listed and stop in reverse.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import (
    apilicense,
    auth,
    catalogue,
    db,
    events,
    health,
    leases,
    licensing,
    metrics,
    openapi,
    payments,
    support,
    tenants,
    web,
)
from .abuse.clientlimit import ClientLimitMiddleware, ClientWindows
from .abuse.failures import FailedLookups
from .auth.cache import TokenCache
from .clock import Clock
from .config import Settings
from .errors import EXCEPTION_HANDLERS
from .jsonio import dumps
from .metrics import Metrics
from .metricsserver import MetricsListener
from .middleware.logging import AccessLogMiddleware
from .middleware.metrics import MetricsMiddleware
from .redisconn import ClusterPubSub, create_redis, script_runner
from .routing import ApiRoute, EndpointSpec
from .services import Services

log = logging.getLogger("quota_gateway")

DOMAINS: tuple[ModuleType, ...] = (health, auth, tenants, catalogue, apilicense, licensing, leases, support, events,
                                   web, payments)

HotHandler = Callable[[Services, Scope, Receive, Send], Awaitable[None]]


class GatewayApp:
    """Serves hot routes straight from the ASGI scope; everything else goes to Starlette."""

    def __init__(self, router: Starlette, hot_routes: dict[tuple[str, str], HotHandler]) -> None:
        self.router = router
        self.hot_routes = hot_routes

    @property
    def state(self) -> Any:
        return self.router.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.hot_routes.get((scope["method"], scope["path"]))
            if handler is not None:
                await handler(self.router.state.services, scope, receive, send)
                return
        await self.router(scope, receive, send)


def create_app(settings: Settings, clock: Clock | None = None, domains: tuple[ModuleType, ...] = DOMAINS) -> GatewayApp:
    redis_url, database_url = settings.redis_url, settings.database_url
    if not redis_url or not database_url:
        raise ValueError("create_app needs QG_REDIS_URL and QG_DATABASE_URL (the `serve` command starts embedded servers)")
    clock = clock or Clock()
    metrics_operator_digest = metrics.operator_digest(settings.metrics_token)  # a short token fails here
    hot_routes: dict[tuple[str, str], HotHandler] = {}
    hot_specs: list[EndpointSpec] = []
    routes: list[Route] = []
    for domain in domains:
        routes.extend(getattr(domain, "routes", ()))
        hot_routes.update(getattr(domain, "hot_routes", {}))
        hot_specs.extend(getattr(domain, "hot_specs", ()))
    spec = openapi.build(hot_specs + [r.spec for r in [*routes, metrics.public_route] if isinstance(r, ApiRoute)])
    spec_bytes = dumps(spec)  # once: the document is ~160 KB and the route needs no token

    async def openapi_json(request: Request) -> Response:
        return Response(spec_bytes, media_type="application/json")

    routes += [Route("/openapi.json", openapi_json, methods=["GET"]), metrics.public_route]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runner = script_runner(settings)  # first: an unknown transport is refused before anything opens
        await db.migrate_url(database_url)
        pool = await db.create_pool(database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
        redis = create_redis(redis_url, cluster=settings.redis_cluster)
        # Pub/sub through one plain connection: on a cluster, PUBLISH reaches subscribers on every node.
        pubsub_redis: Any = redis
        if settings.redis_cluster:  # a node that answers, the next one when it fails (a failover)
            pubsub_redis = ClusterPubSub(redis_url)
            await pubsub_redis.discover()
        await runner.prepare()
        tokens = TokenCache(pool, pubsub_redis, clock, ttl=settings.token_cache_ttl)
        services = Services(settings, clock, pool, redis, runner, tokens, Metrics(settings.metrics_dir))
        services.failed_lookups = FailedLookups(services.metrics, clock, settings.token_failures_per_minute)
        services.client_windows = ClientWindows(settings)
        services.metrics_operator_digest = metrics_operator_digest
        app.state.services = services
        tokens.start()
        services.metrics.start_sharing()
        metrics_listener = MetricsListener(services.metrics, settings.metrics_bind) if settings.metrics_bind else None
        services.metrics_listener = metrics_listener
        started = []
        try:
            if metrics_listener is not None:
                await metrics_listener.start()
            for domain in domains:
                if hasattr(domain, "start"):
                    await domain.start(services)
                    started.append(domain)
            # What startup built (modules, routes, templates, pools) lives as long as the process:
            # kept out of the cyclic collector's walks, a full collection then walks only what
            # requests made since (a cold wave's new key locations set off several; measured
            # ~14 us per first touch before, benchmarks/scale.py).
            gc.freeze()
            yield
        finally:
            gc.unfreeze()  # (tests start many apps in one process: their garbage stays collectable)
            for domain in reversed(started):
                if hasattr(domain, "stop"):
                    try:
                        await domain.stop(services)
                    except Exception:
                        log.exception("stopping %s failed", domain.__name__)
            if metrics_listener is not None:
                await metrics_listener.stop()
            await services.metrics.stop_sharing()
            await tokens.stop()
            await runner.aclose()
            if pubsub_redis is not redis:
                await pubsub_redis.aclose()
            await redis.aclose()
            await db.close_pool(pool)

    router = Starlette(
        routes=routes,
        middleware=[Middleware(AccessLogMiddleware), Middleware(MetricsMiddleware),
                    Middleware(ClientLimitMiddleware, settings=settings)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    return GatewayApp(router, hot_routes)


def create_app_from_env() -> GatewayApp:
    """Factory for uvicorn workers (`--factory`): settings come from QG_* variables."""
    from .logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)
