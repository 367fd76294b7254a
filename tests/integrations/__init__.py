"""Integration tests: each example under a real server, process pool or running loop."""
