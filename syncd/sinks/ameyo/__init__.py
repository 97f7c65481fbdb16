"""Ameyo Customer Manager API: upload contacts, schedule callbacks, poll outcomes."""
