"""``python -m rotator``: the ``rotator`` command, also where it is not installed (``make demo`` runs
the checkout's sources this way, before the project itself is installed)."""

import sys

from rotator.cli import main

sys.exit(main())
