"""Start the desktop app: build the context, show the window, then load the model in the background.

The window appears before any heavy library is imported: llama.cpp is imported by the
engine thread when it loads the model, while the window is already on screen.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

__all__ = ["run", "create_window"]

#: Set by the start-up benchmark: the wall-clock time the process was launched.
LAUNCHED_AT_ENV = "PARLEY_LAUNCHED_AT"


def create_window(context: Any, *, load_model: bool = True):
    """Create the QApplication if needed and the main window for ``context`` (not shown)."""
    from PySide6.QtWidgets import QApplication

    from desktop_app.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Parley")
    app.setApplicationDisplayName("Parley")
    app.setDesktopFileName("parley")
    _set_icon(app)
    return MainWindow(context, load_model=load_model)


def _set_icon(app) -> None:
    from pathlib import Path

    from PySide6.QtGui import QIcon

    icon = Path(__file__).resolve().parent.parent / "resources" / "parley.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))


def run(context: Any) -> int:
    """Show the window and run the event loop until it closes; returns the exit code."""
    from desktop_app.ui.startup_checks import window_problem

    # Qt aborts the process when its platform plugin cannot start: look first, and explain.
    problem = window_problem()
    if problem:
        print(f"parley: {problem}", file=sys.stderr)
        return 1
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from desktop_app.ui.single_instance import WindowHandOver

    window = create_window(context)
    window.show()
    # A second `parley` on this data folder asks this window to come forward instead.
    window.hand_over = WindowHandOver(window, context.paths.data_dir)
    launched = os.environ.get(LAUNCHED_AT_ENV)
    if launched:
        heavy = [m for m in ("llama_cpp", "torch", "chromadb", "transformers") if m in sys.modules]

        def report() -> None:
            print(f"window shown after {time.time() - float(launched):.3f} s; heavy modules loaded: {heavy}",
                  flush=True)
            if os.environ.get("PARLEY_EXIT_AFTER_SHOW"):
                window.close()

        QTimer.singleShot(0, report)
    return QApplication.instance().exec()
