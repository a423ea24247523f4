"""Render the strategy lab after a real run on the built-in model, to docs/screenshot-lab.png
(the scorecard), docs/screenshot-lab-chart.png (accuracy against time) and
docs/screenshot-lab-report.png (the top of the HTML report, drawn by Qt's own HTML renderer,
which shows its tables and charts but not all of its styling).

The run is started from the window's Run button, in a temporary data folder. Needs an X
display, because the picture is the whole screen:

    Xvfb :58 -screen 0 1280x800x24 &
    DISPLAY=:58 env -u QT_QPA_PLATFORM .venv/bin/python scripts/screenshot_lab.py [--set classification]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="classification", help="the shipped task set to run")
    parser.add_argument("--candidates", default="zero, few:4, chain",
                        help="the candidates, typed into the window (default: zero, few:4, chain)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs",
                        help="the folder the pictures go to (default: docs/)")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        sys.exit("screenshot_lab.py needs an X display (see its docstring).")
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    docs = args.output
    docs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = home
        from PySide6.QtCore import QEventLoop, QTimer
        from PySide6.QtWidgets import QApplication, QTextBrowser

        from desktop_app.context import build_context
        from desktop_app.ui.app import create_window

        context = build_context()
        window = create_window(context, load_model=False)
        window.resize(1280, 800)
        window.move(0, 0)
        window.show()

        def wait(condition, timeout_ms: int = 1_800_000) -> None:
            loop = QEventLoop()
            timer = QTimer()
            timer.timeout.connect(lambda: condition() and loop.quit())
            timer.start(200)
            QTimer.singleShot(timeout_ms, loop.quit)
            loop.exec()

        def shoot(name: str) -> None:
            for _ in range(30):
                QApplication.processEvents()
            QApplication.primaryScreen().grabWindow(0).save(str(docs / name))
            print(f"wrote {docs / name}")

        window.load_model(None)
        wait(lambda: context.engine.loaded and not window.model_loading)
        action = next(a for a in window.plugins_menu.actions() if a.text() == "Strategy lab…")
        action.trigger()
        from desktop_app_lab import state

        lab = state.window
        lab.resize(1180, 720)
        lab.move(50, 40)
        lab.sets.setCurrentIndex(lab.sets.findData(str(state.library.find(args.set))))
        lab.candidates.clear()
        lab.candidate_spec.setText(args.candidates)
        lab.add_candidate()
        lab.run_button.click()
        wait(lambda: lab.job is None)
        lab.status.setText(lab.run.message)
        print(f"{lab.sets.currentText()}: {lab.run.message}")
        for row in range(lab.scorecard.rowCount()):  # the scorecard as the window shows it
            print("  " + " | ".join(lab.scorecard.item(row, c).text() for c in range(lab.scorecard.columnCount())))
        lab.scorecard.selectRow(-1)
        shoot("screenshot-lab.png")
        lab.tabs.setCurrentWidget(lab.chart)
        shoot("screenshot-lab-chart.png")

        report = Path(home) / "report.html"
        lab.export_report(str(report))
        view = QTextBrowser()
        view.setHtml(report.read_text(encoding="utf-8"))
        view.resize(1000, 760)
        view.move(140, 20)
        view.setWindowTitle("report.html")
        view.show()
        shoot("screenshot-lab-report.png")
        view.close()
        lab.close()
        window.close()
        context.close()


if __name__ == "__main__":
    main()
