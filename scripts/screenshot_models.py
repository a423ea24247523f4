"""From the empty app to chatting with a downloaded model, in three screenshots:

- docs/screenshot-get-models.png: File → Get models…, a search, a repository's quantisations with
  their fit on this computer, the card's summary and licence;
- docs/screenshot-downloading.png: a download on its way (progress, speed, time left, Pause/Cancel);
- docs/screenshot-chat-downloaded.png: the downloaded model loaded, answering in the chat.

The hub is the tests' loopback mirror (tests/hub_mirror.py) serving the real SmolLM2 file, at
http://localhost:8080 when that port is free, as a user's own mirror would be. Data lives in a
temporary home. Runs offscreen unless a display is set.

Run: ``.venv/bin/python scripts/screenshot_models.py``
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def mirror_port() -> int | None:
    """8080 when it is free (the address a mirror of ones own would have), else None: any free port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will (TIME_WAIT is fine)
        try:
            sock.bind(("127.0.0.1", 8080))
        except OSError:
            return None
    return 8080


def main() -> None:
    if not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("PARLEY_LOAD_PLUGINS", "")
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory() as home:
        os.environ["HOME"] = home
        os.environ["PARLEY_HOME"] = str(Path(home) / ".parley")
        from PySide6.QtWidgets import QApplication

        from desktop_app.context import build_context
        from desktop_app.ui.app import create_window
        from desktop_app.ui.dialogs.models_window import ModelsWindow
        from PySide6.QtCore import Qt

        from tests.hub_catalogue_repos import SMOL, catalogue_mirror
        from tests.memory_keyring import memory_keyring  # the user's own keyring is left alone

        app = QApplication.instance() or QApplication([])

        def dialog_status() -> str:
            found = [w for w in app.topLevelWidgets() if isinstance(w, ModelsWindow)]
            return found[0].status.text() if found else ""

        def wait(condition, seconds: float = 60.0) -> None:
            deadline = time.monotonic() + seconds
            while not condition():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the window did not get there in time: {dialog_status()}")
                app.processEvents()
                time.sleep(0.02)

        def settle(seconds: float = 0.5) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                app.processEvents()
                time.sleep(0.02)

        mirror = catalogue_mirror()
        # A download that takes a while, so its progress can be seen: about 6 MB/s.
        mirror.faults.chunk_delay = 0.01
        with memory_keyring(), mirror.serve(port=mirror_port()) as url:
            context = build_context()
            context.settings.set("hub.endpoint", url.replace("127.0.0.1", "localhost"))
            context.settings.set("ui.theme", "light")
            window = create_window(context)
            window.resize(1100, 720)
            window.show()
            wait(lambda: context.engine.loaded and not window.model_loading)

            window.open_models_window()
            dialog = window.findChild(ModelsWindow, "modelsWindow")
            dialog.resize(1000, 680)
            dialog.query.setText("SmolLM2")
            dialog.search()
            wait(lambda: dialog.results.count() > 0)
            wait(lambda: dialog.quants.rowCount() > 0)
            for index in range(dialog.results.count()):
                if dialog.results.item(index).data(Qt.UserRole) == SMOL:
                    dialog.results.setCurrentRow(index)
            wait(lambda: dialog.quants.rowCount() == 3)
            dialog.quants.selectRow(1)
            settle()
            dialog.grab().save(str(docs / "screenshot-get-models.png"))

            dialog.quants.cellWidget(1, 3).click()  # Q4_1
            wait(lambda: any(r.download.state.value == "downloading" and r.download.done_bytes > 20e6
                             and r.download.eta for r in dialog.downloads.rows.values()))
            settle(0.3)
            dialog.grab().save(str(docs / "screenshot-downloading.png"))

            row = next(iter(dialog.downloads.rows.values()))
            wait(lambda: row.download.state.value == "done", 120)
            row.use_button.click()
            wait(lambda: not window.model_loading and context.engine.loaded
                 and context.settings.get("model.path") == row.download.entry_name)
            dialog.close()
            window.composer.edit.setPlainText("In one sentence: what is a GGUF file?")
            window.composer.send_button.click()
            wait(lambda: window.generating_conversation is not None, 10)
            wait(lambda: window.generating_conversation is None, 120)
            settle()
            window.grab().save(str(docs / "screenshot-chat-downloaded.png"))
            window.close()
            context.close()
    for name in ("get-models", "downloading", "chat-downloaded"):
        print(f"wrote docs/screenshot-{name}.png")


if __name__ == "__main__":
    main()
