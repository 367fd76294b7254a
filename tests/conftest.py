"""Fixtures shared by every test directory."""

pytest_plugins = ["tests.redis_server"]
