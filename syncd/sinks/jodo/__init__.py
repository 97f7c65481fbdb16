"""Avhan Jodo over the Customer Web Service: push, outcomes, recordings, agents, dispositions."""
