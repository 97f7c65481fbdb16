"""Sources: where leads come from (CSV drops, SQL databases)."""
