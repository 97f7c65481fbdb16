"""The pure core: leads and outcomes, phone numbers and mapping, reconcile, run summaries."""
