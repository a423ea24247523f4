"""Entry point of the frozen build: the same as the `parley` command."""

import sys

from desktop_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
