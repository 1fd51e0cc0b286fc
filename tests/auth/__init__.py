"""Tests of quota_gateway.auth."""
