"""Durations as a person reads them in a reason (pure)."""

from __future__ import annotations


def human_seconds(seconds: float) -> str:
    """Return ``90`` as ``1.5 min``, ``86400`` as ``24 h``: what a person reads in a reason."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"
