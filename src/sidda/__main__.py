"""``python -m sidda`` runs the command line."""

from sidda.cli import main

raise SystemExit(main())
