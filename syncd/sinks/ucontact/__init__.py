"""uContact (Integra) dialer sink: token auth, uploadbase, schedules, removals, CDR outcomes."""
