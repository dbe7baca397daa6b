from cloudseg.cli.main import main

raise SystemExit(main())
