"""``python -m desktop_app`` does what the ``parley`` command does."""

import sys

from desktop_app.cli import main

sys.exit(main())
