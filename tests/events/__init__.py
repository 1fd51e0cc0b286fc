"""Tests of quota_gateway.events."""
