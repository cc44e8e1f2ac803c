"""``python -m plugbridge``: the same as the ``plugbridge`` command."""

from ._cli import main

raise SystemExit(main())
