"""Tests of quota_gateway.licensing."""
