"""Tests of quota_gateway.leases."""
