from convexnorm.cli import main

raise SystemExit(main())
