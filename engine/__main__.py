"""`python -m engine` starts the server."""

from engine.cli import main

raise SystemExit(main())
