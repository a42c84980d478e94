"""``python -m fksteer``: the command line (see fksteer.cli)."""

import sys

from fksteer.cli import main

sys.exit(main())
