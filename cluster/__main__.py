"""`python -m cluster`: the same as the `kvcluster` console script."""

import sys

from cluster.cli import main

sys.exit(main())
