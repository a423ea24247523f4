"""Render the window answering with sources from a model on a remote engine, to
docs/screenshot-remote.png.

Starts llama.cpp's llama-server (``make native`` builds it) with the built-in model on
127.0.0.1, adds it as the engine "gpu-box" as Settings → Engines… does, picks its model in the
model picker, indexes a handbook and asks about it. Everything lives in a temporary data folder.

    .venv/bin/python scripts/screenshot_remote.py     (offscreen unless DISPLAY is set)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins" / "remote" / "tests"))


def main() -> None:
    if not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    out = ROOT / "docs" / "screenshot-remote.png"
    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = str(Path(home) / "parley")
        from remote_servers import LlamaServer  # the tests' server starter

        if NEUTRAL_HOME.exists():
            sys.exit(f"{NEUTRAL_HOME} exists; this script copies a handbook there and removes it after.")
        server = LlamaServer(Path(home) / "llama-server.log", []).start()
        try:
            shoot(server, Path(home), out)
        finally:
            server.stop()
            shutil.rmtree(NEUTRAL_HOME, ignore_errors=True)


#: Where the handbook is copied for the picture; the script refuses to touch it if it exists.
NEUTRAL_HOME = Path("/home/alex")


def shoot(server, home: Path, out: Path) -> None:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication, QDockWidget

    from desktop_app.context import build_context
    from desktop_app.ui.app import create_window
    from desktop_app_local_docs.ui import DocumentsPanel
    from desktop_app_remote import state

    context = build_context()
    context.settings.set("generation.temperature", 0.0)
    context.settings.set("generation.max_tokens", 120)
    state.store.add("gpu-box", server.url)
    state.current_backend().check("gpu-box")
    window = create_window(context, load_model=False)
    window.resize(1280, 800)
    window.show()

    def wait_for(signal) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(120_000, loop.quit)
        loop.exec()

    window.model_controller.fill_picker()
    window.model_controller.choose("remote:gpu-box/smollm2")
    wait_for(window.model_ready)
    # The sources show their files' paths: a neutral one, as on a user's machine (removed after).
    handbook = NEUTRAL_HOME / "Documents" / "Handbook"
    shutil.copytree(ROOT / "tests" / "data" / "docs", handbook)
    dock = [d for d in window.findChildren(QDockWidget) if d.windowTitle() == "Documents"][0]
    dock.show()
    panel = window.findChild(DocumentsPanel)
    panel.add_folder("Harbourline handbook", str(handbook))
    wait_for(panel.bridge.finished)
    window.send("Who is the lead engineer of Project Orca?")
    wait_for(window.answer_finished)
    for _ in range(10):
        QApplication.processEvents()
    window.chat_view.verticalScrollBar().setValue(0)
    QApplication.processEvents()
    out.parent.mkdir(exist_ok=True)
    window.grab().save(str(out))
    print(f"wrote {out.relative_to(ROOT)}")
    window.close()
    context.close()


if __name__ == "__main__":
    main()
