"""Running the work: the engine, its pull and push stages, `--once`, the dry run, the store lock."""
