"""``python -m xfct_bluesky.ioc``."""

import sys

from .cli import main

sys.exit(main())
