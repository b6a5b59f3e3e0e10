"""Integration tests run against real servers; their fixtures live in tests/fixtures/servers.py."""

from tests.fixtures.servers import *  # noqa: F403
