"""`python -m provisioner ...` runs the CLI."""

import sys

from provisioner.cli import main

sys.exit(main())
