"""Faithful fake dialers (ASGI apps) for tests and the demo."""
