from batchfleet.cli import main

raise SystemExit(main())
