"""``python -m npcserver``: the same as the ``npcserver`` command."""

import sys

from npcserver.cli import main

sys.exit(main())
