"""`python -m topologies.cli`: the same entry point as the `flatarch` console script."""

import sys

from topologies.cli import main

sys.exit(main())
