from syncd.cli.commands import main

# Guarded: the mapping workers' fork server imports this module again (as __mp_main__).
if __name__ == "__main__":
    raise SystemExit(main())
