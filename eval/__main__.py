"""``python -m mmaccel.eval`` (and ``torchrun -m mmaccel.eval``)."""

from .cli import main

raise SystemExit(main())
