"""Tests of quota_gateway.catalogue."""
