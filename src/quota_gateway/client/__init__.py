"""Client side of the gateway for customer backends: API-key validation (sync and async) and
ASGI / WSGI middleware that guards every end-user request.

Depends on httpx and orjson only; imports nothing of the server (no Starlette, Redis, asyncpg).
"""

from ._wire import GatewayError, GatewayUnavailable, QuotaClientError, RetryPolicy
from .aio import AsyncQuotaClient
from .asgi import QuotaMiddleware
from .results import ApiKeyUsage, ApiKeyValidation, Quota, UsageDay, Window
from .sync import QuotaClient
from .wsgi import QuotaWSGIMiddleware

__all__ = ["ApiKeyUsage", "ApiKeyValidation", "AsyncQuotaClient", "GatewayError", "GatewayUnavailable", "Quota",
           "QuotaClient", "QuotaClientError", "QuotaMiddleware", "QuotaWSGIMiddleware", "RetryPolicy", "UsageDay",
           "Window"]
