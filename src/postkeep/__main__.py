"""`python -m postkeep` runs the CLI."""

from postkeep.cli import main

raise SystemExit(main())
