"""``python -m pgwarden``."""

import sys

from pgwarden.cli import main

sys.exit(main())
