"""Render “Find adapters on the hub…” over the window, to docs/screenshot-lora-hub.png.

Serves the LoRA tests' adapter repositories from the loopback hub mirror (tests/hub_mirror.py),
points the hub.endpoint setting at it, searches for adapters for the built-in model, and takes
the picture once the download of the first one is under way. Everything lives in a temporary
data folder.

    .venv/bin/python scripts/screenshot_lora_hub.py     (offscreen unless DISPLAY is set)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins" / "lora" / "tests"))


def main() -> None:
    if not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    out = ROOT / "docs" / "screenshot-lora-hub.png"
    with tempfile.TemporaryDirectory() as home:
        os.environ["PARLEY_HOME"] = str(Path(home) / "parley")
        from lora_hub_repos import served_adapters  # the tests' adapter repositories
        from screenshot_models import mirror_port

        from tests.memory_keyring import memory_keyring

        # The user's own keyring is left alone; the address shown is a mirror's on this computer.
        with memory_keyring(), served_adapters(Path(home) / "files", port=mirror_port()) as (mirror, url):
            shoot(mirror, url.replace("127.0.0.1", "localhost"), out)
    print(f"wrote {out}")


def shoot(mirror, url: str, out: Path) -> None:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop_app.context import build_context
    from desktop_app.ui.app import create_window
    from desktop_app_lora.ui import LoraPanel

    context = build_context()
    context.settings.set("hub.endpoint", url)
    window = create_window(context)
    window.resize(1280, 800)
    window.show()

    def wait_for(signal, timeout_ms: int = 120_000) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(timeout_ms, loop.quit)
        loop.exec()

    if not (context.engine.loaded and not window.model_loading):
        wait_for(window.model_ready)
    panel = window.findChild(LoraPanel)
    dialog = panel.open_hub_dialog()
    dialog.resize(780, 560)
    dialog.search()
    wait_for(dialog.job.searched)
    # Slow the mirror down so the picture catches the download under way.
    mirror.faults.chunk_size, mirror.faults.chunk_delay = 16 * 1024, 0.05
    dialog.download()
    deadline = time.monotonic() + 60
    while dialog.progress.value() < 400 and dialog.job.running and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()
    dialog.grab().save(str(out))
    dialog.job.cancel()
    dialog.job.wait(60)
    window.close()
    context.close()


if __name__ == "__main__":
    main()
