"""Hostile-server tests: raw-socket servers on 127.0.0.1 that misbehave (see `servers`)."""
