"""Tests of quota_gateway.apilicense."""
