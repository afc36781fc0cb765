"""Entry point for ``python -m mmaccel``."""

from .cli import main

raise SystemExit(main())
