"""``python -m glancing``: see :mod:`glancing.cli`."""

from glancing.cli import main

raise SystemExit(main())
