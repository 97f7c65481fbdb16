"""Talking to dialers over HTTP: one policy for timeouts, retries, the breaker and limits."""
