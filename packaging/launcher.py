"""Entry point of the frozen build: the same as the `parley` command."""

import multiprocessing
import sys

from desktop_app.cli import main

if __name__ == "__main__":
    # A child process the app starts (LoRA training) runs its task, not a second app.
    multiprocessing.freeze_support()
    sys.exit(main())
