from effdyn.cli import main

raise SystemExit(main())
