"""``python -m sncn``: the ``sncn`` command (:mod:`sncn.cli`)."""

import sys

from sncn.cli import main

sys.exit(main())
