"""``python -m pubsub`` is ``trio-pubsub``."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
