"""quota_gateway: a multi-tenant licensing server around a high-throughput API-quota gateway."""

__version__ = "0.1.0"
