"""`python -m roast`."""
from __future__ import annotations

import sys

from roast.cli import main

sys.exit(main())
