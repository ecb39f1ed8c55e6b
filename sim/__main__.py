"""``python -m sim --scenario FILE --out DIR`` — the SimPy model."""

import sys

from sim.cli import main

sys.exit(main())
