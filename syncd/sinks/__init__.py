"""Sinks: one configured dialer target each (Jodo, Ameyo, uContact)."""
