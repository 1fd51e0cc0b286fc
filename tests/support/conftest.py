"""Fixtures of the support tests: the loopback ServiceNow stand-in."""

from __future__ import annotations

import pytest

from .servicenow_standin import Instance, StandinServer


@pytest.fixture(scope="session")
def servicenow_server():
    server = StandinServer().start()
    yield server
    server.stop()


@pytest.fixture
def servicenow(servicenow_server) -> Instance:
    """The stand-in's state, empty for each test (its URL: `servicenow.url`)."""
    return servicenow_server.reset()
