"""``python -m server --scenario FILE`` — the reference chat server (see server/README)."""

import sys

from server.cli import main

sys.exit(main())
