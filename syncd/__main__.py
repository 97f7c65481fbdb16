from syncd.cli.commands import main

raise SystemExit(main())
