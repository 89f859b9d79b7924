from diffpolicy.cli import main

raise SystemExit(main())
